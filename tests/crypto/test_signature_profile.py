"""The written form of a request signature (crypto/signature_profile.py) is signed and checked
without the general RFC 9421 library; what is accepted or refused, and why, must not change.

Each test runs the same call twice: as the code runs it (the direct check where the request
is in the written form) and with the direct check switched off (the library alone), and
compares what comes out: the same signed fields, or the same refusal with the same words.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from trm_broker.crypto import signature_profile
from trm_broker.crypto.errors import VerificationError
from trm_broker.crypto.http_signatures import sign_request, signature_keyid, verify_request
from trm_broker.crypto.keys import SigningKey

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)

Headers = list[tuple[str, str]]

hosts = st.sampled_from(["broker.example", "127.0.0.1:8443", "b.example:80", "x-y.example"])
url_chars = st.sampled_from([*"abcXYZ09-._~!$&'()*+,;=:@/", "%2F", "%c3%a9"])
odd_chars = st.sampled_from(["%", " ", "é", "#", "\t"])  # what cannot be in a URL as sent
pieces = st.one_of(
    st.lists(url_chars, max_size=12), st.lists(st.one_of(url_chars, odd_chars), max_size=12)
)
paths = pieces.map(lambda parts: "/" + "".join(parts))
queries = st.one_of(st.just(""), pieces.map(lambda parts: "?" + "".join(parts)))
urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}{path}{query}",
    st.sampled_from(["https", "http"]),
    hosts,
    paths,
    queries,
)
methods = st.sampled_from(["POST", "GET", "DELETE", "PUT", "OPTIONS"])
bodies = st.binary(max_size=64)
nonces = st.one_of(
    st.text("ABCxyz019-_", min_size=1, max_size=70), st.sampled_from(["n o", 'a"b', "ünï"])
)


@contextmanager
def library_only() -> Iterator[None]:
    """The direct check and the direct signing switched off: the library does all."""
    with (
        mock.patch.object(signature_profile, "read", return_value=None),
        mock.patch.object(signature_profile, "params_for", return_value=None),
    ):
        yield


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except VerificationError as exc:
        return "refused", (type(exc).__name__, exc.code, str(exc))
    except ValueError as exc:  # the library's own refusal to write a field
        return "error", (type(exc).__name__, str(exc))


def both(call: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    direct = outcome(call)
    with library_only():
        library = outcome(call)
    return direct, library


def verifies(headers: Headers, method: str, url: str, body: bytes | None, now: datetime) -> Any:
    return verify_request(
        method,
        url,
        headers,
        body,
        KEY.private.public_key(),
        KEY.kid,
        now=now,
        max_age=WINDOW,
        skew=WINDOW,
    )


@given(methods, urls, bodies, st.integers(0, 2**37), nonces)
def test_signing_writes_what_the_library_writes(
    method: str, url: str, body: bytes, created: int, nonce: str
) -> None:
    when = datetime.fromtimestamp(created, UTC)
    direct, library = both(lambda: sign_request(method, url, body, KEY, created=when, nonce=nonce))
    assert direct == library  # Ed25519 is deterministic: the same fields, byte for byte


def test_our_own_requests_take_the_direct_check() -> None:
    headers = list(sign_request("POST", "https://b.example/v1/messages", b"{}", KEY).items())
    assert signature_profile.read(headers) is not None
    with mock.patch.object(signature_profile, "base", wraps=signature_profile.base) as spy:
        verify_request(
            "POST",
            "https://b.example/v1/messages",
            headers,
            b"{}",
            KEY.private.public_key(),
            KEY.kid,
            now=datetime.now(UTC),
            max_age=WINDOW,
            skew=WINDOW,
        )
    assert spy.call_count == 1
    assert signature_keyid(headers) == KEY.kid


def _replace(headers: Headers, name: str, change: Callable[[str], str]) -> Headers:
    return [(n, change(v) if n.lower() == name else v) for n, v in headers]


#: What a client (or an attacker) may change in a signed request before it is checked.
ALTERATIONS: dict[str, Callable[[Headers], Headers]] = {
    "none": lambda h: h,
    "signature-bit": lambda h: _replace(
        h, "signature", lambda v: v[:10] + ("A" if v[10] != "A" else "B") + v[11:]
    ),
    "digest-changed": lambda h: _replace(
        h, "content-digest", lambda v: "sha-256=:" + base64.b64encode(b"x" * 32).decode() + ":"
    ),
    "digest-two-members": lambda h: _replace(h, "content-digest", lambda v: v + ", md5=:AA==:"),
    "created-changed": lambda h: _replace(
        h, "signature-input", lambda v: v.replace(";created=", ";created=1")
    ),
    "other-label": lambda h: [
        (n, v.replace("trm=", "xyz=", 1) if n.lower().startswith("signature") else v) for n, v in h
    ],
    "second-signature-line": lambda h: [*h, ("Signature", "other=:AAAA:")],
    "second-input-line": lambda h: [*h, ("Signature-Input", 'other=("@method");created=1')],
    "upper-case-names": lambda h: [(n.upper(), v) for n, v in h],
    "tag-changed": lambda h: _replace(
        h, "signature-input", lambda v: v.replace("trm-broker/v1", "trm-broker/v2")
    ),
    "alg-changed": lambda h: _replace(
        h, "signature-input", lambda v: v.replace('"ed25519"', '"rsa-pss-sha512"')
    ),
    "keyid-other": lambda h: _replace(
        h, "signature-input", lambda v: v.replace(KEY.kid, OTHER.kid)
    ),
    "no-digest": lambda h: [(n, v) for n, v in h if n.lower() != "content-digest"],
    "padding-bits": lambda h: _replace(h, "signature", lambda v: v[:-4] + "B==:"),
}


@given(
    methods,
    urls,
    bodies,
    st.sampled_from(["none"] * len(ALTERATIONS) + sorted(ALTERATIONS)),
    st.one_of(st.integers(-250, 250), st.integers(-3600, 3600), st.just(-200 * 365 * 86400)),
    st.sampled_from(["same"] * 5 + ["other-method", "other-url", "other-body", "no-body"]),
    st.one_of(st.text("ABCxyz019-_", min_size=16, max_size=64), nonces),
)
@settings(max_examples=300)
@example("POST", "https://b.example/v1/messages", b"{}", "none", 0, "same", "a" * 22)
@example("POST", "https://b.example/v1/messages", b"{}", "none", 400, "same", "a" * 22)
@example("POST", "https://b.example/v1/messages", b"{}", "none", -400, "same", "a" * 22)
@example("POST", "https://b.example/v1/messages", b"{}", "none", 0, "no-body", "a" * 22)
@example(
    "POST", "https://b.example/v1/messages", b"{}", "none", -200 * 365 * 86400, "same", "a" * 22
)
@example("POST", "https://b.example/v1/messages", b"{}", "none", 0, "other-body", "a" * 22)
def test_the_direct_check_accepts_and_refuses_as_the_library_does(
    method: str,
    url: str,
    body: bytes,
    alteration: str,
    age: int,
    received: str,
    nonce: str,
) -> None:
    created = NOW - timedelta(seconds=age)
    with library_only():  # signed by the library, so a request the direct signer refuses to
        # write (odd nonces) is still checked by both
        try:
            fields = sign_request(method, url, body, KEY, created=created, nonce=nonce)
        except (VerificationError, ValueError):  # a URL or nonce nobody can sign: then one
            # that can be, checked against the URL and nonce given
            fields = sign_request(method, "https://b.example/", body, KEY, created=created)
    headers = list(fields.items())
    headers = ALTERATIONS[alteration](headers)
    as_received = {
        "same": (method, url, body),
        "other-method": ("PATCH", url, body),
        "other-url": (method, url + "x", body),
        "other-body": (method, url, body + b"!"),
        "no-body": (method, url, None),
    }[received]
    written = signature_profile.read(headers)
    event("written form" if written is not None else "another form")
    direct, library = both(lambda: verifies(headers, *as_received, NOW))
    event(f"outcome: {direct[0]}")
    assert direct == library
    keyids = both(lambda: signature_keyid(headers))
    assert keyids[0] == keyids[1]
