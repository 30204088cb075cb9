"""Staged model rollouts: gates (pure verdicts), the engine (pure state machine); the driver
that reads observations and carries out actions builds on them."""
