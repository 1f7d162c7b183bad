"""In-process broker for API tests, and helpers to build signed envelopes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from trm_broker.api.app import create_app
from trm_broker.api.participants.service import bootstrap_operator
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.app import create_node_app
from trm_broker.node.compose import compose_envelope
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine
from trm_broker.store.models import Delivery, Message
from trm_broker.web.signed_requests import SignedRequests

PROBLEM = "application/problem+json"
OPERATOR_ID = "operator.test"


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
        }
        if inbox_url:
            body["inbox_url"] = inbox_url
        self.keysets[keyset.participant] = keyset
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
        return await self.call(
            "POST",
            "/v1/messages",
            key,
            content=content,
            headers={"content-type": "application/jose+json"},
        )

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
    settings: Settings, *, run_dispatcher: bool = False, run_sequencer: bool = True
) -> AsyncIterator[Broker]:
    app = create_app(settings, run_dispatcher=run_dispatcher, run_sequencer=run_sequencer)
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


def _declared_sender(envelope: dict[str, str] | bytes) -> str:
    """The ``sender`` an envelope claims, read without verifying (tests only)."""
    try:
        obj = json.loads(envelope) if isinstance(envelope, bytes) else envelope
        return str(json.loads(b64url_decode(obj["payload"]))["sender"])
    except (ValueError, KeyError, TypeError, MalformedError):
        return ""


def referral(
    sender: KeySet,
    recipient: KeySet,
    *,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    message_id: str | None = None,
    case_ref: str = "AT-2026-0001",
) -> dict[str, str]:
    """A signed referral envelope from ``sender`` sealed to ``recipient``."""
    _, signed = compose_envelope(
        signing_key=sender.signing,
        sender=sender.participant,
        recipient=recipient.participant,
        recipient_enc_kid=recipient.encryption.kid,
        recipient_enc_public=recipient.encryption.public_b64,
        recipient_enc_alg=recipient.encryption.alg,
        type=MessageType.REFERRAL,
        case_ref=case_ref,
        header={"destination_country": "NG", "subject_is_minor": False},
        payload=payload or {"form_of_exploitation": "forced_labour"},
        data_categories=[DataCategory.IDENTITY],
        consent_ref=None,
        in_reply_to=None,
        now=now or datetime.now(UTC),
        message_id=message_id,
    )
    return signed


@asynccontextmanager
async def running_node(
    tmp_path: Path, key_files: list[Path], broker: httpx.AsyncClient, api_token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process node, reaching the broker through ``broker``; its own SQLite file."""
    settings = Settings(
        node_database_url=f"sqlite+aiosqlite:///{tmp_path / 'node.db'}",
        node_key_files=key_files,
        node_api_token=api_token,
        node_broker_url="http://broker",
    )
    node = create_node_app(settings, broker_http=broker)
    async with (
        node.router.lifespan_context(node),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node), base_url="http://node"
        ) as client,
    ):
        yield client
