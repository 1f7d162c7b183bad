"""PostgreSQL away and back (issue 7): a real broker process reaches its database through a
TCP proxy that the test cuts (listening socket and every open connection) and restores.

While the database is away, `/readyz` and every API call answer a 503 problem
(``urn:trm-broker:problem:unavailable``), never a 500, and the process stays up; once it is
back, the broker recovers by itself (no restart): ready again, a new message is accepted,
delivered and acknowledged by the recipient's node, and integrated into the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support import referral
from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Process
from trm_broker.ledger.note import NoteVerifier, open_checkpoint
from trm_broker.web.signed_requests import SignedRequests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

UNAVAILABLE = "urn:trm-broker:problem:unavailable"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance"}
T = TypeVar("T")


class TcpProxy:
    """A TCP proxy on loopback in a thread of its own (asyncio), between the broker and
    PostgreSQL. :meth:`cut` stops listening and aborts every open connection (both sides),
    as a database host that went away; :meth:`restore` listens again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._call(self._cancel_tasks)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coroutine: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(10)

    def cut(self) -> None:
        self._call(self._cut)

    def restore(self) -> None:
        self._call(self._listen)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._transports.update((writer.transport, up_writer.transport))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self._transports.discard(sink.transport)
            with contextlib.suppress(OSError, RuntimeError):
                sink.close()


@pytest.fixture
def proxy(postgres_database: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_database)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def _through(database_url: str, proxy: TcpProxy) -> str:
    proxied = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return proxied.render_as_string(hide_password=False)


