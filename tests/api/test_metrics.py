"""`/metrics`: what was accepted, refused and delivered, the queue and the ledger, read by
Prometheus; never an id of a message, case or participant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests.support import Broker, broker_settings, polling, referral, running_broker, running_node
from trm_broker.api.app import create_app
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import Delivery

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
INBOX = "http://127.0.0.1:9/inbox"  # port 9 (discard): nothing listens


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def dispatcher(broker: Broker, http: httpx.AsyncClient) -> DeliveryDispatcher:
    state = broker.app.state.broker
    return DeliveryDispatcher(
        state.sessions,
        http,
        timeout=30,  # a push's deadline: room for a loaded machine
        poll_interval=0.1,
        backoff_cap=1,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=state.signing_key,
        observer=state.metrics,
    )


def answering(status: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(status)))


async def test_metrics_count_accepted_refused_and_delivered_messages_without_ids(
    database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        assert (await broker.register(AT, "AT", inbox_url=INBOX)).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=INBOX)).status_code == 201

        # One message acknowledged by a real node.
        case_refs = ["AT-metrics-acked", "AT-metrics-dead", "AT-metrics-late", "AT-metrics-no"]
        payload = {"destination_country": "NG", "languages": ["en"], "is_child": False}
        first = await broker.submit(referral(AT, NG, payload=payload, case_ref=case_refs[0]))
        assert first.status_code == 202
        key_file = tmp_path / "ng.keys.json"
        NG.write(key_file)
        async with running_node(tmp_path, [key_file], broker.client, "token") as to_node:
            assert await dispatcher(broker, to_node).run_once() == 1

        failing = referral(AT, NG, case_ref=case_refs[1])
        second = await broker.submit(failing)
        assert second.status_code == 202
        again = await broker.submit(failing)  # a repeat: the original receipt, not counted
        assert again.status_code == 200
        third = await broker.submit(referral(AT, NG, case_ref=case_refs[2]))
        assert third.status_code == 202
        message_ids = [str(r.json()["message_id"]) for r in (first, second, third)]

        # The same case referred again: a workflow rule; no consent: a consent rule; not a
        # JWS at all: the problem type, and the type is not known.
        twice = await broker.submit(referral(AT, NG, case_ref=case_refs[2]))
        assert twice.status_code == 409
        rule = twice.json()["rule"]
        unconsented = await broker.submit(referral(AT, NG, case_ref=case_refs[3], consent_ref=None))
        assert unconsented.status_code == 403
        assert (await broker.submit(b'{"not": "a jws"}')).status_code == 400

        # The other two fail with a 503, then time out into dead letters.
        async with answering(503) as unavailable:
            assert await dispatcher(broker, unavailable).run_once() == 2
            later = datetime.now(UTC) + timedelta(days=8)
            assert await dispatcher(broker, unavailable).sweep(later) == 2

        text = await scrape(broker.client)
        assert value(text, "trm_messages_accepted_total", type="referral") == 3
        assert value(text, "trm_messages_accepted_total", type="case_closure") == 0
        assert value(text, "trm_messages_refused_total", type="referral", reason=rule) == 1
        assert (
            value(text, "trm_messages_refused_total", type="referral", reason="consent_missing")
            == 1
        )
        assert (
            value(text, "trm_messages_refused_total", type="unknown", reason="invalid-envelope")
            == 1
        )
        assert value(text, "trm_delivery_attempts_total", outcome="acknowledged", error="none") == 1
        assert value(text, "trm_delivery_attempts_total", outcome="failed", error="http_5xx") == 2
        assert value(text, "trm_dead_letters_total") == 2
        assert value(text, "trm_deliveries_dead_lettered") == 2
        assert value(text, "trm_alerts_open", kind="delivery_dead_lettered") == 2  # per case
        assert value(text, "trm_alerts_open", kind="reception_overdue") == 0
        assert value(text, "trm_delivery_queue_depth") == 0
        assert (
            value(
                text,
                "trm_http_request_duration_seconds_count",
                route="/v1/messages",
                method="POST",
                status="202",
            )
            == 3
        )
        assert value(text, "trm_database_up") == 1

        # A status read is counted under its route's template, never its path.
        assert (await broker.status(message_ids[0], AT)).status_code == 200
        assert (await broker.client.get(f"/v1/nothing/{case_refs[0]}")).status_code == 404
        text = await scrape(broker.client)
        assert (
            value(
                text,
                "trm_http_request_duration_seconds_count",
                route="/v1/messages/{message_id}",
                method="GET",
                status="200",
            )
            == 1
        )
        assert (
            value(
                text,
                "trm_http_request_duration_seconds_count",
                route="unmatched",
                method="GET",
                status="404",
            )
            == 1
        )
        secrets = [*message_ids, *case_refs, AT.participant, NG.participant, "languages"]
        secrets += [AT.signing.kid, NG.signing.kid, "metrics-"]
        assert [s for s in secrets if s in text] == []


async def set_queued_at(database_url: str, queued_at: datetime) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await session.execute(update(Delivery).values(queued_at=queued_at))
            await session.commit()
    finally:
        await engine.dispose()


async def test_queue_depth_oldest_age_and_ledger_are_read_at_each_scrape(
    database_url: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        text = await scrape(broker.client)
        assert value(text, "trm_delivery_queue_depth") == 0
        assert value(text, "trm_delivery_oldest_pending_age_seconds") == 0
        async for _ in polling(interval=0.1):  # the operator's registration is being integrated
            if value(text, "trm_ledger_unsequenced_entries") == 0:
                break
            text = await scrape(broker.client)
        assert value(text, "trm_ledger_size") == 1  # the operator's registration alone

        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201  # pull mode
        for _ in range(2):
            assert (await broker.submit(referral(AT, NG))).status_code == 202
        await set_queued_at(database_url, datetime.now(UTC) - timedelta(hours=1))

        text = await scrape(broker.client)
        assert value(text, "trm_delivery_queue_depth") == 2
        age = value(text, "trm_delivery_oldest_pending_age_seconds")
        assert age is not None
        assert 3600 <= age < 3700

        async for _ in polling(interval=0.1):  # the sequencer integrates after each commit
            text = await scrape(broker.client)
            if value(text, "trm_ledger_unsequenced_entries") == 0:
                break
        assert value(text, "trm_ledger_unsequenced_entries") == 0
        size = value(text, "trm_ledger_size")
        assert size is not None
        assert size >= 7  # 3 participants, 2 consents, 2 messages: their ledger entries
        checkpoint_age = value(text, "trm_ledger_checkpoint_age_seconds")
        assert checkpoint_age is not None
        assert 0 <= checkpoint_age < 60


async def test_metrics_answer_while_the_database_is_unreachable(
    sqlite_database: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        state = broker.app.state.broker
        working = state.sessions
        unreachable = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
        state.sessions = session_factory(unreachable)
        try:
            text = await scrape(broker.client)
        finally:
            state.sessions = working
            await unreachable.dispose()
        assert value(text, "trm_database_up") == 0
        assert "trm_delivery_queue_depth" not in text
        assert "trm_ledger_size" not in text
        assert value(text, "trm_messages_accepted_total", type="referral") == 0
        assert value(await scrape(broker.client), "trm_database_up") == 1


async def test_the_in_process_dispatcher_counts_its_attempts(
    database_url: str, tmp_path: Path
) -> None:
    settings = broker_settings(
        database_url, tmp_path, allow_loopback_inboxes=True, delivery_poll_seconds=0.1
    )
    async with running_broker(settings, run_dispatcher=True) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=INBOX)).status_code == 201
        assert (await broker.submit(referral(AT, NG))).status_code == 202
        async for _ in polling(interval=0.1):
            text = await scrape(broker.client)
            if value(text, "trm_delivery_attempts_total", outcome="failed", error="transport"):
                break
        assert value(text, "trm_delivery_attempts_total", outcome="failed", error="transport")


async def test_the_worker_serves_metrics_too(database_url: str, tmp_path: Path) -> None:
    settings = broker_settings(database_url, tmp_path)
    async with running_broker(settings):  # creates the broker's key, which a worker needs
        pass
    worker = create_app(settings, worker=True)
    async with (
        worker.router.lifespan_context(worker),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=worker), base_url="http://worker"
        ) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        text = await scrape(client)
    assert value(text, "trm_database_up") == 1
    assert value(text, "trm_delivery_queue_depth") == 0
    assert (
        value(
            text,
            "trm_http_request_duration_seconds_count",
            route="/healthz",
            method="GET",
            status="200",
        )
        == 1
    )
