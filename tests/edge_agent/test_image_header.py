"""Image headers: the size OpenCV would allocate, read from PNG and JPEG bytes before decoding."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.exceptions import ImageHeaderError
from edge_agent.image_header import (
    JPEG_SIGNATURE,
    PNG_SIGNATURE,
    ImageHeader,
    read_image_header,
)
from tests.edge_agent.conftest import png_chunk, png_declaring


def encoded(suffix: str, width: int, height: int, *params: int, channels: int = 3) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, channels), np.uint8)
    ok, data = cv2.imencode(suffix, pixels if channels > 1 else pixels[..., 0], list(params))
    assert ok
    return data.tobytes()


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def sof_offset(jpeg: bytes) -> int:
    """Where the (first) baseline or progressive frame header of an encoder's JPEG starts."""
    return min(i for i in (jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2")) if i >= 0)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (640, 480), (3, 1001), (1001, 3)])
@pytest.mark.parametrize(
    ("suffix", "params", "channels", "kind"),
    [
        (".png", (), 3, "png"),
        (".png", (), 1, "png"),
        (".jpg", (), 3, "jpeg"),
        (".jpg", (), 1, "jpeg"),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 3, "jpeg"),
    ],
    ids=["png", "png-grey", "jpeg", "jpeg-grey", "jpeg-progressive"],
)
def test_files_written_by_opencv_give_the_size_it_decodes_them_to(
    width: int, height: int, suffix: str, params: tuple[int, ...], channels: int, kind: str
) -> None:
    data = encoded(suffix, width, height, *params, channels=channels)
    header = read_image_header(data)
    assert header == ImageHeader(kind, width, height)  # type: ignore[arg-type]
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape[:2] == (header.height, header.width)


def test_thousands_of_segments_and_a_thumbnail_before_the_frame_header_are_skipped() -> None:
    main = encoded(".jpg", 320, 200)
    thumbnail = encoded(".jpg", 16, 8)
    # An EXIF-style APP1 carrying a whole JPEG (its own SOF included), thousands of comments,
    # and fill bytes before a marker: all must be skipped by length, as libjpeg skips them.
    segments = jpeg_segment(0xE1, b"Exif\x00\x00" + thumbnail) + b"".join(
        jpeg_segment(0xFE, b"c" * (i % 50)) for i in range(5000)
    )
    crafted = main[:2] + segments + b"\xff\xff\xff" + main[2:]
    assert read_image_header(crafted) == ImageHeader("jpeg", 320, 200)
    decoded = cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape[:2] == (200, 320)  # the crafted file is a real JPEG


def test_a_png_may_declare_far_more_pixels_than_it_carries() -> None:
    bomb = png_declaring(20_000, 20_000)
    assert len(bomb) < 1_000
    assert read_image_header(bomb).pixels == 400_000_000


def test_every_truncation_of_a_header_is_refused() -> None:
    png, jpeg = encoded(".png", 40, 30), encoded(".jpg", 40, 30)
    for data, end in ((png, 24), (jpeg, sof_offset(jpeg) + 9)):
        for cut in range(end):
            with pytest.raises(ImageHeaderError):
                read_image_header(data[:cut])
        assert read_image_header(data[:end]).pixels == 1200


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (png_declaring(0, 10), "impossible size 0x10"),
        (png_declaring(10, 2**31), "impossible size"),
        (png_declaring(10, 10, ihdr_length=12), "13-byte IHDR"),
        (PNG_SIGNATURE + png_chunk(b"tEXt", b"x" * 13) + bytes(12), "13-byte IHDR"),
        (JPEG_SIGNATURE[:2] + jpeg_segment(0xC0, b"\x08\x00\x00\x00\x10\x01"), "size of 16x0"),
        (JPEG_SIGNATURE[:2] + jpeg_segment(0xDA, b"\x00" * 10), "0xDA before any frame"),
        (JPEG_SIGNATURE[:2] + b"\xff\xd9", "0xD9 before any frame"),
        (JPEG_SIGNATURE[:2] + b"\xff\xe0\x00\x01", "impossible length"),
        (JPEG_SIGNATURE[:2] + jpeg_segment(0xE0, b"JFIF") + b"junk", "expected a marker"),
        (JPEG_SIGNATURE[:2] + jpeg_segment(0xC0, b"\x08\x00"), "truncated frame header"),
    ],
)
def test_headers_that_lie_or_break_the_format_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(ImageHeaderError, match=says):
        read_image_header(data)


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tiff", ".ppm"])
def test_formats_opencv_could_decode_but_we_do_not_read_are_refused(suffix: str) -> None:
    data = encoded(suffix, 8, 8)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ImageHeaderError, match="not a PNG or JPEG"):
        read_image_header(data)


@given(
    prefix=st.sampled_from([b"", PNG_SIGNATURE, JPEG_SIGNATURE, JPEG_SIGNATURE[:2]]),
    rest=st.binary(max_size=300),
)
def test_any_bytes_give_a_sane_header_or_our_error(prefix: bytes, rest: bytes) -> None:
    try:
        header = read_image_header(prefix + rest)
    except ImageHeaderError:
        return
    assert header.width >= 1
    assert header.height >= 1


_MARKERS_BEFORE_SOF = st.sampled_from([0xC4, 0xCC, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)])


@given(
    segments=st.lists(st.tuples(_MARKERS_BEFORE_SOF, st.binary(max_size=40)), max_size=30),
    sof=st.sampled_from([0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCF]),
    width=st.integers(1, 65535),
    height=st.integers(1, 65535),
    fill=st.integers(0, 3),
)
def test_the_first_frame_header_after_any_segments_gives_the_size(
    segments: list[tuple[int, bytes]], sof: int, width: int, height: int, fill: int
) -> None:
    frame = jpeg_segment(sof, b"\x08" + struct.pack(">HH", height, width) + b"\x03" + bytes(9))
    later = jpeg_segment(0xC0, b"\x08" + struct.pack(">HH", 1, 1) + b"\x01" + bytes(3))
    data = (
        JPEG_SIGNATURE[:2]
        + b"".join(b"\xff" * fill + jpeg_segment(m, p) for m, p in segments)
        + frame
        + later
    )
    assert read_image_header(data) == ImageHeader("jpeg", width, height)
