"""In-process broker for API tests, and helpers to build signed envelopes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.databases import copy_sqlite, process_node_sqlite_template
from trm_broker.api.app import create_app
from trm_broker.api.participants.service import bootstrap_operator
from trm_broker.crypto import jws, key_statements
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.payloads import check_payload, read_payload
from trm_broker.domain.projections import project
from trm_broker.domain.times import rfc3339
from trm_broker.node.app import create_node_app
from trm_broker.node.compose import compose_envelope
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine
from trm_broker.store.models import Delivery, Message
from trm_broker.web.signed_requests import SignedRequests

PROBLEM = "application/problem+json"
OPERATOR_ID = "operator.test"

#: How long a test waits for what happens in the background (the sequencer, a dispatcher,
#: a purge, a puller) before it fails. Generous, because a loaded machine is slow; a test
#: that passes waits only as long as the thing takes.
WAIT_SECONDS = 60.0


async def polling(timeout: float = WAIT_SECONDS, interval: float = 0.05) -> AsyncIterator[int]:
    """Rounds of a poll for ``timeout`` seconds of wall clock (not a count of rounds, whose
    length depends on the machine): ``async for _ in polling(): if done(): break``, then
    assert the condition after the loop, so a timeout fails with the test's own message."""
    deadline = time.monotonic() + timeout
    round_ = 0
    while True:
        yield round_
        round_ += 1
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval)


@dataclass
class Broker:
    """An in-process broker with its first operator bootstrapped.

    ``client`` sends requests as they are (unsigned unless a test signs them); ``call``
    signs them with a key. ``keysets`` remembers every key set registered through
    ``register``, so ``submit`` can sign as the envelope's sender by default.
    """

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    operator: KeySet
    keysets: dict[str, KeySet] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    consents: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    #: Register the consent a test's referral cites before sending it (off: tests of consent).
    auto_consent: bool = True

    async def call(
        self, method: str, path: str, signer: KeySet | SigningKey | None, **kwargs: Any
    ) -> httpx.Response:
        """A request signed (RFC 9421) with ``signer``'s key; ``None``: unsigned."""
        key = signer.signing if isinstance(signer, KeySet) else signer
        auth = SignedRequests(key) if key is not None else None
        return await self.client.request(
            method, path, auth=auth or httpx.USE_CLIENT_DEFAULT, **kwargs
        )

    async def register(
        self,
        keyset: KeySet,
        country: str,
        *,
        kind: str = "focal_point",
        inbox_url: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "id": keyset.participant,
            "kind": kind,
            "country": country,
            "keys": keyset.public(),
            # The operator's statement of each key: what a node that pins the operator's
            # key checks each registry key against.
            "statements": key_statements.for_key_set(
                self.operator.signing, keyset.participant, keyset.public(), datetime.now(UTC)
            ),
        }
        if inbox_url:
            body["inbox_url"] = inbox_url
        self.keysets[keyset.participant] = keyset
        self.kinds[keyset.participant] = kind
        return await self.call("POST", "/v1/participants", self.operator, json=body)

    async def submit(
        self,
        envelope: dict[str, str] | bytes,
        signer: KeySet | SigningKey | Literal["sender"] | None = "sender",
    ) -> httpx.Response:
        """POST an envelope, by default in a request signed by the envelope's sender."""
        content = (
            envelope
            if isinstance(envelope, bytes)
            else httpx.Request("POST", "/", json=envelope).content
        )
        key = (
            self.keysets.get(_declared_sender(envelope)) or next(iter(self.keysets.values()), None)
            if signer == "sender"
            else signer
        )
        await self._consent_for(envelope)
        return await self.call(
            "POST",
            "/v1/messages",
            key,
            content=content,
            headers={"content-type": "application/jose+json"},
        )

    async def _consent_for(self, envelope: dict[str, str] | bytes) -> None:
        """Register, as its sender, the consent a test's envelope cites, the first time: one
        that covers every type and category of data going to its recipient."""
        claims = _declared_claims(envelope)
        consent_ref, sender = claims.get("consent_ref"), claims.get("sender")
        if not self.auto_consent or not consent_ref or sender not in self.keysets:
            return
        if self.kinds.get(sender) != "focal_point" or claims.get("type") != "referral":
            return
        if consent_ref not in self.consents:
            self.consents[consent_ref] = asyncio.ensure_future(
                self._register_consent(consent_ref, sender, claims)
            )
        await self.consents[consent_ref]

    async def _register_consent(
        self, consent_ref: str, sender: str, claims: dict[str, Any]
    ) -> None:
        minor = bool(claims.get("header", {}).get("subject_is_minor"))
        body = {
            "id": consent_ref,
            "case_ref": claims["case_ref"],
            "given_by": "guardian" if minor else "person",
            "purposes": [t.value for t in MessageType],
            "recipients": [claims["recipient"]],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "A" * 43,
        }
        await self.call("POST", "/v1/consents", self.keysets[sender], json=body)

    def signed_answer(
        self,
        envelope: dict[str, str],
        *,
        status: Literal["received", "rejected"] = "received",
        reasons: list[str] | None = None,
        code: str | None = None,
    ) -> dict[str, str]:
        """The answer its recipient's node signs to an envelope: an acknowledgement, or a
        rejection with ``reasons`` and ``code``."""
        claims = _declared_claims(envelope)
        answer: dict[str, Any] = {
            "v": 1,
            "message_id": claims["id"],
            "envelope_digest": jws.digest(envelope),
            "recipient": claims["recipient"],
            "received_at": rfc3339(datetime.now(UTC)),
            "status": status,
        }
        if status == "rejected":
            answer["reasons"] = reasons or ["payload: does not conform"]
        if code is not None:
            answer["code"] = code
        return jws.sign(answer, self.keysets[claims["recipient"]].signing, jws.TYP_ACK)

    async def answer(
        self,
        envelope: dict[str, str],
        *,
        status: Literal["received", "rejected"] = "received",
        reasons: list[str] | None = None,
        code: str | None = None,
    ) -> httpx.Response:
        """Answer an accepted envelope as its recipient's node does, through the pull inbox
        (:meth:`signed_answer`)."""
        claims = _declared_claims(envelope)
        signed = self.signed_answer(envelope, status=status, reasons=reasons, code=code)
        return await self.call(
            "POST",
            f"/v1/inbox/{claims['id']}/ack",
            self.keysets[claims["recipient"]],
            json={"ack": signed},
        )

    async def acknowledge(self, envelope: dict[str, str]) -> None:
        """The recipient's node acknowledges the envelope (its facts now count)."""
        response = await self.answer(envelope)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "acknowledged", response.text

    async def status(self, message_id: str, signer: KeySet | None) -> httpx.Response:
        return await self.call("GET", f"/v1/messages/{message_id}", signer)

    async def stored_counts(self) -> tuple[int, int]:
        """How many messages and deliveries the broker's database holds."""
        engine = create_engine(self.settings.database_url)
        try:
            async with engine.connect() as connection:
                messages = (
                    await connection.execute(select(func.count()).select_from(Message))
                ).scalar_one()
                deliveries = (
                    await connection.execute(select(func.count()).select_from(Delivery))
                ).scalar_one()
        finally:
            await engine.dispose()
        return messages, deliveries


