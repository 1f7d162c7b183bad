"""Signed HTTP requests: our profile of HTTP Message Signatures (RFC 9421).

Every call to the broker other than health and the public registry, and every push from
the broker to a node's inbox, carries one signature labelled ``trm`` that covers::

    ("@method" "@target-uri" "content-digest");created=…;keyid="<kid>";alg="ed25519";
    nonce="<random>";tag="trm-broker/v1"

``content-digest`` is the RFC 9530 SHA-256 digest of the body (also of an empty body), so
the signature covers the request exactly. ``keyid`` is the registry key id (RFC 7638
thumbprint) of the caller's Ed25519 signing key. :func:`verify_request` checks the
signature, the digest and the time window; :func:`check_signed_request`, the one check the
broker and the nodes make, also looks the key up and spends the nonce through callables the
caller passes (its registry or the broker's keys; its nonce table).

The signature base and parsing come from the ``http-message-signatures`` library; this
module fixes the profile and turns every failure into a :class:`RequestSignatureError`. A
request in the one form our signers write is signed and checked by
``crypto/signature_profile.py`` instead, with the same outcome and a tenth of the work.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature as BadEd25519Signature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from trm_broker.crypto import signature_profile
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.keys import SigningKey
from trm_broker.crypto.signature_profile import COVERED, LABEL, TAG

__all__ = ["COVERED", "LABEL", "TAG"]
_PARAMS_COMPONENT = '"@signature-params"'
_PARAMETERS = frozenset({"created", "keyid", "alg", "nonce", "tag"})
_SHA256_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")
_NONCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class RequestSignatureError(VerificationError):
    """A request's signature is missing, malformed, stale, or does not verify; ``code`` says
    which (``malformed``, ``stale``, ``digest-mismatch`` or ``bad-signature``)."""


@dataclass(frozen=True)
class SignedRequest:
    """What a verified signature tells: who signed (key id), when, and its nonce; and the
    signed fields exactly as verified, to keep as proof (other labels left out)."""

    keyid: str
    created: datetime
    nonce: str
    signature_input: str = ""
    signature: str = ""
    content_digest: str = ""


class _Headers:
    """Field lines in wire order, as the library reads them (names are case-insensitive)."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self._lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self._lines = [(n, v) for n, v in self._lines if n.lower() != name.lower()]


@dataclass
class _Request:
    method: str
    url: str
    headers: _Headers


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, keyid: str, key: SigningKey | Ed25519PublicKey) -> None:
        self._keyid, self._key = keyid, key

    def resolve_private_key(self, key_id: str) -> object:
        if key_id != self._keyid or not isinstance(self._key, SigningKey):
            raise InvalidSignature("no private key for this key id")
        return self._key.private

    def resolve_public_key(self, key_id: str) -> object:
        if key_id != self._keyid or isinstance(self._key, SigningKey):
            raise InvalidSignature("the signature names another key")
        return self._key


class _Verifier(HTTPMessageVerifier):
    # The library's own clock checks are switched off (the skew is wide open): the time
    # window is checked below against the caller's clock, which tests and vectors fix.
    max_clock_skew = timedelta(days=365 * 100)


def _refusal(exc: Exception) -> RequestSignatureError:
    """A fixed explanation: the library's message may quote caller-chosen header text."""
    text = str(exc)
    if "Content-Digest" in text or "content digest" in text:
        return RequestSignatureError(
            "the Content-Digest is missing, malformed or does not match the body",
            code=Code.DIGEST_MISMATCH,
        )
    if "not covered" in text or "Required component" in text:
        return RequestSignatureError(
            "the signature must cover @method, @target-uri and content-digest",
            code=Code.MALFORMED,
        )
    if "tag" in text:
        return RequestSignatureError(
            f'the request needs one signature labelled "{LABEL}" with tag "{TAG}"',
            code=Code.MALFORMED,
        )
    return RequestSignatureError(
        "the signature does not match this request (method, target URI, body) and key",
        code=Code.BAD_SIGNATURE,
    )


def new_nonce() -> str:
    """128 random bits, base64url: unique per request, so a replay is recognisable."""
    return secrets.token_urlsafe(16)


