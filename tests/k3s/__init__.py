"""Tests of the deployment files in k3s/."""
