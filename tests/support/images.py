"""Small real image files for the vision tests, made here rather than shipped."""

from __future__ import annotations

import base64
import struct
import zlib


def png(width: int = 2, height: int = 2, pad_to: int = 0) -> bytes:
    """A valid RGB PNG; with pad_to, a trailing ancillary chunk makes the file that many bytes or more."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(rows))
    padding = b""
    if pad_to:
        missing = pad_to - len(head) - len(body) - 12 - 12
        padding = chunk(b"tEXt", b"c\x00" + b"x" * max(missing - 2, 0))
    return head + body + padding + chunk(b"IEND", b"")


GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# The start of a baseline JPEG (SOI, APP0/JFIF) and a WebP (RIFF....WEBPVP8L): what the format checks read.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 32 + b"\xff\xd9"
WEBP = b"RIFF" + struct.pack("<I", 26) + b"WEBPVP8L" + struct.pack("<I", 13) + b"\x2f\x00\x00\x00" + b"\x00" * 9


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(data)}"
