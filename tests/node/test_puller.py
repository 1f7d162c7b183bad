"""Pull mode (docs/design.md §8): a node whose participant has no inbox URL fetches its messages
from the broker's `GET /v1/inbox`, stores each once, and acknowledges it only after that."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import node_settings, rows, running_node
from tests.support import WAIT_SECONDS, Broker, broker_settings, referral, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.logs import configure_logging
from trm_broker.node.puller import backoff
from trm_broker.node.store import ReceivedMessage, RejectedMessage
from trm_broker.settings import Settings

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
CANARY = "CANARY3PULLQ"
CONFORMING: dict[str, Any] = {
    "destination_country": "NG",
    "form_of_exploitation": "forced_labour",
    "notes": CANARY,
}
NON_CONFORMING: dict[str, Any] = {**CONFORMING, CANARY: CANARY}


class FaultyBroker(httpx.AsyncBaseTransport):
    """The broker's app as the node reaches it, with faults to inject on the way."""

    def __init__(self, broker: Broker) -> None:
        self._inner = httpx.ASGITransport(app=broker.app)
        self.down_fetches = 0  # so many next fetches fail to connect
        self.failing_acks = 0  # so many next acks get a 500, unseen by the broker
        self.refusing_acks = False  # acks get a 422, as an ack that does not verify would
        self.bad_receipts: set[str] = set()  # message ids whose receipt arrives forged
        self.fetches = 0
        self.acks: list[tuple[str, bytes]] = []  # (message id, body) of every ack sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/v1/inbox":
            self.fetches += 1
            if self.down_fetches:
                self.down_fetches -= 1
                raise httpx.ConnectError("broker down", request=request)
        if request.method == "POST" and path.startswith("/v1/inbox/"):
            body = await request.aread()
            self.acks.append((path.split("/")[3], body))
            if self.failing_acks:
                self.failing_acks -= 1
                return httpx.Response(500, json={"title": "Internal error"})
            if self.refusing_acks:
                return httpx.Response(422, json={"title": "Invalid ack", "reason": "ack_mismatch"})
        response = await self._inner.handle_async_request(request)
        if path == "/v1/inbox" and response.status_code == 200 and self.bad_receipts:
            page = json.loads(await response.aread())
            for item in page["items"]:
                if item["message_id"] in self.bad_receipts:
                    claims = jws.parse(item["receipt"], jws.TYP_RECEIPT).claims()
                    item["receipt"] = jws.sign(claims, SigningKey.generate(), jws.TYP_RECEIPT)
            return httpx.Response(200, json=page)
        return response


@pytest.fixture(autouse=True)
def json_logs() -> Iterator[io.StringIO]:
    """The JSON log lines of the test: set up before any logger is first used (and cached)."""
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, inbox_max_wait_seconds=30)
    async with running_broker(settings) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201  # no inbox_url: pull mode
        yield broker


@pytest.fixture
def faults(broker: Broker) -> FaultyBroker:
    return FaultyBroker(broker)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    database = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    return node_settings(tmp_path, [NG], database, node_pull=True, node_pull_wait_seconds=0.5)


@asynccontextmanager
async def pulling_node(
    settings: Settings, faults: FaultyBroker
) -> AsyncIterator[httpx.AsyncClient]:
    """A node in pull mode, reaching the broker through ``faults``."""
    async with (
        httpx.AsyncClient(transport=faults, base_url="http://broker") as broker_http,
        running_node(settings, broker_http) as node,
    ):
        yield node


async def send(broker: Broker, payload: dict[str, Any] = CONFORMING) -> str:
    """Send a referral from AT to NG; its message id."""
    response = await broker.submit(referral(AT, NG, payload=payload))
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message_id"]
    return message_id


