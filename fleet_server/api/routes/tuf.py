"""The TUF repository over HTTP: metadata and targets, as python-tuf's ngclient fetches them.

The signatures are the security of what is served; who may read it is `tuf.device_auth`: by
default an enrolled device with its broker user and password, and each device only its own
director bin (the bins name the devices they assign to), or an API token. Names are checked
against the shapes the repository serves before any query, so a traversal or a stray name is a
404 that never reaches the database. Targets stream from the database in slices and honour
``Range: bytes=N-`` (206), so an interrupted download resumes and 200 concurrent downloads of a
bundle do not hold 200 copies of it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server import crud
from fleet_server.api.deps import SessionDep, TufReader, TufReaderDep
from fleet_server.exceptions import RepositoryError
from fleet_server.repository.builder import BIN_PREFIX, DIRECTOR, assignment_path
from fleet_server.repository.storage import director_bins
from fleet_server.repository.tuf_api import SuccinctRoles

# Out of the OpenAPI document: these are TUF's own protocol (python-tuf's ngclient speaks it),
# read by devices, not operations of the token-guarded API the document describes.
router = APIRouter(prefix="/tuf", tags=["tuf"], include_in_schema=False)

METADATA_NAME = re.compile(
    r"^(?:(?P<version>[1-9][0-9]{0,8})\.)?"
    r"(?P<role>root|targets|snapshot|timestamp|director|director-bin-[0-9a-f]{1,8})\.json$"
)
"""``{N}.{role}.json``, or ``timestamp.json`` / ``root.json`` (the newest): nine digits at most,
so a version always fits the column."""
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HASHED_BASENAME = re.compile(r"^(?P<sha256>[0-9a-f]{64})\.(?P<name>.+)$")
MAX_TARGET_PATH = 320
MAX_SEGMENTS = 8
CHUNK_BYTES = 256 * 1024
"""Bytes read from the database per slice of a streamed target."""
IMMUTABLE = "public, max-age=31536000, immutable"
RANGE = re.compile(r"^bytes=(?P<start>[0-9]{1,15})-(?P<end>[0-9]{0,15})$")
UNVERSIONED_ROLES = {"timestamp", "root"}
CACHED_METADATA_BYTES = 32 * 2**20


class VersionedMetadataCache:
    """Versioned metadata of this process's repository, kept after the first read.

    ``{N}.{role}.json`` never changes once stored (role and version are unique), so a fleet
    refreshing after a rollout reads each snapshot, targets and bin version from the database
    once, not once per device. Bounded by bytes, least recently used out first. timestamp.json
    and root.json (the newest) are never cached: they change in place.
    """

    def __init__(self, max_bytes: int = CACHED_METADATA_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # sync routes run on a thread pool

    def get(self, role: str, version: int) -> bytes | None:
        """The stored bytes of `role` `version`, if read before."""
        with self._lock:
            content = self._entries.get((role, version))
            if content is not None:
                self._entries.move_to_end((role, version))
            return content

    def put(self, role: str, version: int, content: bytes) -> None:
        """Keep `content`, dropping the least recently used entries beyond the bound."""
        if len(content) > self.max_bytes:
            return
        with self._lock:
            if (role, version) in self._entries:
                return
            self._entries[(role, version)] = content
            self._bytes += len(content)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


def _metadata_cache(request: Request) -> VersionedMetadataCache:
    cache: VersionedMetadataCache | None = getattr(request.app.state, "tuf_metadata", None)
    if cache is None:
        # Created on first use: two racing requests at worst build two, one of which is kept.
        cache = request.app.state.tuf_metadata = VersionedMetadataCache()
    return cache


def _bins(request: Request, session: Session) -> SuccinctRoles:
    bins: SuccinctRoles | None = getattr(request.app.state, "tuf_bins", None)
    if bins is None:
        row = crud.latest_role_metadata(session, role=DIRECTOR)
        if row is None:
            raise _not_found("director metadata")
        try:
            bins = request.app.state.tuf_bins = director_bins(row.content)
        except RepositoryError as e:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(e)) from e
    return bins


def _refuse_other_bins(request: Request, session: Session, reader: TufReader, role: str) -> None:
    """403 when a device asks for a director bin other than the one holding its assignment."""
    if reader.device_id is None or not role.startswith(f"{BIN_PREFIX}-"):
        return
    if _bins(request, session).get_role_for_target(assignment_path(reader.device_id)) != role:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "a device reads only the director bin of its own assignment"
        )


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what}")


@router.get(
    "/metadata/{name}",
    summary="TUF metadata",
    responses={
        401: {"description": "No device credentials or API token"},
        403: {"description": "Another device's director bin"},
        404: {"description": "No such role or version"},
    },
)
def metadata(name: str, request: Request, session: SessionDep, reader: TufReaderDep) -> Response:
    """``{N}.{role}.json`` (consistent snapshots), or the newest timestamp.json / root.json."""
    found = METADATA_NAME.match(name)
    if found is None:
        raise _not_found("such metadata file")
    role, version = found["role"], found["version"]
    _refuse_other_bins(request, session, reader, role)
    if version is None:
        if role not in UNVERSIONED_ROLES:
            raise _not_found(f"unversioned {role}: ask for {{version}}.{role}.json")
        row = crud.latest_role_metadata(session, role=role)
        if row is None:
            raise _not_found(f"{name}")
        # timestamp.json and root.json change in place: caches must ask again every time.
        return Response(
            row.content, media_type="application/json", headers={"Cache-Control": "no-cache"}
        )
    if role == "timestamp":
        raise _not_found("versioned timestamp: ask for timestamp.json")
    # A version, once stored, never changes (unique role and version).
    cache = _metadata_cache(request)
    content = cache.get(role, int(version))
    if content is None:
        row = crud.role_metadata(session, role=role, version=int(version))
        if row is None:
            raise _not_found(f"{name}")  # not cached: it may be stored later
        content = row.content
        cache.put(role, int(version), content)
    return Response(content, media_type="application/json", headers={"Cache-Control": IMMUTABLE})


def _target_path(path: str) -> tuple[str, str]:
    """(stored path, sha256) of a consistent-snapshot request path; 404 for anything else."""
    if len(path) > MAX_TARGET_PATH:
        raise _not_found("such target")
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS or not all(SEGMENT.match(part) for part in segments):
        raise _not_found("such target")  # also refuses "", ".", ".." and any traversal
    hashed = HASHED_BASENAME.match(segments[-1])
    if hashed is None or not SEGMENT.match(hashed["name"]):
        raise _not_found("such target: targets are served as dir/{sha256}.{name}")
    return "/".join([*segments[:-1], hashed["name"]]), hashed["sha256"]


def _byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The (first, last) byte asked for, inclusive; None for the whole target; 416 if bad."""
    if header is None:
        return None
    asked = RANGE.match(header.strip())
    if asked is None:
        raise _unsatisfiable(length, "only one range, bytes=N- or bytes=N-M, is served")
    first = int(asked["start"])
    last = int(asked["end"]) if asked["end"] else length - 1
    if first >= length or last < first:
        raise _unsatisfiable(length, f"the target has {length} bytes")
    return first, min(last, length - 1)


