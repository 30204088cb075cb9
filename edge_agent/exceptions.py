"""The exception tree of the edge agent: one base, one subclass per way a part can fail."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ModelError(AgentError):
    """A model bundle is missing, malformed, fails its checksum, or a runtime cannot load it."""


class InferenceError(AgentError):
    """A loaded model failed while running on an input."""
