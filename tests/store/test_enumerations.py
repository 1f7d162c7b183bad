"""Stored enumerations: every column that holds an enumeration's value has, after the
migrations, the CHECK constraint its model declares; the database itself refuses a value
outside it; and the values read back are the domain's members, stored as the same strings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import Base, Participant, ParticipantKey

#: Every enumerated column the models declare: ``ck_<table>_<column>``.
ENUM_COLUMNS = sorted(
    (table.name, column.name)
    for table in Base.metadata.sorted_tables
    for column in table.columns
    if isinstance(column.type, sa.Enum)
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def test_the_enumerations_named_in_the_issue_are_stored_as_such() -> None:
    for column in [
        ("participants", "kind"),
        ("participant_keys", "use"),
        ("messages", "type"),
        ("deliveries", "status"),
    ]:
        assert column in ENUM_COLUMNS


async def test_the_migrations_create_every_check_the_models_declare(engine: AsyncEngine) -> None:
    def checks(connection: sa.Connection) -> set[tuple[str, str]]:
        inspector = sa.inspect(connection)
        return {
            (table, str(check["name"]))
            for table in {table for table, _ in ENUM_COLUMNS}
            for check in inspector.get_check_constraints(table)
        }

    async with engine.connect() as connection:
        found = await connection.run_sync(checks)
    assert {(table, f"ck_{table}_{column}") for table, column in ENUM_COLUMNS} <= found


async def test_the_database_refuses_a_value_outside_the_enumeration(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    insert = sa.text(
        "INSERT INTO participants (id, kind, country, created_at) VALUES (:id, :kind, 'AT', :at)"
    )
    async with engine.begin() as connection:
        await connection.execute(insert, {"id": "at.good", "kind": "focal_point", "at": now})
    # Written by hand, past the models' own validation: the CHECK is the database's.
    with pytest.raises(sa.exc.IntegrityError, match=r"ck_participants_kind|CHECK constraint"):
        async with engine.begin() as connection:
            await connection.execute(insert, {"id": "at.bad", "kind": "focal-point", "at": now})
    with pytest.raises(sa.exc.IntegrityError, match=r"ck_participant_keys_use|CHECK constraint"):
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO participant_keys (kid, participant_id, use, alg, public_key,"
                    " valid_from) VALUES ('k1', 'at.good', 'sgn', 'Ed25519', 'x', :at)"
                ),
                {"at": now},
            )


async def test_members_are_stored_as_their_strings_and_read_back_as_members(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    async with session_factory(engine)() as session:
        session.add(
            Participant(
                id="ng.naptip", kind=ParticipantKind.FOCAL_POINT, country="NG", created_at=now
            )
        )
        await session.flush()
        session.add(
            ParticipantKey(
                kid="k2",
                participant_id="ng.naptip",
                use=KeyUse.ENC,
                alg="X25519",
                public_key="x",
                valid_from=now,
            )
        )
        await session.commit()
    async with engine.connect() as connection:
        raw: Any = (
            await connection.execute(
                sa.text(
                    "SELECT p.kind, k.use FROM participants p"
                    " JOIN participant_keys k ON k.participant_id = p.id"
                )
            )
        ).one()
    assert tuple(raw) == ("focal_point", "enc")
    async with session_factory(engine)() as session:
        key = await session.get(ParticipantKey, "k2")
        participant = await session.get(Participant, "ng.naptip")
    assert key is not None
    assert participant is not None
    assert key.use is KeyUse.ENC
    assert participant.kind is ParticipantKind.FOCAL_POINT
