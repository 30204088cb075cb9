"""The error frame sources raise."""

from __future__ import annotations

from edge_agent.exceptions import AgentError


class SourceError(AgentError):
    """A frame source cannot be opened."""
