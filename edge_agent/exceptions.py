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


class OtaError(AgentError):
    """An over-the-air update step failed; the model the device runs stays as it was."""


class OtaRefreshError(OtaError):
    """The signed TUF metadata could not be fetched or was refused (unreachable, expired,
    rolled back, badly signed, or inconsistent)."""


class OtaDownloadError(OtaError):
    """A model target could not be downloaded whole: interrupted, refused by HTTP, or the server
    sent more bytes than the signed length (an endless-data attack)."""


class OtaVerificationError(OtaError):
    """Downloaded bytes do not match the signed length and hashes: a tampered artifact."""


class OtaSlotError(OtaError):
    """A model slot or its record is unusable: an unsafe tar, a bundle that fails its checksums,
    or a record that cannot be written or read."""


class InstallError(AgentError):
    """An enrolment bundle or base profile cannot become a device's installed files: a field
    missing or malformed (named), or a profile the bundle would make invalid."""
