"""Signed over-the-air model updates: TUF client, A/B slots, smoke test, probation, updater."""
