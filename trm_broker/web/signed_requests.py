"""Both ends of a signed request (RFC 9421; the profile is in ``crypto/http_signatures.py``).

:class:`SignedRequests` is the small client class any Python caller uses: give it to
``httpx`` as ``auth`` and every request it sends is signed with the caller's key.
:func:`target_uri` is what a server compares the signed ``@target-uri`` with.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx
from fastapi import Request

from trm_broker.crypto.http_signatures import RequestSignatureError, sign_request, signature_keyid
from trm_broker.crypto.keys import SigningKey
from trm_broker.web.body import read_limited
from trm_broker.web.problems import BadSignature


class SignedRequests(httpx.Auth):
    """httpx authentication that signs each request with an Ed25519 registry key."""

    requires_request_body = True

    def __init__(self, key: SigningKey) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        for name in ("content-digest", "signature-input", "signature"):
            request.headers.pop(name, None)
        request.headers.update(
            sign_request(request.method, str(request.url), request.content, self.key)
        )
        yield request


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
    except RequestSignatureError as exc:
        raise BadSignature(f"{exc}.") from exc
    return body, lines, keyid
