"""The device's TUF client: python-tuf's ngclient over plain HTTP(S), and resumable downloads.

Every metadata file is verified by ``tuf.ngclient.Updater`` from the trusted root the device was
enrolled with; a model target is downloaded into ``<state>/downloads/<sha256>.part`` with
``Range: bytes=N-`` so an interrupted download continues, never past the signed length, and is
checked against the signed length and hashes before anything uses it. python-tuf's errors are
turned into our OTA errors here, each naming the attack or cause.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edge_agent.exceptions import (
    OtaDownloadError,
    OtaError,
    OtaRefreshError,
    OtaVerificationError,
)
from edge_agent.ota.state import Assignment, AssignmentError, ModelTarget, assignment, model_target

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
ASSIGNMENTS = "assignments"


def _refresh_error(e: Exception, doing: str) -> OtaError:
    """Our error for a python-tuf failure, naming what it means for the device."""
    if isinstance(e, tuf_errors.ExpiredMetadataError):
        why = (
            "signed metadata has expired (a freeze attack, or a repository that stopped re-signing)"
        )
    elif isinstance(e, tuf_errors.BadVersionNumberError):
        why = "rollback attack: the repository served metadata older than the version trusted"
    elif isinstance(e, tuf_errors.UnsignedMetadataError):
        why = "metadata not signed by the keys the trusted root delegates to"
    elif isinstance(e, tuf_errors.LengthOrHashMismatchError):
        why = "metadata does not match the length or hash its parent signed (tampered metadata)"
    elif isinstance(e, tuf_errors.DownloadLengthMismatchError):
        why = "endless-data attack: the repository sent more bytes than the metadata limit"
    elif isinstance(e, tuf_errors.DownloadHTTPError):
        why = f"the repository answered HTTP {e.status_code}"
    elif isinstance(e, tuf_errors.DownloadError):
        why = "the repository cannot be reached"
    elif isinstance(e, tuf_errors.RepositoryError):
        why = "the repository's metadata is refused"
    elif isinstance(e, OSError):
        why = "the metadata cache cannot be written"
    else:
        why = "unexpected failure"
    return OtaRefreshError(f"{doing}: {why}: {e}")


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` value that proves a device with its broker user and password."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class HttpFetcher(FetcherInterface):
    """ngclient's fetcher on http.client: one connection per request, TLS with our CA file, and
    the device's credentials (an ``Authorization`` value) on every request when it has them."""

    def __init__(
        self, *, timeout_s: float, ca_file: Path | None = None, authorization: str | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self._ca_file = ca_file
        self._authorization = authorization
        self._context: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        # Built on the first https request: loading the system's CA store costs ~50 ms of CPU,
        # which a plain-http repository (a lab, the benchmarks) should not pay per client.
        if self._context is None:
            ca_file = self._ca_file
            try:
                self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except OSError as e:  # ssl.SSLError is one too
                raise tuf_errors.DownloadError(f"cannot load the TLS CA file {ca_file}: {e}") from e
        return self._context

    def open(self, url: str, *, start: int = 0) -> http.client.HTTPResponse:
        """Send a GET (from byte `start`); the response, unread. HTTP errors raise."""
        parts = urlsplit(url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.netloc, timeout=self.timeout_s, context=self._tls()
            )
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(parts.netloc, timeout=self.timeout_s)
        else:
            raise tuf_errors.DownloadError(f"not an http(s) URL: {url}")
        # One request per connection: a closed response then leaves no socket behind.
        headers = {"User-Agent": "roadsign-agent", "Connection": "close"}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        if start:
            headers["Range"] = f"bytes={start}-"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise tuf_errors.DownloadError(f"GET {url}: {e}") from e
        if response.status >= 400:
            response.close()
            connection.close()
            raise tuf_errors.DownloadHTTPError(
                f"GET {url}: HTTP {response.status}", response.status
            )
        return response

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self.open(url)
        return self._chunks(url, response)

    @staticmethod
    def _chunks(url: str, response: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while chunk := response.read1(_CHUNK):
                yield chunk
        except (OSError, http.client.HTTPException) as e:
            raise tuf_errors.DownloadError(f"GET {url} broke off: {e}") from e
        finally:
            response.close()


def consistent_path(info: TargetFile) -> str:
    """The consistent-snapshot path of a target: ``dir/{sha256}.{basename}``."""
    directory, sep, basename = info.path.rpartition("/")
    return f"{directory}{sep}{info.hashes['sha256']}.{basename}"


class OtaClient:
    """Signed metadata and model downloads of one device; one Updater at a time per state dir.

    python-tuf's Updater refreshes once in its life, so every `refresh()` builds a new one on
    the same metadata folder: what it trusted last time (the newest root, timestamp and
    snapshot versions) is the floor the next refresh is checked against.
    """

    def __init__(
        self,
        *,
        repository_url: str,
        trusted_root: bytes,
        state_dir: Path,
        timeout_s: float = 30,
        ca_file: Path | None = None,
        authorization: str | None = None,
    ) -> None:
        base = repository_url.rstrip("/")
        self.metadata_url = f"{base}/tuf/metadata/"
        self.targets_url = f"{base}/tuf/targets/"
        self.metadata_dir = state_dir / "metadata"
        self.downloads_dir = state_dir / "downloads"
        self._trusted_root = trusted_root
        self._fetcher = HttpFetcher(
            timeout_s=timeout_s, ca_file=ca_file, authorization=authorization
        )
        self._updater: Updater | None = None

    @classmethod
    def from_root_file(
        cls,
        root_file: Path,
        *,
        repository_url: str,
        state_dir: Path,
        timeout_s: float = 30,
        ca_file: Path | None = None,
        authorization: str | None = None,
    ) -> OtaClient:
        """A client trusting the root metadata in `root_file` (written at enrolment)."""
        try:
            root = root_file.read_bytes()
        except OSError as e:
            raise OtaRefreshError(f"cannot read ota.trusted_root_file {root_file}: {e}") from e
        return cls(
            repository_url=repository_url,
            trusted_root=root,
            state_dir=state_dir,
            timeout_s=timeout_s,
            ca_file=ca_file,
            authorization=authorization,
        )

    def refresh(self) -> None:
        """Fetch and verify root, timestamp, snapshot and targets; OtaRefreshError says why not."""
        self._updater = None
        try:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_url,
                target_base_url=self.targets_url,
                fetcher=self._fetcher,
                config=UpdaterConfig(prefix_targets_with_hash=True),
                bootstrap=self._trusted_root,
            )
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError, ValueError) as e:
            raise _refresh_error(e, "TUF refresh failed") from e
        self._updater = updater

    def _targetinfo(self, path: str) -> TargetFile | None:
        if self._updater is None:
            raise OtaRefreshError("no refreshed metadata: call refresh() first")
        try:
            return self._updater.get_targetinfo(path)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError) as e:
            raise _refresh_error(e, f"looking up {path}") from e

    def assignment(self, device_id: str) -> Assignment | None:
        """The director's signed assignment for `device_id`, or None when it signs none."""
        path = f"{ASSIGNMENTS}/{device_id}"
        info = self._targetinfo(path)
        if info is None:
            return None
        try:
            return assignment(path, info.length, info.hashes, info.custom)
        except AssignmentError as e:
            raise OtaRefreshError(f"signed assignment refused: {e}") from e

    def model_info(self, path: str) -> tuple[ModelTarget, TargetFile] | None:
        """The model target at `path` as the offline-signed targets role describes it."""
        info = self._targetinfo(path)
        if info is None:
            return None
        try:
            return model_target(path, info.length, info.hashes, info.custom), info
        except AssignmentError as e:
            raise OtaRefreshError(f"signed model target refused: {e}") from e

    def download(self, info: TargetFile) -> Path:
        """The verified target on disk: resumed from a partial file, bounded by its length."""
        sha256 = info.hashes.get("sha256")
        if not sha256:
            raise OtaVerificationError(f"target {info.path} has no sha256 hash to check")
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        part = self.downloads_dir / f"{sha256}.part"
        done = self.downloads_dir / f"{sha256}.tar"
        if done.exists():
            try:
                with done.open("rb") as f:
                    info.verify_length_and_hashes(f)
                return done
            except tuf_errors.LengthOrHashMismatchError:
                done.unlink()  # changed on disk since: download again
        have = part.stat().st_size if part.exists() else 0
        if have > info.length:
            part.unlink()
            have = 0
        if have < info.length:
            have = self._fetch_into(info, part, have)
        if have > info.length:  # pragma: no cover - _fetch_into refuses first
            raise OtaDownloadError(f"{info.path}: more bytes than signed")
        try:
            with part.open("rb") as f:
                info.verify_length_and_hashes(f)
        except tuf_errors.LengthOrHashMismatchError as e:
            part.unlink()
            raise OtaVerificationError(
                f"tampered artifact: {info.path} does not match its signed length and sha256 "
                f"({e}); discarded"
            ) from e
        os.replace(part, done)
        return done

    def _fetch_into(self, info: TargetFile, part: Path, have: int) -> int:
        url = self.targets_url + consistent_path(info)
        try:
            response = self._fetcher.open(url, start=have)
        except tuf_errors.DownloadError as e:
            raise OtaDownloadError(f"download of {info.path} failed: {e}") from e
        try:
            if have and response.status != http.client.PARTIAL_CONTENT:
                log.info("%s: the server ignored Range; downloading from the start", info.path)
                have = 0
            elif have and not (response.getheader("Content-Range") or "").startswith(
                f"bytes {have}-"
            ):
                raise OtaDownloadError(
                    f"download of {info.path}: Content-Range does not start at byte {have}"
                )
            with part.open("ab" if have else "wb") as f:
                # One byte beyond the signed length is enough to know the server sends too much.
                while chunk := response.read1(min(_CHUNK, info.length - have + 1)):
                    have += len(chunk)
                    if have > info.length:
                        f.close()
                        part.unlink()
                        raise OtaDownloadError(
                            f"endless-data attack: the server sent more than the {info.length} "
                            f"signed bytes of {info.path}; download discarded"
                        )
                    f.write(chunk)
                    f.flush()
        except (OSError, http.client.HTTPException) as e:
            raise OtaDownloadError(
                f"download of {info.path} broke off at byte {have} of {info.length}: {e}; "
                "the next attempt resumes there"
            ) from e
        finally:
            response.close()
        if have < info.length:
            raise OtaDownloadError(
                f"download of {info.path} ended at byte {have} of {info.length}; the next "
                "attempt resumes there"
            )
        return have
