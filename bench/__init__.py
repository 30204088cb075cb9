"""Benchmarks: each script measures against a baseline run side by side and writes bench/results."""