def _unsatisfiable(length: int, why: str) -> HTTPException:
    return HTTPException(
        status.HTTP_416_RANGE_NOT_SATISFIABLE,
        why,
        headers={"Content-Range": f"bytes */{length}"},
    )


def _slices(engine: Engine, target_id: int, first: int, last: int) -> Iterator[bytes]:
    """The target's bytes first..last, one short query per slice.

    Each slice takes a pooled connection only while it is read: a slow client holding one for
    its whole download would let a few hundred downloads exhaust the pool.
    """
    offset = first
    while offset <= last:
        size = min(CHUNK_BYTES, last + 1 - offset)
        with Session(engine) as session:
            data = crud.target_slice(session, target_id=target_id, offset=offset, size=size)
        if not data:
            return
        yield data
        offset += len(data)


@router.get(
    "/targets/{path:path}",
    summary="TUF target file",
    responses={
        206: {"description": "The range asked for"},
        401: {"description": "No device credentials or API token"},
        404: {"description": "No such target"},
        416: {"description": "A range outside the target"},
    },
)
def target(
    path: str, request: Request, session: SessionDep, reader: TufReaderDep
) -> StreamingResponse:
    """A target at its consistent-snapshot path ``dir/{sha256}.{name}``, whole or from a byte."""
    del reader  # its check is the point: any reader may fetch any model
    stored_path, sha256 = _target_path(path)
    head = crud.target_head(session, path=stored_path)
    if head is None or head[1] != sha256:
        raise _not_found("such target")
    target_id, _, length = head
    asked = _byte_range(request.headers.get("range"), length)
    first, last = asked if asked is not None else (0, length - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(last + 1 - first),
        "Cache-Control": IMMUTABLE,  # the path carries the hash of the bytes
    }
    code = status.HTTP_200_OK
    if asked is not None:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {first}-{last}/{length}"
    engine: Engine = request.app.state.engine
    return StreamingResponse(
        _slices(engine, target_id, first, last),
        status_code=code,
        media_type="application/octet-stream",
        headers=headers,
    )
