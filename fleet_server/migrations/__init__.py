"""Alembic migrations of the fleet database (``roadsign-fleet migrate``)."""
