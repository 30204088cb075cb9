"""MQTT ingestion of readings, health and status into the database (``roadsign-fleet ingest``)."""
