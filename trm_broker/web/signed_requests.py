"""The client's end of a signed request (RFC 9421; the profile is in
``crypto/http_signatures.py``).

:class:`SignedRequests` is the small client class any Python caller uses: give it to
``httpx`` as ``auth`` and every request it sends is signed with the caller's key. The
receiver's end is ``web/signed_request_check.py``; this module imports no server code, so
the command-line tools that sign their calls start without loading it.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import SigningKey


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
