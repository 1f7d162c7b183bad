"""Pre-generated requests for wrk (bench/wrk/pool.lua): each a complete HTTP/1.1 request,
signed (RFC 9421) by its sender, written once to a file and sent once.

A file is a run of records ``<length>\\n<bytes>``; wrk's threads take every n-th record.
Referrals are new cases, each under a consent of its own: :func:`consents` makes the
registrations of the consents that :func:`referrals` cite, so the consents are registered
first (the consent bench is that registration, measured).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support import projected
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.compose import compose_envelope

#: About 1 KiB of plaintext: the sealed payload is then a little over 1 KiB.
_SUMMARY = ("Fictional benchmark case; no real person. " * 23)[:900]
PAYLOAD = {
    "destination_country": "NG",
    "identification_summary": _SUMMARY,
    "form_of_exploitation": "forced_labour",
    "immediate_needs": ["shelter"],
    "languages": ["en"],
    "is_child": False,
}


def _projection() -> tuple[dict[str, Any], list[DataCategory]]:
    """The header and data categories a node computes from :data:`PAYLOAD`."""
    computed = projected(MessageType.REFERRAL, PAYLOAD, datetime.now(UTC))
    if computed is None:
        raise RuntimeError("the bench's referral payload does not conform")
    return computed


@dataclass(frozen=True)
class Pair:
    """Who sends (a focal point, its keys) and who receives (its keys, to be sealed to)."""

    sender: KeySet
    recipient: KeySet


def raw(method: str, url: str, body: bytes, content_type: str, signer: KeySet) -> bytes:
    """The request as it goes on the wire, signed as :class:`SignedRequests` signs it."""
    parts = urlsplit(url)
    headers = {
        "host": parts.netloc,
        "content-type": content_type,
        "content-length": str(len(body)),
        **sign_request(method, url, body, signer.signing),
    }
    head = f"{method} {parts.path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


def case_ref(run: str, n: int) -> str:
    return f"AT-B{run}-{n:07d}"


def consents(base: str, pair: Pair, run: str, first: int, count: int) -> Iterable[bytes]:
    """``POST /v1/consents`` of the consents cases ``first`` … ``first + count - 1`` cite."""
    valid_from = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for n in range(first, first + count):
        body = {
            "id": f"consent-{case_ref(run, n)}",
            "case_ref": case_ref(run, n),
            "given_by": "person",
            "purposes": [t.value for t in MessageType],
            "recipients": [pair.recipient.participant],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": valid_from,
            "form_digest": "sha-256:" + "A" * 43,
        }
        yield raw(
            "POST", base + "/v1/consents", canonical_json(body), "application/json", pair.sender
        )


def referrals(base: str, pair: Pair, run: str, first: int, count: int) -> Iterable[bytes]:
    """``POST /v1/messages`` of referrals, each a new case under its registered consent."""
    header, categories = _projection()
    for n in range(first, first + count):
        ref = case_ref(run, n)
        _, signed = compose_envelope(
            signing_key=pair.sender.signing,
            sender=pair.sender.participant,
            recipient=pair.recipient.participant,
            recipient_enc_kid=pair.recipient.encryption.kid,
            recipient_enc_public=pair.recipient.encryption.public_b64,
            recipient_enc_alg=pair.recipient.encryption.alg,
            type=MessageType.REFERRAL,
            case_ref=ref,
            header=header,
            payload=PAYLOAD,
            data_categories=categories,
            consent_ref=f"consent-{ref}",
            in_reply_to=None,
            now=datetime.now(UTC),
        )
        body = httpx.Request("POST", base, json=signed).content
        yield raw("POST", base + "/v1/messages", body, "application/jose+json", pair.sender)


def plain(base: str, path: str, count: int) -> Iterable[bytes]:
    """Unsigned GETs (the trivial endpoint's baseline)."""
    host = urlsplit(base).netloc
    request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    for _ in range(count):
        yield request


def write(path: Path, requests: Iterable[bytes]) -> int:
    """Write the records; their number."""
    n = 0
    with path.open("wb") as out:
        for request in requests:
            out.write(b"%d\n" % len(request))
            out.write(request)
            n += 1
    return n
