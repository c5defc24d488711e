"""Frames between the code-executor, a sandbox's zygote and its children.

A frame is a JSON header and raw bytes (a request or response body), each
length-prefixed: ``>II`` (header size, body size), the header, the body.
Stdlib only: this module runs inside the sandbox too.
"""

import json
import struct
from typing import Any

PREFIX = struct.Struct(">II")
MAX_HEADER = 1 << 20
MAX_BODY = 16 << 20

Frame = tuple[dict[str, Any], bytes]


class BadFrame(ValueError):
    """A peer sent something that is not a frame: the connection is dropped."""


def pack(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(encoded), len(body)) + encoded + body


def sizes(prefix: bytes) -> tuple[int, int]:
    header_size, body_size = PREFIX.unpack(prefix)
    if header_size > MAX_HEADER or body_size > MAX_BODY:
        raise BadFrame(f"a frame of {header_size} + {body_size} bytes is over the limit")
    return header_size, body_size


def header(data: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise BadFrame("a frame header is not JSON") from exc
    if not isinstance(decoded, dict):
        raise BadFrame("a frame header is not an object")
    return decoded


class Buffer:
    """Frames out of a byte stream that arrives in pieces (a non-blocking socket)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._data += data
        frames: list[Frame] = []
        while len(self._data) >= PREFIX.size:
            header_size, body_size = sizes(bytes(self._data[: PREFIX.size]))
            end = PREFIX.size + header_size + body_size
            if len(self._data) < end:
                break
            start = PREFIX.size + header_size
            frames.append(
                (header(bytes(self._data[PREFIX.size : start])), bytes(self._data[start:end]))
            )
            del self._data[:end]
        return frames
