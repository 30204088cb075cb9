"""Tests of the container images' Dockerfiles in docker/."""
