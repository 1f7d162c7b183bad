"""The receiver's end of a signed request (RFC 9421; the profile is in
``crypto/http_signatures.py``; the client's end is ``web/signed_requests.py``).

:func:`verify_signed_request` is the one check a receiver makes, the broker of every
signed call and a node of the broker's pushes alike; :func:`target_uri` is what it
compares the signed ``@target-uri`` with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request

from trm_broker.crypto.errors import VerificationError
from trm_broker.crypto.http_signatures import (
    KeyResolver,
    NonceSpender,
    SignedRequest,
    check_signed_request,
    signature_keyid,
)
from trm_broker.web.body import read_limited
from trm_broker.web.problems import Unauthenticated
from trm_broker.web.refusals import request_problem


def target_uri(request: Request, public_url: str | None) -> str:
    """The URI the caller addressed, its path and query exactly as sent (percent-encoding
    and all: RFC 9421 signs the target URI, not a decoded and re-encoded one). Behind a
    reverse proxy, the configured public base URL replaces scheme and host, since the
    proxy may rewrite both."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    base = public_url.rstrip("/") if public_url else f"{request.url.scheme}://{request.url.netloc}"
    return base + path + (f"?{query}" if query else "")


def header_lines(request: Request) -> list[tuple[str, str]]:
    """The request's field lines in wire order (RFC 9421 reads repeated fields in order)."""
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
    ]


async def signed_parts(
    request: Request, limit: int
) -> tuple[bytes, list[tuple[str, str]], str | None]:
    """What a receiver verifies: the body (bounded: 413 before any parsing), the field lines,
    and the ``keyid`` of the ``trm`` signature (``None``: the request is not signed)."""
    body = await read_limited(request, limit)
    lines = header_lines(request)
    try:
        keyid = signature_keyid(lines)
    except VerificationError as exc:
        raise request_problem(exc) from exc
    return body, lines, keyid


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose ``trm`` signature verified and whose nonce is now spent."""

    keyid: str
    target_uri: str
    body: bytes
    signed: SignedRequest


async def verify_signed_request(
    request: Request,
    *,
    limit: int,
    public_url: str | None,
    window: timedelta,
    resolve: KeyResolver,
    spend: NonceSpender,
    unsigned: str,
) -> VerifiedRequest:
    """Authenticate a request by its ``trm`` signature, then spend its nonce.

    1. Read the body (bounded: 413 before any parsing) and the signature's key id; no
       signature at all is 401 ``unauthenticated`` with the ``unsigned`` detail.
    2. ``resolve`` the key, verify signature, content digest and time window, and spend
       the nonce (``crypto.http_signatures.check_signed_request``).
    Every refusal is answered from the one table (web/refusals.py). The caller commits the
    spent nonce before any endpoint work, so it stays spent even if the call then fails.
    """
    body, lines, keyid = await signed_parts(request, limit)
    if keyid is None:
        raise Unauthenticated(unsigned)
    uri = target_uri(request, public_url)
    try:
        signed = await check_signed_request(
            request.method,
            uri,
            lines,
            body,
            keyid,
            now=datetime.now(UTC),
            window=window,
            resolve=resolve,
            spend=spend,
        )
    except VerificationError as exc:
        raise request_problem(exc) from exc
    return VerifiedRequest(keyid=keyid, target_uri=uri, body=body, signed=signed)
