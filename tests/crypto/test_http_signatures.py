"""Our RFC 9421 profile: a signed request verifies, and any change to what it covers does not."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, algorithms
from hypothesis import given
from hypothesis import strategies as st

from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import (
    COVERED,
    RequestSignatureError,
    SignedRequest,
    check_signed_request,
    sign_request,
    signature_keyid,
    verify_request,
)
from trm_broker.crypto.keys import SigningKey

KEY = SigningKey.generate()
URL = "https://broker.example/v1/messages?after=3"
BODY = b'{"protected":"x","payload":"y","signature":"z"}'
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)

Headers = list[tuple[str, str]]


def signed(method: str = "POST", url: str = URL, body: bytes = BODY, **kwargs: object) -> Headers:
    headers = sign_request(method, url, body, KEY, created=NOW, **kwargs)  # type: ignore[arg-type]
    return [*headers.items(), ("content-type", "application/jose+json")]


def verify(
    headers: Headers,
    method: str = "POST",
    url: str = URL,
    body: bytes | None = BODY,
    now: datetime = NOW,
    key: SigningKey = KEY,
) -> SignedRequest:
    return verify_request(
        method,
        url,
        headers,
        body,
        key.private.public_key(),
        key.kid,
        now=now,
        max_age=WINDOW,
        skew=WINDOW,
    )


def replace(headers: Headers, name: str, value: str) -> Headers:
    return [(n, value if n.lower() == name else v) for n, v in headers]


def test_a_signed_request_verifies_and_names_its_key_time_and_nonce() -> None:
    headers = signed(nonce="n" * 22)
    assert signature_keyid(headers) == KEY.kid
    result = verify(headers)
    assert (result.keyid, result.created, result.nonce) == (KEY.kid, NOW, "n" * 22)
    signature_input = dict(headers)["Signature-Input"]
    assert signature_input.startswith('trm=("@method" "@target-uri" "content-digest")')
    assert 'tag="trm-broker/v1"' in signature_input


def test_an_unsigned_request_has_no_keyid() -> None:
    assert signature_keyid([("content-type", "application/json")]) is None


TAMPERINGS: dict[str, Callable[[Headers], tuple[Headers, str, str, bytes]]] = {
    "method": lambda h: (h, "PUT", URL, BODY),
    "path": lambda h: (h, "POST", URL.replace("/messages", "/participants"), BODY),
    "query": lambda h: (h, "POST", URL.replace("after=3", "after=4"), BODY),
    "host": lambda h: (h, "POST", URL.replace("broker.example", "evil.example"), BODY),
    "scheme": lambda h: (h, "POST", URL.replace("https", "http"), BODY),
    "body": lambda h: (h, "POST", URL, BODY + b" "),
    "digest-and-body": lambda h: (
        replace(h, "content-digest", sign_request("POST", URL, b"{}", KEY)["Content-Digest"]),
        "POST",
        URL,
        b"{}",
    ),
    "created": lambda h: (
        replace(
            h,
            "signature-input",
            dict(h)["Signature-Input"].replace(
                f"created={int(NOW.timestamp())}", f"created={int(NOW.timestamp()) - 1}"
            ),
        ),
        "POST",
        URL,
        BODY,
    ),
    "nonce": lambda h: (
        replace(
            h,
            "signature-input",
            dict(h)["Signature-Input"].replace('nonce="', 'nonce="x'),
        ),
        "POST",
        URL,
        BODY,
    ),
    "signature-bit": lambda h: (
        replace(h, "signature", dict(h)["Signature"].replace(":", ":A", 1)[:-3] + "==:"),
        "POST",
        URL,
        BODY,
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_changing_any_covered_part_breaks_the_signature(tampering: str) -> None:
    headers, method, url, body = TAMPERINGS[tampering](signed())
    with pytest.raises(RequestSignatureError):
        verify(headers, method, url, body)


def test_a_signature_by_another_key_is_refused() -> None:
    other = SigningKey.generate()
    headers = sign_request("POST", URL, BODY, other, created=NOW)
    forged = replace(
        list(headers.items()),
        "signature-input",
        headers["Signature-Input"].replace(other.kid, KEY.kid),
    )
    with pytest.raises(RequestSignatureError):
        verify(forged)
    with pytest.raises(RequestSignatureError):
        verify(list(headers.items()))  # names the other key: not the one we were given


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(0), True),
        (WINDOW - timedelta(seconds=1), True),
        (WINDOW + timedelta(seconds=1), False),  # too old
        (-(WINDOW - timedelta(seconds=1)), True),  # a little ahead: clocks differ
        (-(WINDOW + timedelta(seconds=1)), False),  # from the future
    ],
)
def test_created_must_lie_within_the_window(offset: timedelta, accepted: bool) -> None:
    headers = signed()
    if accepted:
        verify(headers, now=NOW + offset)
    else:
        with pytest.raises(RequestSignatureError, match=r"too old|future"):
            verify(headers, now=NOW + offset)


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str]


def library_signed(covered: tuple[str, ...], nonce: str | None) -> Headers:
    """A signature made with the library directly, outside our profile."""
    request = _Request("POST", URL, {})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=None)
    prepared = signer.prepare(
        request,
        key_id=KEY.kid,
        created=NOW,
        nonce=nonce,
        label="trm",
        tag="trm-broker/v1",
        covered_component_ids=covered,
    )
    signer.apply(request, prepared, KEY.sign(prepared.signature_base))
    digest = sign_request("POST", URL, BODY, KEY)["Content-Digest"]
    return [*request.headers.items(), ("Content-Digest", digest)]


def test_a_signature_not_covering_the_digest_is_refused() -> None:
    with pytest.raises(RequestSignatureError, match=r"cover|Content-Digest"):
        verify(library_signed(("@method", "@target-uri"), "n" * 22))


def test_a_signature_without_a_nonce_is_refused() -> None:
    request = _Request(
        "POST", URL, {"Content-Digest": sign_request("POST", URL, BODY, KEY)["Content-Digest"]}
    )
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=None)
    prepared = signer.prepare(
        request,
        key_id=KEY.kid,
        created=NOW,
        label="trm",
        tag="trm-broker/v1",
        covered_component_ids=COVERED,
        use_existing_digest=True,
    )
    signer.apply(request, prepared, KEY.sign(prepared.signature_base))
    with pytest.raises(RequestSignatureError, match="nonce"):
        verify(list(request.headers.items()))


@pytest.mark.parametrize(
    "signature_input",
    [
        "not a dictionary ((",
        'other=("@method");keyid="k"',
        'trm=("@method");created=1',
    ],
)
def test_malformed_signature_input_is_refused_before_any_lookup(signature_input: str) -> None:
    with pytest.raises(RequestSignatureError):
        signature_keyid([("Signature-Input", signature_input)])


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/", max_size=40),
    body=st.binary(max_size=512),
)
def test_any_request_signed_verifies_and_breaks_when_its_body_changes(
    method: str, path: str, body: bytes
) -> None:
    url = "https://broker.example/" + path
    headers = list(sign_request(method, url, body, KEY, created=NOW).items())
    assert verify(headers, method, url, body).keyid == KEY.kid
    with pytest.raises(RequestSignatureError):
        verify(headers, method, url, body + b"\x00")


def test_parameters_outside_the_profile_are_refused() -> None:
    # An `expires` (or any other parameter) is not ours: the window is the verifier's.
    request = _Request("POST", URL, {})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=None)
    prepared = signer.prepare(
        request,
        key_id=KEY.kid,
        created=NOW,
        expires=NOW + timedelta(seconds=10),
        nonce="n" * 22,
        label="trm",
        tag="trm-broker/v1",
        covered_component_ids=COVERED,
        body=BODY,
    )
    signer.apply(request, prepared, KEY.sign(prepared.signature_base))
    with pytest.raises(RequestSignatureError, match="exactly created"):
        verify(list(request.headers.items()))


def test_a_digest_other_than_one_sha_256_member_is_refused() -> None:
    sha512 = "sha-512=:" + base64.b64encode(hashlib.sha512(BODY).digest()).decode() + ":"
    request = _Request("POST", URL, {"Content-Digest": sha512})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=None)
    prepared = signer.prepare(
        request,
        key_id=KEY.kid,
        created=NOW,
        nonce="n" * 22,
        label="trm",
        tag="trm-broker/v1",
        covered_component_ids=COVERED,
        use_existing_digest=True,
    )
    signer.apply(request, prepared, KEY.sign(prepared.signature_base))
    with pytest.raises(RequestSignatureError, match="one sha-256 member"):
        verify(list(request.headers.items()))


def test_the_verified_parts_are_returned_for_keeping_as_proof() -> None:
    headers = signed()
    result = verify(headers)
    assert result.signature_input == dict(headers)["Signature-Input"]
    assert result.signature == dict(headers)["Signature"]
    assert result.content_digest == dict(headers)["Content-Digest"]
    # A kept proof verifies without its body: the signature covers the digest.
    assert verify(headers, body=None).keyid == KEY.kid


# --- the whole check the broker and the nodes make: key, signature, window, nonce ------


class Nonces:
    """A nonce table in memory: what store/nonces.spend does, for the pure check."""

    def __init__(self) -> None:
        self.spent: set[tuple[str, str]] = set()

    async def spend(self, keyid: str, signed: SignedRequest, now: datetime) -> bool:
        first = (keyid, signed.nonce) not in self.spent
        self.spent.add((keyid, signed.nonce))
        return first


async def resolve(keyid: str, now: datetime) -> Ed25519PublicKey:
    if keyid != KEY.kid:
        raise VerificationError("not a registered signing key", code=Code.UNKNOWN_KEY)
    return KEY.private.public_key()


async def check(
    headers: Headers, nonces: Nonces, *, body: bytes = BODY, now: datetime = NOW
) -> Code:
    with pytest.raises(VerificationError) as raised:
        await check_signed_request(
            "POST",
            URL,
            headers,
            body,
            KEY.kid,
            now=now,
            window=WINDOW,
            resolve=resolve,
            spend=nonces.spend,
        )
    assert raised.value.kid == KEY.kid  # the key was found: an answer may name it
    return raised.value.code


async def test_a_signed_request_passes_once_and_its_replay_is_refused() -> None:
    nonces, headers = Nonces(), signed()
    signed_request = await check_signed_request(
        "POST",
        URL,
        headers,
        BODY,
        KEY.kid,
        now=NOW,
        window=WINDOW,
        resolve=resolve,
        spend=nonces.spend,
    )
    assert signed_request.keyid == KEY.kid
    assert await check(headers, nonces) is Code.REPLAYED


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"now": NOW + WINDOW + timedelta(seconds=1)}, Code.STALE),
        ({"now": NOW - WINDOW - timedelta(seconds=1)}, Code.STALE),
        ({"body": BODY + b" "}, Code.DIGEST_MISMATCH),
    ],
    ids=["too-old", "from-the-future", "body-changed"],
)
async def test_each_refusal_has_its_code(change: dict[str, Any], code: Code) -> None:
    assert await check(signed(), Nonces(), **change) is code


async def test_a_signature_outside_the_profile_is_malformed() -> None:
    headers = [
        (name, value.replace(';tag="trm-broker/v1"', ';tag="other"'))
        if name.lower() == "signature-input"
        else (name, value)
        for name, value in signed()
    ]
    assert await check(headers, Nonces()) is Code.MALFORMED


async def test_an_unknown_key_is_refused_by_the_resolver_before_any_nonce_is_spent() -> None:
    nonces = Nonces()
    with pytest.raises(VerificationError) as raised:
        await check_signed_request(
            "POST",
            URL,
            signed(),
            BODY,
            "someone-else",
            now=NOW,
            window=WINDOW,
            resolve=resolve,
            spend=nonces.spend,
        )
    assert raised.value.code is Code.UNKNOWN_KEY
    assert nonces.spent == set()
