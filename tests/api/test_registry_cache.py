"""The broker caches the registry's rows, and no change waits for the cache: a key revoked by
anyone (another broker process, the CLI, SQL by hand) is refused from the very next request,
because every request first reads the registry's version, which database triggers move
with every change of participants and keys (store/registry_cache.py, migration 0010)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.store.database import create_engine
from trm_broker.store.models import Participant, ParticipantKey, RegistryVersion

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        assert (await b.register(AT, "AT")).status_code == 201
        assert (await b.register(NG, "NG")).status_code == 201
        yield b


async def elsewhere(database_url: str, statement: str, **values: object) -> None:
    """A change committed through another connection pool, as another broker process or the
    CLI makes it: this broker's process knows nothing of it but what the database says."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), values)
    finally:
        await engine.dispose()


async def test_a_signing_key_revoked_elsewhere_is_refused_on_the_next_request(
    broker: Broker, database_url: str
) -> None:
    for _ in range(2):  # the key and its participant are cached now
        assert (await broker.submit(referral(AT, NG))).status_code == 202

    await elsewhere(
        database_url,
        "UPDATE participant_keys SET revoked_at = :at WHERE kid = :kid",
        at=datetime.now(UTC),
        kid=AT.signing.kid,
    )
    refused = await broker.submit(referral(AT, NG))
    assert refused.status_code == 401, refused.text
    assert refused.json()["type"].endswith(":key-not-usable")
    assert await broker.stored_counts() == (2, 2)


async def test_an_encryption_key_revoked_elsewhere_is_refused_on_the_next_message(
    broker: Broker, database_url: str
) -> None:
    assert (await broker.submit(referral(AT, NG))).status_code == 202
    await elsewhere(
        database_url,
        "UPDATE participant_keys SET revoked_at = :at WHERE kid = :kid",
        at=datetime.now(UTC),
        kid=NG.encryption.kid,
    )
    refused = await broker.submit(referral(AT, NG))
    assert refused.status_code == 400, refused.text
    assert "current encryption key" in refused.json()["detail"]
    assert await broker.stored_counts() == (1, 1)


async def test_a_participant_changed_elsewhere_is_read_again(
    broker: Broker, database_url: str
) -> None:
    """Not only keys: a participant's kind (who may send case messages) too."""
    assert (await broker.submit(referral(AT, NG))).status_code == 202
    await elsewhere(
        database_url, "UPDATE participants SET kind = 'auditor' WHERE id = :id", id=NG.participant
    )
    refused = await broker.submit(referral(AT, NG))
    assert refused.status_code == 400, refused.text
    assert "does not receive case messages" in refused.json()["detail"]


async def test_every_change_of_the_registry_moves_its_version(database_url: str) -> None:
    """The triggers, on both backends: inserts, updates and deletes of either table."""
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    version = select(RegistryVersion.version).where(RegistryVersion.id == 1)
    changes = [
        insert(Participant).values(id="p.one", kind="focal_point", country="AT", created_at=now),
        insert(ParticipantKey).values(
            kid="k.one",
            participant_id="p.one",
            use="sig",
            alg="Ed25519",
            public_key="x",
            valid_from=now,
        ),
        update(ParticipantKey).where(ParticipantKey.kid == "k.one").values(revoked_at=now),
        update(Participant).where(Participant.id == "p.one").values(country="NG"),
        delete(ParticipantKey).where(ParticipantKey.kid == "k.one"),
        delete(Participant).where(Participant.id == "p.one"),
    ]
    try:
        seen = []
        for change in changes:
            async with engine.begin() as connection:
                await connection.execute(change)
            async with engine.connect() as connection:
                seen.append((await connection.execute(version)).scalar_one())
    finally:
        await engine.dispose()
    assert seen == sorted(set(seen)), seen  # moved by every change
