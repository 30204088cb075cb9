"""The fleet server's HTTP API and dashboard (FastAPI), built by `create_app` from the settings."""
