"""One module per resource: devices, readings, health, login."""