def broker_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_key_file": tmp_path / "broker-key.json",
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_broker(
    settings: Settings,
    *,
    run_dispatcher: bool = False,
    run_sequencer: bool = True,
    **app_options: Any,
) -> AsyncIterator[Broker]:
    """A broker app run in-process; ``app_options`` go to ``create_app``."""
    app = create_app(
        settings, run_dispatcher=run_dispatcher, run_sequencer=run_sequencer, **app_options
    )
    async with app.router.lifespan_context(app):
        operator = KeySet.generate(OPERATOR_ID)
        async with app.state.broker.sessions() as session:
            await bootstrap_operator(
                session, OPERATOR_ID, "AT", operator.public(), datetime.now(UTC)
            )
            await session.commit()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            yield Broker(app, client, settings, operator)


def _declared_claims(envelope: dict[str, str] | bytes) -> dict[str, Any]:
    """What an envelope claims, read without verifying (tests only)."""
    try:
        obj = json.loads(envelope) if isinstance(envelope, bytes) else envelope
        claims = json.loads(b64url_decode(obj["payload"]))
        return claims if isinstance(claims, dict) else {}
    except (ValueError, KeyError, TypeError, MalformedError):
        return {}


def _declared_sender(envelope: dict[str, str] | bytes) -> str:
    return str(_declared_claims(envelope).get("sender", ""))


def projected(
    type: MessageType, payload: dict[str, Any], now: datetime
) -> tuple[dict[str, Any], list[DataCategory]] | None:
    """The header and data categories a node computes from ``payload`` for a message made
    ``now``, or None if the payload does not conform to its type's schema."""
    text = json.dumps(payload)
    if check_payload(type, text):
        return None
    projection = project(type, read_payload(type, text), now)
    return projection.header_json(), sorted(projection.data_categories)


