"""The exception tree of the edge agent: one base, one subclass per way a part can fail."""

from __future__ import annotations

from http import HTTPStatus


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ModelError(AgentError):
    """A model bundle is missing, malformed, fails its checksum, or a runtime cannot load it."""


class InferenceError(AgentError):
    """A loaded model failed while running on an input."""


class ImageHeaderError(AgentError):
    """Bytes that do not begin with a complete, sane header of an image format the agent reads."""


class ApiError(AgentError):
    """A local-API request refused; `status` is the HTTP status that says why, `detail` how."""

    def __init__(
        self, status: HTTPStatus, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.headers = headers or {}
