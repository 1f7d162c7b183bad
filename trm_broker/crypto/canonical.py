"""RFC 8785 JSON Canonicalization Scheme: the exact bytes that get signed and digested."""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from trm_broker.crypto.errors import Code, MalformedError


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` per RFC 8785 (sorted keys, no whitespace, ES6 number forms)."""
    fast = _orjson_form(value)
    if fast is not None:
        return fast
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedError(f"value cannot be canonicalised: {type(exc).__name__}") from exc


# orjson (compiled) writes RFC 8785's exact bytes for JSON's own types, keys sorted, except
# for three things, each left to the RFC 8785 library: a float (RFC 8785 writes ES6 number
# forms), an integer beyond 2**53 - 1 (both refuse it, orjson with OPT_STRICT_INTEGER), and a
# character beyond the BMP (RFC 8785 sorts keys by UTF-16 code units). Any other type, a
# subclass included, goes to the library too, which refuses what it cannot write.
# tests/crypto/test_canonical.py checks the two agree on arbitrary values.
ORJSON_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_PLAIN = frozenset({dict, list, str, int, bool, type(None)})
BELOW_4_BYTE_UTF8 = bytes(range(0xF0))


def _orjson_form(value: Any) -> bytes | None:
    """``value``'s RFC 8785 bytes written by orjson, or None where they might differ."""
    level = [value]
    while level:  # one level of nesting at a time, the types checked in C
        kinds = set(map(type, level))
        if not kinds <= _PLAIN:
            return None
        nested: list[Any] = []
        if dict in kinds or list in kinds:
            for item in level:
                if type(item) is dict:
                    nested.extend(item.values())
                elif type(item) is list:
                    nested.extend(item)
        level = nested
    try:
        data = orjson.dumps(value, option=ORJSON_CANONICAL)
    except orjson.JSONEncodeError:  # a large integer, a non-string key, a lone surrogate
        return None
    if not data.isascii() and data.translate(None, BELOW_4_BYTE_UTF8):
        return None
    return data


_MAX_SAFE_INTEGER = 2**53 - 1


def _i_json_number(text: str) -> int | float:
    """Integers as I-JSON (RFC 7493 §2.2) reads them: beyond ±(2**53 - 1) they are doubles.

    RFC 8785 writes a large integral double such as 1e16 as bare digits; reading those
    digits back as a double keeps signer and verifier on the same canonical bytes.
    """
    number = int(text)
    return number if abs(number) <= _MAX_SAFE_INTEGER else float(number)


def parse_canonical_json(data: bytes) -> Any:
    """Parse JSON that must already be in RFC 8785 form; anything else is refused.

    Requiring the canonical form means a signed payload has exactly one byte string, so
    the envelope digest the broker receipts is the digest every party computes.
    """
    try:  # compiled first: what orjson reads and canonical_json writes back byte for byte
        value = orjson.loads(data)
        if canonical_json(value) == data:
            return value
    except (orjson.JSONDecodeError, MalformedError):
        pass  # read exactly as below, which says what is wrong
    try:
        value = json.loads(data.decode("utf-8"), parse_int=_i_json_number)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedError("payload is not valid UTF-8 JSON") from exc
    except (ValueError, OverflowError) as exc:
        # int() refuses literals beyond sys.get_int_max_str_digits() (4300 digits), and
        # float() those beyond the double range; neither can be RFC 8785 canonical.
        raise MalformedError("payload holds a number too large to read") from exc
    if canonical_json(value) != data:
        raise MalformedError("payload is not in RFC 8785 canonical form", code=Code.NOT_CANONICAL)
    return value
