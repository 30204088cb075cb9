"""A streaming ``multipart/form-data`` reader: one part in memory at a time, each one bounded.

The local API's ``/predict/batch`` hands each part to the decoder as soon as its closing
boundary arrives, so a batch costs one file's bytes (plus one decoded image) at a time, and a
part that is refused stops the request before the rest is even read. The standard library's
``email`` parser needs the whole body first; ``python-multipart`` is a server-side dependency
devices do not carry. Pure over a ``read(n)`` callable: the caller bounds the whole body (by its
Content-Length), this module bounds each part and its headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import HTTP
from http import HTTPStatus

from edge_agent.exceptions import ApiError

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024
"""The most bytes a part's headers (or the preamble before the first boundary) may take."""

# RFC 2046 boundary: 1-70 of these characters, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a form: its field name, file name (None for plain fields) and content."""

    name: str | None
    filename: str | None
    data: bytes


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or 400."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "expected a multipart/form-data body with a boundary"
        )
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, "the multipart boundary is not valid (RFC 2046)")
    return boundary.encode("ascii")


def _malformed(why: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, f"malformed multipart body: {why}")


class _Buffer:
    """Bytes read ahead of the parser, refilled a chunk at a time."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.data = bytearray()

    def fill(self) -> bool:
        chunk = self._read(CHUNK)
        self.data += chunk
        return bool(chunk)

    def ensure(self, size: int) -> None:
        while len(self.data) < size:
            if not self.fill():
                raise _malformed("the body ends before its closing boundary")

    def find(self, needle: bytes, *, within: int, missing: str) -> int:
        """Index of `needle`, reading on while fewer than `within` bytes precede it; else 400."""
        start = 0
        while (found := self.data.find(needle, start)) < 0:
            if len(self.data) > within:
                raise _malformed(missing)
            start = max(0, len(self.data) - len(needle) + 1)
            if not self.fill():
                raise _malformed(missing)
        if found > within:
            raise _malformed(missing)
        return found

    def take(self, size: int) -> bytes:
        self.ensure(size)
        taken = bytes(self.data[:size])
        del self.data[:size]
        return taken


def _part_headers(block: bytes) -> tuple[str | None, str | None]:
    headers = BytesHeaderParser(policy=HTTP).parsebytes(block)
    if headers.defects:
        raise _malformed("unreadable part headers")
    encoding = str(headers.get("Content-Transfer-Encoding", "binary")).lower()
    if encoding not in {"binary", "8bit", "7bit"}:
        # RFC 7578 forbids transfer encodings in form data; decoding one would grow the part.
        raise _malformed(f"Content-Transfer-Encoding {encoding} is not accepted")
    name = headers.get_param("name", header="content-disposition")
    filename = headers.get_filename()
    return (name if isinstance(name, str) else None), filename


def iter_parts(
    read: Callable[[int], bytes], boundary: bytes, *, max_part_bytes: int
) -> Iterator[Part]:
    """Each part of the body `read` yields, in order, as soon as it is complete.

    `read(n)` returns at most `n` bytes and ``b""`` at the end of the body. A part over
    `max_part_bytes` is refused with 413 as soon as it grows past it; a malformed body with 400.
    """
    buffer = _Buffer(read)
    dash_boundary = b"--" + boundary
    delimiter = b"\r\n" + dash_boundary
    first = buffer.find(dash_boundary, within=MAX_HEADER_BYTES, missing="no opening boundary")
    del buffer.data[: first + len(dash_boundary)]
    while True:
        buffer.ensure(2)
        if buffer.data.startswith(b"--"):
            return  # the closing delimiter; whatever follows is epilogue
        line_end = buffer.find(b"\r\n", within=MAX_HEADER_BYTES, missing="no CRLF after a boundary")
        if buffer.data[:line_end].strip(b" \t"):  # only transport padding may sit there
            raise _malformed("unexpected bytes after a boundary")
        del buffer.data[: line_end + 2]
        buffer.ensure(2)
        if buffer.data.startswith(b"\r\n"):  # a part without headers
            del buffer.data[:2]
            block = b""
        else:
            end = buffer.find(
                b"\r\n\r\n", within=MAX_HEADER_BYTES, missing="part headers that do not end"
            )
            block = buffer.take(end + 4)
        name, filename = _part_headers(block)
        yield Part(name, filename, _content(buffer, delimiter, max_part_bytes, filename or name))


def _content(buffer: _Buffer, delimiter: bytes, limit: int, label: str | None) -> bytes:
    content = bytearray()
    # Everything but the last len(delimiter) - 1 bytes is safe to move into the part: a
    # delimiter that starts there has not fully arrived yet.
    keep = len(delimiter) - 1
    while (found := buffer.data.find(delimiter)) < 0:
        movable = len(buffer.data) - keep
        if movable > 0:
            content += buffer.data[:movable]
            del buffer.data[:movable]
        if len(content) > limit:
            raise _too_large(label, limit)
        if not buffer.fill():
            raise _malformed("the body ends inside a part")
    if len(content) + found > limit:
        raise _too_large(label, limit)
    content += buffer.data[:found]
    del buffer.data[: found + len(delimiter)]
    return bytes(content)


def _too_large(label: str | None, limit: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"part {label or '(unnamed)'} is over the limit of {limit} bytes per file",
    )
