"""Tests of the OTA package."""