def _eventually(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    body = response.json()
    assert body["type"] == UNAVAILABLE, f"{what}: {body}"
    # A fixed text, with nothing of the request or of the database error in it.
    assert set(body) <= PROBLEM_MEMBERS, f"{what}: {body}"


class Parties:
    """The operator, Austria's focal point (its keys here, pull mode) and Nigeria's, served
    by a node process that acknowledges what the broker pushes."""

    def __init__(self, cluster: LocalCluster, broker: Process) -> None:
        self.broker = broker
        assert cluster.operator is not None
        self.operator = cluster.operator
        self.at = KeySet.generate("at.focal-point")
        body = {"id": "at.focal-point", "kind": "focal_point", "country": "AT"}
        response = httpx.post(
            broker.url + "/v1/participants",
            json={
                **body,
                "keys": self.at.public(),
                "statements": demo.stated(self.operator, self.at),
            },
            auth=SignedRequests(self.operator.signing),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        self.ng_node = cluster.start_node("node-ng", ["ng.naptip"])
        demo.register(cluster, self.ng_node, "NG")
        self.ng = self.ng_node.keysets[0]

    def consent(self, case_ref: str) -> httpx.Response:
        body = {
            "id": f"consent-{case_ref}",
            "case_ref": case_ref,
            "given_by": "person",
            "purposes": ["referral"],
            "recipients": [self.ng.participant],
            "data_categories": ["identity"],
            "valid_from": "2026-01-01T00:00:00Z",
            "form_digest": "sha-256:" + "C" * 43,
        }
        return httpx.post(
            self.broker.url + "/v1/consents",
            json=body,
            auth=SignedRequests(self.at.signing),
            timeout=10,
        )

    def submit(self, envelope: dict[str, str]) -> httpx.Response:
        return httpx.post(
            self.broker.url + "/v1/messages",
            content=json.dumps(envelope).encode(),
            headers={"content-type": "application/jose+json"},
            auth=SignedRequests(self.at.signing),
            timeout=10,
        )

    def status(self, message_id: str) -> httpx.Response:
        return httpx.get(
            f"{self.broker.url}/v1/messages/{message_id}",
            auth=SignedRequests(self.at.signing),
            timeout=10,
        )

    def wait_done(self, message_id: str) -> dict[str, Any]:
        """Until the message is acknowledged by Nigeria's node and its acceptance is
        integrated into the ledger."""

        def done() -> dict[str, Any] | None:
            status: dict[str, Any] = self.status(message_id).json()
            finished = status["status"] == "acknowledged" and status["ledger_index"] is not None
            return status if finished else None

        return _eventually(f"message {message_id} acknowledged and integrated", done)

    def send_and_wait(self, case_ref: str) -> dict[str, Any]:
        """A referral under its consent: accepted (202), then done."""
        assert self.consent(case_ref).status_code == 201
        response = self.submit(referral(self.at, self.ng, case_ref=case_ref))
        assert response.status_code == 202, response.text
        return self.wait_done(response.json()["message_id"])


def _checkpoint_size(broker: Process) -> int:
    vkey = httpx.get(broker.url + "/v1/broker", timeout=5).json()["ledger"]["verifier_key"]
    verifier = NoteVerifier.from_vkey(vkey)
    note = httpx.get(broker.url + "/v1/ledger/checkpoint", timeout=5)
    assert note.status_code == 200, note.text
    return open_checkpoint(note.text, verifier, origin=verifier.name).size


def test_the_broker_answers_503_while_postgres_is_away_and_recovers_by_itself(
    tmp_path: Path, postgres_database: str, proxy: TcpProxy
) -> None:
    with LocalCluster(tmp_path, _through(postgres_database, proxy)) as cluster:
        cluster.init_operator()  # on a fresh database, migrated already
        broker = cluster.start_broker(TRM_DELIVERY_TIMEOUT_SECONDS="2")
        parties = Parties(cluster, broker)
        before = parties.send_and_wait("AT-2026-OUT-0001")
        assert httpx.get(broker.url + "/readyz", timeout=5).status_code == 200
        assert proxy.connections > 0  # the broker's database is behind the proxy
        # Consented beforehand, sent during the outage: only the database is missing.
        assert parties.consent("AT-2026-OUT-0002").status_code == 201
        during = referral(parties.at, parties.ng, case_ref="AT-2026-OUT-0002")

        proxy.cut()
        try:
            # Twice each: the first call may find a pooled connection (now dead), the
            # second must open a new one (refused).
            for _ in range(2):
                _assert_unavailable(httpx.get(broker.url + "/readyz", timeout=10), "readyz")
                _assert_unavailable(
                    httpx.get(broker.url + "/v1/participants", timeout=10), "participants"
                )
                _assert_unavailable(parties.submit(during), "POST /v1/messages")
                _assert_unavailable(parties.status(before["message_id"]), "message status")
                _assert_unavailable(
                    httpx.get(broker.url + "/v1/ledger/checkpoint", timeout=10), "checkpoint"
                )
                _assert_unavailable(parties.consent("AT-2026-OUT-0003"), "POST /v1/consents")
            # Alive, not ready: an orchestrator keeps it and takes it out of rotation.
            assert httpx.get(broker.url + "/healthz", timeout=5).status_code == 200
            time.sleep(2.0)  # the sequencer and dispatcher fail a few steps meanwhile
            assert broker.running, broker.log_text()[-3000:]
        finally:
            proxy.restore()

        _eventually(
            "the broker ready again",
            lambda: httpx.get(broker.url + "/readyz", timeout=5).status_code == 200 or None,
        )
        # The envelope refused during the outage was not stored: sent again, it is new.
        response = parties.submit(during)
        assert response.status_code == 202, response.text
        parties.wait_done(response.json()["message_id"])
        after = parties.send_and_wait("AT-2026-OUT-0004")
        assert after["delivery"]["attempts"] == 1
        # The operator's bootstrap, two registrations, then a consent, an acceptance and an
        # acknowledgement for each of the three cases: nothing of the refused calls.
        entries = 3 + 3 * 3

        def integrated() -> int | None:
            size = _checkpoint_size(broker)
            return size if size >= entries else None

        assert _eventually("the ledger to integrate every entry", integrated) == entries
        assert broker.running
        cluster.stop()
        lines = [json.loads(line) for line in broker.log_text().splitlines() if line[:1] == "{"]
    events = Counter(line["event"] for line in lines)
    assert events["unexpected_error"] == 0
    assert not [line for line in lines if line.get("status") == 500]
    # The loops did meet the outage, and carried on.
    assert events["sequencer_error"] > 0
    assert events["dispatcher_error"] > 0
