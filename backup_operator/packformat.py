"""The layout of a pack object: small files' contents one after another, then a JSON
index of them ([sha256, offset, size], ...) and the index's length in 8 bytes (big
endian), so that a pack can be read without the catalog too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

PACK_PREFIX = ".packs/"


def pack_key() -> str:
    name = uuid.uuid4().hex
    return f"{PACK_PREFIX}{name[:2]}/{name}.pack"


def sealed(contents: bytes | bytearray, index: Sequence[tuple[str, int, int]]) -> bytes:
    """The pack's bytes: `contents` and, after them, the index of (sha256, offset, size)."""
    trailer = json.dumps([list(entry) for entry in index]).encode()
    return bytes(contents) + trailer + len(trailer).to_bytes(8, "big")
