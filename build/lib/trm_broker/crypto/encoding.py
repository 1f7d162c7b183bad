"""base64url without padding (RFC 7515 §2) and SHA-256 digests."""

from __future__ import annotations

import base64
import binascii
import hashlib

from trm_broker.crypto.errors import MalformedError


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly: padding, whitespace or other alphabets are refused."""
    if not isinstance(text, str) or "=" in text:
        raise MalformedError("expected unpadded base64url text")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedError("invalid base64url text") from exc
    if b64url_encode(raw) != text:
        # Non-canonical encodings (stray bits in the last character) would let two texts
        # name the same bytes; refuse them so digests over the text stay unambiguous.
        raise MalformedError("non-canonical base64url text")
    return raw


def sha256_digest(data: bytes) -> str:
    """Digest as written in receipts and ledger entries: ``sha-256:<base64url>``."""
    return "sha-256:" + b64url_encode(hashlib.sha256(data).digest())
