"""What one accepted message costs the database: a fixed, small number of statements in one
transaction with one commit (issue 21). Counted, not timed: the statements the broker sends
for one request, on both backends; the throughput itself is measured by `make bench`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.delivery import outcomes
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store import messages

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")

#: An accepted referral (a new case under a registered consent), once the broker has seen
#: its sender: the registry version check, the message's reads (an earlier message with
#: its id, the case, the consent: one statement), the nonce, and its writes (message,
#: delivery, ledger entry, case). Before issue 21 it was 15 statements and 2 commits. On
#: PostgreSQL the ledger entry, message and delivery are one statement.
REFERRAL_STATEMENTS = {"sqlite": 7, "postgresql": 5}


@dataclass
class Cost:
    statements: list[str] = field(default_factory=list)
    commits: int = 0


@contextmanager
def counted(broker: Broker) -> Iterator[Cost]:
    """Every statement and commit the broker's engine runs inside the block."""
    engine = broker.app.state.broker.engine.sync_engine
    cost = Cost()

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        cost.statements.append(sql.split(None, 1)[0].upper())

    def commit(conn: Any) -> None:
        cost.commits += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield cost
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    # No background loop: only the request's own statements are counted.
    async with running_broker(broker_settings(database_url, tmp_path), run_sequencer=False) as b:
        assert (await b.register(AT, "AT")).status_code == 201
        assert (await b.register(NG, "NG")).status_code == 201
        yield b


async def test_an_accepted_referral_costs_few_statements_and_one_commit(broker: Broker) -> None:
    first = referral(AT, NG)
    assert (await broker.submit(first)).status_code == 202  # the sender's first message
    envelope = referral(AT, NG)
    await broker._consent_for(envelope)  # its consent, registered beforehand
    with counted(broker) as cost:
        response = await broker.submit(envelope)
    assert response.status_code == 202, response.text
    print(cost.statements, cost.commits)
    assert cost.commits == 1
    dialect = broker.app.state.broker.engine.dialect.name
    assert len(cost.statements) <= REFERRAL_STATEMENTS[dialect], cost.statements


#: Recording a recipient's acknowledgement of a referral: the delivery's UPDATE, its
#: message with the parties' countries (one query), the ledger entry, the case's state (an
#: acknowledged referral leaves it as it is: no write), whether the case has an open
#: dead-letter alert. It was 6 before the countries came with the message.
ANSWER_STATEMENTS = 5


async def test_recording_an_acknowledgement_costs_few_statements(broker: Broker) -> None:
    envelope = referral(AT, NG)
    await broker._consent_for(envelope)
    response = await broker.submit(envelope)
    assert response.status_code == 202, response.text
    message_id = response.json()["message_id"]
    signed = broker.signed_answer(envelope)
    claims = AckClaims.model_validate(jws.parse(signed, jws.TYP_ACK).claims())
    async with broker.app.state.broker.sessions() as session:
        delivery = await messages.delivery_of(session, message_id)
        assert delivery is not None
        await session.commit()
        with counted(broker) as cost:
            recorded = await outcomes.record_answer(
                session, delivery.id, message_id, signed, claims, 1, datetime.now(UTC)
            )
            await session.commit()
    assert recorded
    assert cost.commits == 1
    assert len(cost.statements) <= ANSWER_STATEMENTS, cost.statements
    status = await broker.call("GET", f"/v1/messages/{message_id}", AT)
    assert status.json()["status"] == "acknowledged"
