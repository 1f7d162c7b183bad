"""RFC 8785 canonical JSON: one byte string per value, and nothing else is accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from trm_broker.crypto.canonical import (
    _i_json_number,
    _orjson_form,
    canonical_json,
    parse_canonical_json,
)
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


def _library_form(value: Any) -> bytes | str:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        return type(exc).__name__


plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
plain_values = st.recursive(
    plain_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@given(plain_values)
@example({"\ufb33": 1, "\U0001f600": 2})
@example({"a": 2**53 - 1, "b": -(2**53 - 1)})
@example([2**53])
@example({"a": "\ud800"})
@example({"a": 1.0})
@example("".join(map(chr, range(0x80))) + "\u2028\u2029\ufeff\uffff")
def test_the_fast_path_writes_exactly_what_the_rfc_8785_library_writes(value: Any) -> None:
    # canonical_json writes JSON's own types with orjson and leaves floats, large integers
    # and characters beyond the BMP to the RFC 8785 library: the bytes must be the same.
    try:
        ours: bytes | str = canonical_json(value)
    except MalformedError as exc:
        ours = str(exc.__cause__.__class__.__name__)
    expected = _library_form(value)
    if isinstance(expected, str):
        assert isinstance(ours, str)
    else:
        assert ours == expected


class _Label(str):
    pass


def test_a_subclass_of_a_json_type_is_written_by_the_library() -> None:
    # orjson would write an Enum's value or refuse a subclass; the library's rules apply.
    assert canonical_json({"k": _Label("v"), "n": True}) == b'{"k":"v","n":true}'
    with pytest.raises(MalformedError):
        canonical_json({"when": object()})


def test_an_envelope_of_json_types_takes_the_compiled_path() -> None:
    # The speed-up (issue 21) holds for what the broker signs and digests: strings, integers,
    # lists and objects. A float or a character beyond the BMP takes the library's path.
    envelope = {"v": 1, "id": "01J", "categories": ["identity"], "sealed": {"kid": "k", "ct": "x"}}
    assert _orjson_form(envelope) == canonical_json(envelope)
    assert _orjson_form({"amount": 2.5}) is None
    assert _orjson_form({"name": "\U0001f600"}) is None


def _library_parse(data: bytes) -> Any:
    try:
        value = json.loads(data.decode("utf-8"), parse_int=_i_json_number)
    except (ValueError, RecursionError, OverflowError):
        return "refused"
    return value if _library_form(value) == data else "refused"


@given(plain_values)
@example({"n": 2**53})
@example(1e16)
def test_parsing_reads_what_the_library_reads_and_refuses_what_it_refuses(value: Any) -> None:
    # parse_canonical_json reads with orjson first; the value (or the refusal) must be the
    # one the standard library's reading and the RFC 8785 library's writing give.
    for data in _variants(value):
        try:
            ours: Any = parse_canonical_json(data)
        except MalformedError:
            ours = "refused"
        expected = _library_parse(data)
        assert ours == expected
        assert type(ours) is type(expected)


def _variants(value: Any) -> list[bytes]:
    written = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    canonical = _library_form(value)
    return [written] + ([canonical] if isinstance(canonical, bytes) else [])


@pytest.mark.parametrize(
    "data",
    [b'{"n":9007199254740993}', b'"\\ud800"', b"[1,2,3]", b'{"a":1,"a":1}', b"1e400", b"NaN"],
)
def test_what_the_fast_reading_leaves_is_read_as_before(data: bytes) -> None:
    try:
        ours: Any = parse_canonical_json(data)
    except MalformedError:
        ours = "refused"
    assert ours == _library_parse(data)
