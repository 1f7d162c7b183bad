"""UUIDv7 message ids (RFC 9562 §5.7): time-ordered, so ids sort in creation order."""

from __future__ import annotations

import os
import re
import time
import uuid

UUID7_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_UUID7 = re.compile(UUID7_PATTERN)


def uuid7(now_ms: int | None = None) -> str:
    """A new UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits, variant 10."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 bits rand_a
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)  # 62 bits rand_b
    return str(uuid.UUID(int=value))


def is_uuid7(text: str) -> bool:
    return _UUID7.fullmatch(text) is not None
