"""Width and height of an uploaded image from its header, before any decoder allocates it.

``cv2.imdecode`` sizes its output from the header alone: a 35 KB PNG that claims 20,000 x 20,000
pixels makes it allocate and fill rows of a 1.2 GB image. The local API asks this module first
and refuses what is too large. It reads the two formats devices are sent (PNG and JPEG) and
nothing else: OpenCV picks its decoder by the same signatures checked here, so the size read
here is the size that decoder would allocate; anything else is refused instead of decoded blindly.

Pure: bytes in, `ImageHeader` out, or `ImageHeaderError` for anything truncated or insane.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.exceptions import ImageHeaderError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI, then the first marker's 0xFF

_PNG_MAX_SIDE = 2**31 - 1  # the PNG spec's own bound on IHDR width and height
# Start-of-frame markers (baseline, progressive, lossless, arithmetic ...). 0xC4 (DHT), 0xC8
# (reserved JPG) and 0xCC (DAC) sit in the same range but carry no frame size.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI, _JPEG_SOI = 0xDA, 0xD9, 0xD8


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image's header declares."""

    format: Literal["png", "jpeg"]
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def read_image_header(data: bytes | bytearray | memoryview) -> ImageHeader:
    """The format and declared size of the image in `data`; only its first bytes are looked at."""
    view = memoryview(data).cast("B")
    if view[: len(PNG_SIGNATURE)] == PNG_SIGNATURE:
        return _png(view)
    if view[: len(JPEG_SIGNATURE)] == JPEG_SIGNATURE:
        return _jpeg(view)
    raise ImageHeaderError("not a PNG or JPEG image")


def _u16(view: memoryview, at: int) -> int:
    return int.from_bytes(view[at : at + 2], "big")


def _u32(view: memoryview, at: int) -> int:
    return int.from_bytes(view[at : at + 4], "big")


def _png(view: memoryview) -> ImageHeader:
    # Signature (8), then the IHDR chunk, which must come first: length (4) = 13, type (4),
    # width (4), height (4), then bit depth and the rest.
    if len(view) < 24:
        raise ImageHeaderError("PNG: truncated before the end of its IHDR header")
    length, kind = _u32(view, 8), bytes(view[12:16])
    if kind != b"IHDR" or length != 13:
        raise ImageHeaderError("PNG: the first chunk is not a 13-byte IHDR header")
    width, height = _u32(view, 16), _u32(view, 20)
    if not (1 <= width <= _PNG_MAX_SIDE and 1 <= height <= _PNG_MAX_SIDE):
        raise ImageHeaderError(f"PNG: IHDR declares an impossible size {width}x{height}")
    return ImageHeader("png", width, height)


def _jpeg(view: memoryview) -> ImageHeader:
    # Walk the marker segments after SOI as libjpeg does, skipping each by its length, up to the
    # first start-of-frame; thumbnails inside APP segments are skipped with their segment.
    end, at = len(view), 2
    while True:
        if at >= end:
            raise ImageHeaderError("JPEG: truncated before its frame header (SOF)")
        if view[at] != 0xFF:
            raise ImageHeaderError(f"JPEG: expected a marker at byte {at}")
        while at < end and view[at] == 0xFF:  # fill bytes may pad any marker
            at += 1
        if at >= end:
            raise ImageHeaderError("JPEG: truncated before its frame header (SOF)")
        marker = view[at]
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in {_JPEG_SOS, _JPEG_EOI, _JPEG_SOI, 0x00}:
            raise ImageHeaderError(f"JPEG: marker 0x{marker:02X} before any frame header (SOF)")
        if at + 2 > end:
            raise ImageHeaderError("JPEG: truncated inside a marker segment")
        length = _u16(view, at)
        if length < 2:
            raise ImageHeaderError(f"JPEG: marker 0x{marker:02X} has an impossible length")
        if marker in _JPEG_SOF:
            # length (2), sample precision (1), height (2), width (2), components ...
            if length < 8 or at + 7 > end:
                raise ImageHeaderError("JPEG: truncated frame header (SOF)")
            height, width = _u16(view, at + 3), _u16(view, at + 5)
            if width == 0 or height == 0:
                # Height 0 defers it to a DNL marker, which OpenCV's decoder does not take.
                raise ImageHeaderError(f"JPEG: frame header declares a size of {width}x{height}")
            return ImageHeader("jpeg", width, height)
        at += length
