"""The streaming multipart reader: parts come out whole and in order however the bytes arrive,
each bounded, and a refused part stops the reading before the rest of the body."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.exceptions import ApiError
from edge_agent.multipart import MAX_HEADER_BYTES, Part, boundary_of, iter_parts

BOUNDARY = b"b0undary-x"


def form(parts: list[tuple[str, str | None, bytes]], boundary: bytes = BOUNDARY) -> bytes:
    """A multipart/form-data body as browsers write it: (field, file name, content) per part."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += b"--" + boundary + b"\r\n"
        out += f"Content-Disposition: {disposition}\r\n".encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def reader(data: bytes, sizes: list[int]) -> tuple[Callable[[int], bytes], io.BytesIO]:
    """A `read(n)` over `data` that returns at most the next of `sizes` bytes per call."""
    stream, cycle = io.BytesIO(data), itertools.cycle(sizes or [1 << 20])

    def read(n: int) -> bytes:
        return stream.read(min(n, next(cycle)))

    return read, stream


def parse(data: bytes, sizes: list[int] | None = None, limit: int = 1 << 20) -> list[Part]:
    read, _ = reader(data, sizes or [])
    return list(iter_parts(read, BOUNDARY, max_part_bytes=limit))


# Contents that look like the delimiter, or its start, test the reader's boundary search.
_TRICKY = st.sampled_from(
    [b"", b"\r\n", b"\r\n--", b"\r\n--" + BOUNDARY[:-1], b"--" + BOUNDARY[:-1], b"\r", b"-"]
)
# An encoder picks a boundary its contents do not hold; near misses are fair game.
_CONTENT = (
    st.lists(st.one_of(st.binary(max_size=200), _TRICKY), max_size=6)
    .map(b"".join)
    .filter(lambda content: b"--" + BOUNDARY not in content)
)


@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["files", "file", "note"]),
            st.one_of(st.none(), st.sampled_from(["a.png", "b c.jpg", "ü.png"])),
            _CONTENT,
        ),
        min_size=1,
        max_size=5,
    ),
    sizes=st.lists(st.integers(1, 300), max_size=8),
)
def test_parts_come_out_whole_and_in_order_however_the_body_is_split(
    parts: list[tuple[str, str | None, bytes]], sizes: list[int]
) -> None:
    got = parse(form(parts), sizes)
    assert [(p.name, p.filename, p.data) for p in got] == parts


def test_a_preamble_headerless_parts_padding_and_epilogue_are_understood() -> None:
    body = (
        b"preamble\r\n--" + BOUNDARY + b" \t\r\n\r\nno headers\r\n--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="f"; filename="x.png"\r\n\r\nX'
        b"\r\n--" + BOUNDARY + b"--\r\nepilogue"
    )
    assert parse(body, [3]) == [Part(None, None, b"no headers"), Part("f", "x.png", b"X")]


def test_a_part_over_the_limit_is_refused_before_the_rest_of_the_body_is_read() -> None:
    body = form([("files", "big.png", b"x" * 5000), ("files", "next.png", b"y" * 50_000)])
    read, stream = reader(body, [100])
    parts = iter_parts(read, BOUNDARY, max_part_bytes=4096)
    with pytest.raises(ApiError) as caught:
        next(parts)
    assert caught.value.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "big.png is over the limit of 4096 bytes" in caught.value.detail
    assert stream.tell() < 5000 + 200  # the second part was never read


def test_the_limit_counts_exactly() -> None:
    body = form([("files", "a.png", b"x" * 4096)])
    assert parse(body, [7], limit=4096)[0].data == b"x" * 4096
    with pytest.raises(ApiError, match="over the limit of 4095"):
        parse(body, [7], limit=4095)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"no boundary anywhere", "no opening boundary"),
        (b"x" * (MAX_HEADER_BYTES + 10) + b"--" + BOUNDARY, "no opening boundary"),
        (b"--" + BOUNDARY + b"\r\nContent-Type: x\r\n\r\nunfinished", "ends inside a part"),
        (b"--" + BOUNDARY + b"junk\r\n\r\nx\r\n--" + BOUNDARY + b"--", "unexpected bytes"),
        (b"--" + BOUNDARY + b"\r\nX: " + b"h" * MAX_HEADER_BYTES, "headers that do not end"),
        (b"--" + BOUNDARY + b"\r\n\r\nx\r\n--" + BOUNDARY, "ends before its closing boundary"),
        (
            b"--"
            + BOUNDARY
            + b"\r\nContent-Transfer-Encoding: base64\r\n\r\neA==\r\n--"
            + BOUNDARY
            + b"--",
            "base64 is not accepted",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_400(body: bytes, says: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(body, [64])
    assert caught.value.status == HTTPStatus.BAD_REQUEST
    assert says in caught.value.detail


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        (
            "Multipart/Form-Data; charset=utf-8; boundary=----WebKitFormBoundaryX",
            b"----WebKitFormBoundaryX",
        ),
    ],
)
def test_the_boundary_is_taken_from_the_content_type(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png",
        "multipart/form-data",
        "multipart/mixed; boundary=a",
        'multipart/form-data; boundary="a "',
        "multipart/form-data; boundary=" + "x" * 71,
    ],
)
def test_a_content_type_without_a_valid_form_boundary_is_refused(content_type: str) -> None:
    with pytest.raises(ApiError) as caught:
        boundary_of(content_type)
    assert caught.value.status == HTTPStatus.BAD_REQUEST