async def status(broker: Broker, message_id: str) -> dict[str, Any]:
    response = await broker.status(message_id, AT)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = WAIT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while not await _result(check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def settled(broker: Broker, message_id: str, expected: str = "acknowledged") -> None:
    async def done() -> bool:
        state: str = (await status(broker, message_id))["status"]
        return state == expected

    await eventually(done)


async def test_a_pulling_node_stores_each_message_once_and_acknowledges_it(
    broker: Broker, faults: FaultyBroker, settings: Settings, json_logs: io.StringIO
) -> None:
    before = await send(broker)  # waiting at the broker before the node starts
    async with pulling_node(settings, faults):
        await settled(broker, before)
        after = await send(broker)  # arrives during a long poll
        await settled(broker, after)
    stored = await rows(settings.node_database_url, ReceivedMessage)
    assert sorted(r["id"] for r in stored) == sorted([before, after])
    for message_id in (before, after):
        delivery = (await status(broker, message_id))["delivery"]
        assert (delivery["status"], delivery["acknowledged_at"] is not None) == (
            "acknowledged",
            True,
        )
    assert [m for m, _ in faults.acks] == [before, after]
    assert CANARY not in json_logs.getvalue()
    events = [json.loads(line)["event"] for line in json_logs.getvalue().splitlines()]
    assert events.count("message_received") == 2


async def test_a_restarted_node_answers_a_message_it_holds_as_before_and_stores_it_once(
    broker: Broker, faults: FaultyBroker, settings: Settings
) -> None:
    message_id = await send(broker)
    faults.failing_acks = 1_000  # the node stores it, but its acks never reach the broker
    async with pulling_node(settings, faults):

        async def stored() -> bool:
            return len(await rows(settings.node_database_url, ReceivedMessage)) == 1

        await eventually(stored)
        await eventually(lambda: bool(faults.acks))
    assert (await status(broker, message_id))["status"] != "acknowledged"
    first_ack = faults.acks[0][1]

    faults.failing_acks = 0
    async with pulling_node(settings, faults):  # no cursor: all still unacknowledged again
        await settled(broker, message_id)
    assert len(await rows(settings.node_database_url, ReceivedMessage)) == 1
    assert {body for _, body in faults.acks} == {first_ack}  # the same answer every time


async def test_an_ack_that_fails_is_sent_again_with_the_same_answer(
    broker: Broker, faults: FaultyBroker, settings: Settings
) -> None:
    message_id = await send(broker)
    faults.failing_acks = 2
    async with pulling_node(settings, faults):
        await settled(broker, message_id)
    assert len(faults.acks) == 3
    assert len({body for _, body in faults.acks}) == 1
    assert len(await rows(settings.node_database_url, ReceivedMessage)) == 1


async def test_an_ack_the_broker_refuses_is_not_sent_again(
    broker: Broker, faults: FaultyBroker, settings: Settings, json_logs: io.StringIO
) -> None:
    refused, taken = await send(broker), await send(broker)
    faults.refusing_acks = True
    async with pulling_node(settings, faults):
        await eventually(lambda: len(faults.acks) == 2)
        faults.refusing_acks = False
        third = await send(broker)
        await settled(broker, third)
    assert [m for m, _ in faults.acks] == [refused, taken, third]
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert [
        (line["message_id"], line["status"], line["reason"])
        for line in lines
        if line["event"] == "inbox_ack_refused"
    ] == [(refused, 422, "ack_mismatch"), (taken, 422, "ack_mismatch")]


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = [backoff(failures, 1.0, 60.0) for failures in range(1, 40)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(30.0 <= d <= 60.0 for d in delays[6:])
    assert len({round(d, 6) for d in delays[10:]}) > 1  # jittered, not in step


async def test_a_rejected_payload_is_acknowledged_as_rejected(
    broker: Broker, faults: FaultyBroker, settings: Settings, json_logs: io.StringIO
) -> None:
    message_id = await send(broker, NON_CONFORMING)
    async with pulling_node(settings, faults):
        await settled(broker, message_id, "rejected")
    assert (await status(broker, message_id))["delivery"]["status"] == "rejected"
    assert await rows(settings.node_database_url, ReceivedMessage) == []
    assert [r["id"] for r in await rows(settings.node_database_url, RejectedMessage)] == [
        message_id
    ]
    ack = json.loads(faults.acks[-1][1])["ack"]
    assert jws.parse(ack, jws.TYP_ACK).claims()["status"] == "rejected"
    assert CANARY not in json_logs.getvalue()


async def test_the_node_rides_out_a_broker_outage(
    broker: Broker, faults: FaultyBroker, settings: Settings, json_logs: io.StringIO
) -> None:
    message_id = await send(broker)
    faults.down_fetches = 2
    async with pulling_node(settings, faults):
        await settled(broker, message_id)
    assert faults.fetches >= 3
    failures = [
        json.loads(line)
        for line in json_logs.getvalue().splitlines()
        if '"inbox_pull_failed"' in line
    ]
    assert [f["error"] for f in failures] == ["BrokerError", "BrokerError"]
    assert all(0 < f["retry_in"] <= 60 for f in failures)


async def test_a_message_the_node_refuses_is_skipped_and_left_unacknowledged(
    broker: Broker, faults: FaultyBroker, settings: Settings, json_logs: io.StringIO
) -> None:
    refused = await send(broker)
    taken = await send(broker)
    faults.bad_receipts.add(refused)
    async with pulling_node(settings, faults):
        await settled(broker, taken)
    assert (await status(broker, refused))["delivery"]["status"] == "pending"
    assert [r["id"] for r in await rows(settings.node_database_url, ReceivedMessage)] == [taken]
    assert refused not in [m for m, _ in faults.acks]
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    refusals = [line for line in lines if line["event"] == "inbox_item_refused"]
    assert refusals
    assert {(r["message_id"], r["problem"]) for r in refusals} == {(refused, "bad-signature")}
    assert CANARY not in json_logs.getvalue()


async def test_a_node_stops_promptly_in_the_middle_of_a_long_poll(
    broker: Broker, faults: FaultyBroker, settings: Settings
) -> None:
    waiting = settings.model_copy(update={"node_pull_wait_seconds": 25.0})
    async with pulling_node(waiting, faults):
        await eventually(lambda: faults.fetches > 0)
        await asyncio.sleep(0.2)  # the long poll is under way
        started = time.monotonic()
    # Far sooner than the long poll would have ended (a bound with room for a slow machine).
    assert time.monotonic() - started < waiting.node_pull_wait_seconds / 2


async def _result(value: Awaitable[bool] | bool) -> bool:
    if inspect.isawaitable(value):
        return bool(await value)
    return value