def sign_request(
    method: str,
    url: str,
    body: bytes,
    key: SigningKey,
    *,
    created: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign a request: ``Content-Digest``, ``Signature-Input``, ``Signature``.

    ``url`` is the full target URI as the server will see it (scheme, host, path, query).
    """
    created = created or datetime.now(UTC)
    nonce = nonce or new_nonce()
    params = signature_profile.params_for(int(created.timestamp()), key.kid, nonce)
    if params is not None:
        digest = signature_profile.content_digest(body)
        base = signature_profile.base(method.upper(), url, digest, params)
        if base is not None:
            return signature_profile.fields(params, key.sign(base), digest)
    message = _Request(method.upper(), url, _Headers([]))
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(key.kid, key)
    )
    try:
        signer.sign(
            message,
            key_id=key.kid,
            created=created,
            nonce=nonce,
            label=LABEL,
            tag=TAG,
            covered_component_ids=COVERED,
            body=body,
        )
    except HTTPMessageSignaturesException as exc:
        raise RequestSignatureError(
            f"the request cannot be signed: {exc}", code=Code.MALFORMED
        ) from exc
    return dict(message.headers.items())


def signature_keyid(headers: Iterable[tuple[str, str]]) -> str | None:
    """The ``keyid`` of the ``trm`` signature, read before verifying (to look the key up).

    ``None`` when the request carries no signature at all.
    """
    lines = list(headers)
    written = signature_profile.read(lines)
    if written is not None:
        return written.keyid
    values = [v for n, v in lines if n.lower() == "signature-input"]
    if not values:
        return None
    try:
        parsed = http_sf.parse(", ".join(values).encode("ascii"), tltype="dictionary")
    except (ValueError, UnicodeEncodeError) as exc:
        raise RequestSignatureError(
            "Signature-Input is not a structured field dictionary", code=Code.MALFORMED
        ) from exc
    if not isinstance(parsed, dict) or LABEL not in parsed:
        raise RequestSignatureError(
            f'Signature-Input has no signature labelled "{LABEL}"', code=Code.MALFORMED
        )
    member: Any = parsed[LABEL]
    params = member[1] if isinstance(member, tuple) and len(member) == 2 else None
    keyid = params.get("keyid") if isinstance(params, dict) else None
    if not isinstance(keyid, str) or not keyid:
        raise RequestSignatureError('the signature has no "keyid" parameter', code=Code.MALFORMED)
    return keyid


def verify_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
    public_key: Ed25519PublicKey,
    keyid: str,
    *,
    now: datetime,
    max_age: timedelta,
    skew: timedelta,
) -> SignedRequest:
    """Verify the ``trm`` signature of a request (RFC 9421 §3.2), or raise.

    1. Parse ``Signature-Input``/``Signature``; take the one signature with our tag.
    2. It must cover ``@method``, ``@target-uri`` and ``content-digest`` (our profile), with
       exactly the parameters created, keyid, alg, nonce and tag.
    3. Rebuild the signature base (§2.5) from this request and verify it with ``public_key``.
    4. The signed ``Content-Digest`` is one SHA-256 member, and matches the body (RFC 9530
       §2); ``body=None`` checks a kept proof whose body is withheld: the signature still
       covers the digest that names it.
    5. ``created`` must lie in [now - max_age, now + skew]; a ``nonce`` must be present.
    The caller then refuses a nonce it has seen within the window (replay).
    """
    lines = list(headers)
    verified = _verified_as_written(method.upper(), url, lines, body, public_key, keyid, now + skew)
    if verified is None:
        verified = _verified_by_library(method.upper(), url, lines, body, public_key, keyid)
    return _within_profile(verified, keyid, now=now, max_age=max_age, skew=skew)


@dataclass(frozen=True)
class _Verified:
    """A signature that verified, before the profile's own checks."""

    parameters: dict[str, Any]
    params_value: str  # "@signature-params"
    content_digest: str
    nonce: str | None
    signature: bytes


def _verified_as_written(
    method: str,
    url: str,
    lines: list[tuple[str, str]],
    body: bytes | None,
    public_key: Ed25519PublicKey,
    keyid: str,
    latest: datetime,
) -> _Verified | None:
    """The check of a request in the one written form (``crypto/signature_profile.py``),
    step for step as the library makes it: the signature, then the body's digest. ``None``:
    not in that form, or created after ``latest``; the library decides."""
    written = signature_profile.read(lines)
    if written is None or written.keyid != keyid or written.created > latest.timestamp():
        return None
    base = signature_profile.base(method, url, written.content_digest, written.params)
    if base is None:
        return None
    try:
        public_key.verify(written.signature, base)
    except BadEd25519Signature as exc:
        raise _refusal(exc) from exc
    if body is not None and signature_profile.content_digest(body) != written.content_digest:
        raise _refusal(ValueError("Content-Digest does not match the body"))
    return _Verified(
        parameters={
            "created": written.created,
            "keyid": written.keyid,
            "alg": "ed25519",
            "nonce": written.nonce,
            "tag": TAG,
        },
        params_value=written.params,
        content_digest=written.content_digest,
        nonce=written.nonce,
        signature=written.signature,
    )


def _verified_by_library(
    method: str,
    url: str,
    lines: list[tuple[str, str]],
    body: bytes | None,
    public_key: Ed25519PublicKey,
    keyid: str,
) -> _Verified:
    message = _Request(method, url, _Headers(lines))
    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(keyid, public_key)
    )
    try:
        results = verifier.verify(
            message,
            max_age=None,
            expect_tag=TAG,
            expect_label=LABEL,
            require_components=COVERED,
            body=body,
        )
    except (HTTPMessageSignaturesException, ValueError, TypeError) as exc:
        raise _refusal(exc) from exc
    if len(results) != 1:
        raise RequestSignatureError(
            "exactly one signature labelled trm is expected", code=Code.MALFORMED
        )
    covered = results[0].covered_components
    return _Verified(
        parameters=dict(results[0].parameters),
        params_value=covered[_PARAMS_COMPONENT],
        content_digest=covered.get('"content-digest"', ""),
        nonce=results[0].nonce,
        signature=_signature_bytes(lines),
    )


