"""Tests of the TUF repository package (fleet_server.repository)."""
