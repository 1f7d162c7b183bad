"""Unpadded base64url (RFC 7515 §2): one text per byte string, every other spelling refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trm_broker.crypto.encoding import b64url_decode, b64url_encode, sha256_digest
from trm_broker.crypto.errors import MalformedError


@given(st.binary(max_size=200))
def test_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data


@given(st.binary(max_size=200))
def test_encoding_uses_only_the_url_alphabet_without_padding(data: bytes) -> None:
    text = b64url_encode(data)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(text) == (len(data) * 4 + 2) // 3


def test_rfc_4648_test_vectors() -> None:
    vectors = {b"": "", b"f": "Zg", b"fo": "Zm8", b"foo": "Zm9v", b"foob": "Zm9vYg"}
    for raw, text in vectors.items():
        assert b64url_encode(raw) == text
        assert b64url_decode(text) == raw
    assert b64url_encode(b"\xfb\xff\xbf") == "-_-_"
    assert b64url_decode("-_-_") == b"\xfb\xff\xbf"


@pytest.mark.parametrize(
    "text",
    [
        "Zg==",  # padded
        "Zm8=",
        "Zg=",
        "+/+/",  # standard alphabet instead of URL-safe
        "Zm9v+w",
        "Zm9v/w",
        "Zm 9v",  # whitespace
        "Zm9v\n",
        "Z",  # impossible length
        "Zm9vY",
        "Zm9v!",  # not base64 at all
        "Zm9vé",  # non-ASCII
    ],
)
def test_padding_other_alphabets_and_garbage_are_refused(text: str) -> None:
    with pytest.raises(MalformedError):
        b64url_decode(text)


@pytest.mark.parametrize("text", ["Zh", "Zm9", "Zm9vYh", "AB", "AAB"])
def test_non_canonical_trailing_bits_are_refused(text: str) -> None:
    # Each of these decodes (ignoring stray low bits) to the same bytes as a canonical text.
    lenient = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert b64url_encode(lenient) != text
    with pytest.raises(MalformedError):
        b64url_decode(text)


@given(st.binary(min_size=1, max_size=60), st.integers(min_value=1, max_value=3))
def test_every_non_canonical_last_character_is_refused(data: bytes, bump: int) -> None:
    assume(len(data) % 3 != 0)  # otherwise the last character carries no spare bits
    text = b64url_encode(data)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    altered = text[:-1] + alphabet[last + bump]  # canonical last chars leave the low bits 0
    with pytest.raises(MalformedError):
        b64url_decode(altered)


def test_non_string_input_is_refused() -> None:
    with pytest.raises(MalformedError):
        b64url_decode(b"Zm9v")  # type: ignore[arg-type]


def test_sha256_digest_format() -> None:
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"abc").digest()).rstrip(b"=").decode()
    assert sha256_digest(b"abc") == "sha-256:" + expected
    assert sha256_digest(b"abc") == "sha-256:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
