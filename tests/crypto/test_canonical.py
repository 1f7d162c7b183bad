"""RFC 8785 canonical JSON: one byte string per value, and nothing else is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trm_broker.crypto.canonical import canonical_json, parse_canonical_json
from trm_broker.crypto.errors import MalformedError

SAFE_INT = 2**53 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE_INT, max_value=SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
@example(1e16)
@example({"amount": 2.0**53})
def test_canonical_bytes_parse_back_to_the_same_value(value: Any) -> None:
    assert parse_canonical_json(canonical_json(value)) == value


@given(json_values)
@example(2.0**53)
def test_canonical_json_is_idempotent(value: Any) -> None:
    once = canonical_json(value)
    assert canonical_json(parse_canonical_json(once)) == once


def test_large_integral_float_signed_by_one_party_is_readable_by_the_other() -> None:
    # 1e16 is a finite IEEE double; RFC 8785 writes it as "10000000000000000". The
    # canonical bytes the sender produced must be accepted by the parser on the other side.
    data = canonical_json({"n": 1e16})
    assert data == b'{"n":10000000000000000}'
    assert parse_canonical_json(data) == {"n": 1e16}


def test_known_canonical_form() -> None:
    value = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": -0.0}, "c": 1e21}
    assert canonical_json(value) == '{"a":{"y":0,"z":"é"},"b":[1,2.5,null,true],"c":1e+21}'.encode()


def test_keys_are_sorted_by_utf16_code_units() -> None:
    # U+1F600 (surrogates D83D..) sorts before U+FB33 in UTF-16 order, after it by code point.
    data = canonical_json({"\ufb33": 1, "\U0001f600": 2})
    assert data == '{"\U0001f600":2,"\ufb33":1}'.encode()


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',  # whitespace after colon
        b' {"a":1}',  # leading whitespace
        b'{"a":1}\n',  # trailing newline
        b'{"b":1,"a":2}',  # unsorted keys
        b'{"a":1,"a":1}',  # repeated member
        b'{"a":1.0}',  # number not in shortest ES6 form
        b'{"a":1E3}',
        b'{"a":"\\u0041"}',  # needless escape
        b'"\\u00e9"',
        b"[1,2,]",  # not JSON at all
        b"NaN",
        b"",
    ],
)
def test_non_canonical_or_invalid_json_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_canonical_json(data)


@pytest.mark.parametrize("data", [b'"\xff"', b'"\xc3"', b'{"a":"\xed\xa0\x80"}', b"\xef\xbb\xbf{}"])
def test_invalid_utf8_or_bom_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_canonical_json(data)


def test_deep_nesting_is_refused_as_malformed() -> None:
    with pytest.raises(MalformedError):
        parse_canonical_json(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 2**53, -(2**53), {1: "non-string key"}, "\ud800", object()],
)
def test_values_outside_i_json_are_refused(value: Any) -> None:
    with pytest.raises(MalformedError):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [
        # Python's int() refuses more than 4300 digits with a ValueError of its own.
        b'{"n":' + b"9" * 5000 + b"}",
        b'{"n":-' + b"9" * 5000 + b"}",
        # Beyond 2**53 the digits are read as a double; 400 digits overflow float().
        b'{"n":' + b"9" * 400 + b"}",
    ],
    ids=["5000-digits", "minus-5000-digits", "400-digits"],
)
def test_huge_integers_are_refused_as_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_canonical_json(data)