def referral(
    sender: KeySet,
    recipient: KeySet,
    *,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    message_id: str | None = None,
    case_ref: str | None = None,
    destination_country: str = "NG",
    consent_ref: str | None = "",
    header: dict[str, Any] | None = None,
    data_categories: list[DataCategory] | None = None,
) -> dict[str, str]:
    """A signed referral envelope from ``sender`` sealed to ``recipient``: a new case (its
    own case reference) under the consent ``consent-<case_ref>`` unless told otherwise
    (``consent_ref=None``: none). ``Broker.submit`` registers that consent first.

    Its header and data categories are those a node computes from the payload, unless given
    (a sender that lies) or the payload does not conform (a plain adult's referral then)."""
    case_ref = case_ref or f"AT-{uuid.uuid4().hex[:12]}"
    now = now or datetime.now(UTC)
    if payload is None:  # identity data, as the tests' consents cover
        payload = {"destination_country": destination_country, "languages": ["en"]}
    computed = projected(MessageType.REFERRAL, payload, now) or (
        {"destination_country": destination_country, "subject_is_minor": False},
        [DataCategory.IDENTITY],
    )
    _, signed = compose_envelope(
        signing_key=sender.signing,
        sender=sender.participant,
        recipient=recipient.participant,
        recipient_enc_kid=recipient.encryption.kid,
        recipient_enc_public=recipient.encryption.public_b64,
        recipient_enc_alg=recipient.encryption.alg,
        type=MessageType.REFERRAL,
        case_ref=case_ref,
        header=computed[0] if header is None else header,
        payload=payload,
        data_categories=computed[1] if data_categories is None else data_categories,
        consent_ref=f"consent-{case_ref}" if consent_ref == "" else consent_ref,
        in_reply_to=None,
        now=now,
        message_id=message_id,
    )
    return signed


def envelope(
    sender: KeySet,
    recipient: KeySet,
    type: MessageType,
    header: dict[str, Any] | None,
    *,
    case_ref: str,
    consent_ref: str | None,
    data_categories: list[DataCategory] | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """A signed envelope of any type from ``sender`` sealed to ``recipient``.

    ``header=None`` (and ``data_categories=None``): those a node computes from ``payload``,
    which must then conform to its type's schema. A header given is signed as it is, for
    the broker's tests, which see headers only; data categories left out are then the
    payload's, or ``other`` if it does not conform."""
    now = now or datetime.now(UTC)
    payload = payload or {}
    computed = projected(type, payload, now)
    if header is None:
        assert computed is not None, f"a {type.value} payload that does not conform"
        header = computed[0]
    if data_categories is None:
        data_categories = computed[1] if computed is not None else [DataCategory.OTHER]
    _, signed = compose_envelope(
        signing_key=sender.signing,
        sender=sender.participant,
        recipient=recipient.participant,
        recipient_enc_kid=recipient.encryption.kid,
        recipient_enc_public=recipient.encryption.public_b64,
        recipient_enc_alg=recipient.encryption.alg,
        type=type,
        case_ref=case_ref,
        header=header,
        payload=payload,
        data_categories=data_categories,
        consent_ref=consent_ref,
        in_reply_to=None,
        now=now,
    )
    return signed


#: What the test clients of a node send by default: wait for the broker's receipt or refusal
#: of each message sent (RFC 7240), so that a send answers as a synchronous one (201 and the
#: receipt, or the broker's refusal). Without it a send answers 202 queued.
WAIT_FOR_RECEIPT = {"prefer": "wait=30"}


@asynccontextmanager
async def running_node(
    tmp_path: Path,
    key_files: list[Path],
    broker: httpx.AsyncClient,
    api_token: str,
    *,
    wait_for_receipt: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process node, reaching the broker through ``broker``; its own SQLite file. The
    client sends ``Prefer: wait=30`` on every request unless ``wait_for_receipt`` is off."""
    database = tmp_path / "node.db"
    if not database.exists():  # a node migrates a new file at start; a copy is quicker
        copy_sqlite(process_node_sqlite_template(), database)
    settings = Settings(
        node_database_url=f"sqlite+aiosqlite:///{database}",
        node_key_files=key_files,
        node_api_token=api_token,
        node_broker_url="http://broker",
    )
    node = create_node_app(settings, broker_http=broker)
    async with (
        node.router.lifespan_context(node),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node),
            base_url="http://node",
            headers=WAIT_FOR_RECEIPT if wait_for_receipt else None,
        ) as client,
    ):
        yield client