def _within_profile(
    verified: _Verified, keyid: str, *, now: datetime, max_age: timedelta, skew: timedelta
) -> SignedRequest:
    """Steps 2, 4 and 5 of :func:`verify_request` on a signature that verified."""
    params = verified.parameters
    if set(params) != _PARAMETERS:
        raise RequestSignatureError(
            "the signature's parameters must be exactly created, keyid, alg, nonce and tag",
            code=Code.MALFORMED,
        )
    if params.get("keyid") != keyid or params.get("alg") != "ed25519":
        raise RequestSignatureError(
            "the signature names another key or algorithm", code=Code.MALFORMED
        )
    digest = verified.content_digest
    if not _SHA256_DIGEST.fullmatch(digest):
        raise RequestSignatureError(
            "the Content-Digest must be one sha-256 member", code=Code.MALFORMED
        )
    created = params.get("created")
    if not isinstance(created, int):
        raise RequestSignatureError('the signature has no "created" time', code=Code.MALFORMED)
    created_at = datetime.fromtimestamp(created, UTC)
    if created_at > now + skew:
        raise RequestSignatureError(
            "the signature's created time is in the future; check the signer's clock",
            code=Code.STALE,
        )
    if created_at < now - max_age:
        raise RequestSignatureError(
            "the signature is too old; sign each request when sending", code=Code.STALE
        )
    nonce = verified.nonce
    if not nonce or not 16 <= len(nonce) <= 64 or not set(nonce) <= _NONCE_CHARS:
        raise RequestSignatureError(
            "the signature needs a nonce of 16-64 base64url characters", code=Code.MALFORMED
        )
    return SignedRequest(
        keyid=keyid,
        created=created_at,
        nonce=nonce,
        signature_input=f"{LABEL}={verified.params_value}",
        signature=f"{LABEL}=:{base64.b64encode(verified.signature).decode('ascii')}:",
        content_digest=digest,
    )


#: The signer's public key for ``keyid``, if it may sign requests at ``now``; otherwise a
#: :class:`VerificationError` (``unknown-key``, ``key-not-usable``, ``not-broker-key``).
KeyResolver = Callable[[str, datetime], Awaitable[Ed25519PublicKey]]
#: Spends a verified request's nonce (``store/nonces.spend``); ``False``: spent before.
NonceSpender = Callable[[str, SignedRequest, datetime], Awaitable[bool]]


async def check_signed_request(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    keyid: str,
    *,
    now: datetime,
    window: timedelta,
    resolve: KeyResolver,
    spend: NonceSpender,
) -> SignedRequest:
    """The whole check of a signed request, as the broker and a node make it.

    1. ``resolve`` the key named by ``keyid``: registered (or the broker's), usable now.
    2. :func:`verify_request` with the window on both sides of ``now``.
    3. ``spend`` the nonce: one seen before within the window is a replay (RFC 9421 §7.2.2).
    Every refusal is a :class:`RequestSignatureError` with its code; once the key is known
    its ``kid`` is set, so an answer may name it.
    """
    public = await resolve(keyid, now)
    try:
        signed = verify_request(
            method, url, headers, body, public, keyid, now=now, max_age=window, skew=window
        )
    except VerificationError as exc:
        raise RequestSignatureError(str(exc), code=exc.code, kid=keyid) from exc
    if not await spend(keyid, signed, now):
        raise RequestSignatureError(
            "This signed request was already received; sign every request afresh.",
            code=Code.REPLAYED,
            kid=keyid,
        )
    return signed


def _signature_bytes(lines: list[tuple[str, str]]) -> bytes:
    """The ``trm`` member of the Signature field (already verified)."""
    values = [v for n, v in lines if n.lower() == "signature"]
    parsed: Any = http_sf.parse(", ".join(values).encode("ascii"), tltype="dictionary")
    return bytes(parsed[LABEL][0])
