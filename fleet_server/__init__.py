"""The RoadSign fleet server: ingestion, device registry, model repository, rollouts and dashboard.

Commands import their stacks (FastAPI, SQLModel, paho) when they run; this package's import is
cheap.
"""
