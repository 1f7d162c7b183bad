"""In-process broker for API tests, and helpers to build signed envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from trm_broker.api.app import create_app
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.app import create_node_app
from trm_broker.node.compose import compose_envelope
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine
from trm_broker.store.models import Delivery, Message

OPERATOR_TOKEN = "test-operator-token"
PROBLEM = "application/problem+json"


@dataclass
class Broker:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

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
        return await self.client.post(
            "/v1/participants", json=body, headers={"authorization": f"Bearer {OPERATOR_TOKEN}"}
        )

    async def submit(self, envelope: dict[str, str] | bytes) -> httpx.Response:
        content = (
            envelope
            if isinstance(envelope, bytes)
            else httpx.Request("POST", "/", json=envelope).content
        )
        return await self.client.post(
            "/v1/messages", content=content, headers={"content-type": "application/jose+json"}
        )

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
        "operator_token": OPERATOR_TOKEN,
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_broker(
    settings: Settings, *, run_dispatcher: bool = False
) -> AsyncIterator[Broker]:
    app = create_app(settings, run_dispatcher=run_dispatcher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
            yield Broker(app, client, settings)


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
