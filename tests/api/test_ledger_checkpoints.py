"""`GET /v1/ledger/checkpoint?size=N`: the sequencer signs one checkpoint per batch, so most
sizes are never signed; asking for one answers the first signed checkpoint covering it, and
404 (naming the latest size) only when none does yet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import PROBLEM, Broker, broker_settings, running_broker
from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto.keys import KeySet
from trm_broker.ledger.note import NoteVerifier, open_checkpoint


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path), run_sequencer=False) as b:
        yield b


async def integrate(broker: Broker) -> int:
    """Run the sequencer once, as its loop would: one batch, one signed checkpoint."""
    state = broker.app.state.broker
    await LedgerSequencer(state.sessions, state.note_signer()).run_once()
    return await size_of(broker, None)


async def size_of(broker: Broker, size: int | None) -> int:
    vkey = (await broker.client.get("/v1/broker")).json()["ledger"]["verifier_key"]
    key = NoteVerifier.from_vkey(vkey)
    query = "" if size is None else f"?size={size}"
    response = await broker.client.get(f"/v1/ledger/checkpoint{query}")
    assert response.status_code == 200, response.text
    return open_checkpoint(response.text, key, origin=key.name).size


async def test_a_size_never_signed_answers_the_first_checkpoint_covering_it(
    broker: Broker,
) -> None:
    for country in ("AT", "NG", "FR"):  # three entries, with the bootstrap's: one batch
        keyset = KeySet.generate(f"{country.lower()}.focal-point")
        assert (await broker.register(keyset, country)).status_code == 201
    first = await integrate(broker)
    assert first == 4
    assert (await broker.register(KeySet.generate("de.focal-point"), "DE")).status_code == 201
    assert (await broker.register(KeySet.generate("it.focal-point"), "IT")).status_code == 201
    second = await integrate(broker)
    assert second == 6

    # Signed sizes are 4 and 6: each size up to 6 is covered by the first one at or above.
    assert [await size_of(broker, n) for n in range(7)] == [4, 4, 4, 4, 4, 6, 6]

    response = await broker.client.get("/v1/ledger/checkpoint?size=7")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["latest_size"] == 6
    assert "latest is of size 6" in problem["detail"]
