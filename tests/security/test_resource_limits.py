"""Resource limits (issue 8): a caller cannot make the broker or the node read without end,
parse without end, wait without end, or answer without end.

- bodies over TRM_MAX_ENVELOPE_BYTES are refused (413) on every route that takes one, on
  the broker and the node, declared or streamed, before authentication;
- JSON nested deeper than TRM_MAX_JSON_DEPTH is refused (400) before parsing;
- each participant, and each address for what is not authenticated, has a rate limit
  (429 with Retry-After) that no kind of request escapes;
- request headers and bodies must arrive within their timeouts (408), proven against a
  real `trm-broker serve` and `trm-broker node serve` on loopback;
- page sizes and the auditors' report period are bounded.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import PROBLEM, Broker, broker_settings, running_broker
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.dev import demo_case
from trm_broker.dev.cluster import LocalCluster
from trm_broker.web.limits import json_depth
from trm_broker.web.rate_limit import RateLimiter

LIMIT = 64 * 1024


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:trm-broker:problem:{slug}"
    assert body["status"] == status
    return body


@pytest.fixture
async def broker(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(sqlite_database, tmp_path, max_envelope_bytes=LIMIT)
    async with running_broker(settings) as running:
        yield running


async def focal_point(broker: Broker, name: str = "fp.at", country: str = "AT") -> KeySet:
    keys = KeySet.generate(name)
    assert (await broker.register(keys, country)).status_code == 201
    return keys


# --- body size ------------------------------------------------------------------------------

BROKER_BODY_ROUTES = [
    "/v1/messages",
    "/v1/participants",
    "/v1/consents",
    "/v1/consents/consent-1/withdraw",
    "/v1/inbox/0190a5e6-0000-7000-8000-000000000000/ack",
]


@pytest.mark.parametrize("path", BROKER_BODY_ROUTES)
async def test_an_oversized_body_is_refused_on_every_broker_route(
    broker: Broker, path: str
) -> None:
    """Declared too large, or streamed without a length: 413, signed or not."""
    fp = await focal_point(broker)
    big = b"[" + b"0," * LIMIT + b"0]"
    declared = await broker.call("POST", path, fp, content=big)
    assert_problem(declared, 413, "too-large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024

    streamed = await broker.client.post(path, content=chunks())
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "too-large")


async def node_client(
    tmp_path: Path, broker: Broker
) -> tuple[httpx.AsyncClient, Any, dict[str, str]]:
    from tests.support import running_node

    keys = KeySet.generate(demo_case.SENDER)
    key_file = tmp_path / "node-keys.json"
    keys.write(key_file)
    token = "node-token-for-tests"
    context = running_node(tmp_path, [key_file], broker.client, token)
    client = await context.__aenter__()
    return client, context, {"authorization": f"Bearer {token}"}


NODE_BODY_ROUTES = ["/inbox", "/messages", "/consents", "/cases/AT-2026-0001/referral"]


async def test_an_oversized_body_is_refused_on_every_node_route(
    broker: Broker, tmp_path: Path
) -> None:
    client, context, auth = await node_client(tmp_path, broker)
    try:
        big = b'{"a":"' + b"x" * (2 * 1024 * 1024) + b'"}'  # the node's default limit: 1 MiB
        for path in NODE_BODY_ROUTES:
            for headers in (auth, {}):  # before the token is even checked
                response = await client.post(
                    path, content=big, headers={**headers, "content-type": "application/json"}
                )
                assert_problem(response, 413, "too-large")
    finally:
        await context.__aexit__(None, None, None)


# --- JSON depth -----------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def test_deeply_nested_json_is_refused_before_parsing(broker: Broker, tmp_path: Path) -> None:
    fp = await focal_point(broker)
    for path in ("/v1/consents", "/v1/messages", "/v1/participants"):
        deep = await broker.call(
            "POST", path, fp, content=nested(33), headers={"content-type": "application/json"}
        )
        body = assert_problem(deep, 400, "too-deep")
        assert "32 levels" in body["detail"]
    # 32 levels is within the limit: the body goes on to the route's own checks.
    shallow = await broker.call(
        "POST", "/v1/consents", fp, content=nested(32), headers={"content-type": "application/json"}
    )
    assert shallow.status_code in (400, 422)
    assert shallow.json()["type"] != "urn:trm-broker:problem:too-deep"
    # A body of 100,000 open brackets (what would exhaust a recursive parser) is refused
    # the same way, and so is one that hides the brackets behind a JSON media type variant.
    flood = await broker.call(
        "POST",
        "/v1/messages",
        fp,
        content=b"[" * 60_000,
        headers={"content-type": "application/jose+json"},
    )
    assert_problem(flood, 400, "too-deep")
    client, context, auth = await node_client(tmp_path, broker)
    try:
        response = await client.post(
            "/messages", content=nested(40), headers={**auth, "content-type": "application/json"}
        )
        assert_problem(response, 400, "too-deep")
    finally:
        await context.__aexit__(None, None, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def real_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((real_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((real_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_the_depth_scan_agrees_with_the_parsed_structure(value: object) -> None:
    """Brackets inside strings, escaped quotes and all: the scan is exact on valid JSON."""
    assert json_depth(json.dumps(value).encode()) == real_depth(value)


# --- rate limits ----------------------------------------------------------------------------


def test_a_token_bucket_refills_at_its_rate_and_says_when() -> None:
    now = [100.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") is None  # buckets are per key
    now[0] += 0.5
    assert limiter.take("a") is None
    now[0] += 100
    assert [limiter.take("a") for _ in range(4)][-1] is not None  # never above the burst
    assert RateLimiter(0, 1).take("a") is None  # 0: off


def test_the_buckets_kept_are_bounded() -> None:
    limiter = RateLimiter(1.0, 1, max_keys=100)
    for n in range(10_000):
        limiter.take(f"address-{n}")
    assert len(limiter._buckets) == 100


@pytest.fixture
async def limited(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    # Rates this low refill nothing during a test: each caller has exactly its burst.
    settings = broker_settings(
        sqlite_database,
        tmp_path,
        rate_per_second=0.001,
        rate_burst=5,
        address_rate_per_second=0.001,
        address_rate_burst=4,
    )
    async with running_broker(settings) as running:
        yield running


async def test_a_participant_over_its_rate_gets_429_with_retry_after(limited: Broker) -> None:
    fp = KeySet.generate("fp.at")
    ng = KeySet.generate("fp.ng")
    assert (await limited.register(fp, "AT")).status_code == 201
    assert (await limited.register(ng, "NG")).status_code == 201
    answers = [(await limited.call("GET", "/v1/alerts", fp)) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    body = assert_problem(answers[-1], 429, "rate-limited")
    retry_after = int(answers[-1].headers["retry-after"])
    assert retry_after == body["retry_after"] >= 1
    # Every route counts, reads and writes alike; another participant is not affected.
    consent = await limited.call("POST", "/v1/consents", fp, json={})
    assert_problem(consent, 429, "rate-limited")
    assert (await limited.call("GET", "/v1/alerts", ng)).status_code == 200


async def test_unauthenticated_requests_are_limited_per_address(limited: Broker) -> None:
    """Public reads, refused signatures and bogus signature headers on a public route all
    spend the address's tokens; an honest participant from that address is still served."""
    fp = KeySet.generate("fp.at")
    assert (await limited.register(fp, "AT")).status_code == 201
    bogus = {
        "signature-input": 'trm=("@method");keyid="k";created=1;nonce="n";tag="trm"',
        "signature": "trm=:AAAA:",
    }
    stranger = KeySet.generate("stranger.xx")
    answers = [
        await limited.client.get("/v1/broker"),
        await limited.client.get("/v1/broker", headers=bogus),  # not a way around it
        await limited.call("GET", "/v1/alerts", stranger),  # unknown key: 401
        await limited.client.get("/v1/alerts"),  # unsigned: 401
        await limited.client.get("/healthz"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 401, 429]
    assert_problem(answers[-1], 429, "rate-limited")
    assert "retry-after" in answers[-1].headers
    assert_problem(await limited.client.get("/v1/broker", headers=bogus), 429, "rate-limited")
    refused = await limited.call("GET", "/v1/alerts", stranger)
    assert_problem(refused, 429, "rate-limited")
    assert_problem(await limited.client.get("/no/such/path"), 429, "rate-limited")
    assert_problem(await limited.client.delete("/v1/broker"), 429, "rate-limited")  # a 405
    # Signed requests that verify spend their participant's tokens, not the address's.
    assert (await limited.call("GET", "/v1/alerts", fp)).status_code == 200


async def test_every_route_is_limited(limited: Broker) -> None:
    """No route escapes the limit: each operation of the broker's OpenAPI (and the routes
    left out of it), called unsigned once the address's tokens are spent, answers 429."""
    for _ in range(4):
        await limited.client.get("/healthz")
    spec = (await limited.client.get("/openapi.json")).json()  # 429 too: read it in-process
    assert "paths" not in spec
    operations = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in limited.app.openapi()["paths"].items()
        for method in item
    ]
    operations += [
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("POST", "/no/such/path"),
    ]
    assert len(operations) > 25
    for method, path in operations:
        response = await limited.client.request(method, path)
        assert response.status_code == 429, (method, path, response.status_code)


# --- bounded pages and ranges ---------------------------------------------------------------


async def test_page_sizes_and_report_periods_are_bounded(broker: Broker) -> None:
    auditor = KeySet.generate("auditor.eu")
    assert (await broker.register(auditor, "AT", kind="auditor")).status_code == 201
    huge = 2**70  # beyond the database's integers: it was a 500 before the fuzzing found it
    for path in (
        "/v1/ledger/entries?limit=1001",
        "/v1/ledger/search?limit=1001",
        f"/v1/inbox?after={huge}",
        f"/v1/ledger/search?after={huge}",
        f"/v1/ledger/entries/{huge}",
        "/v1/ledger/entries/-46095557422898154045440",
        "/v1/ledger/search?since=0.0",  # a number is no time (pydantic reads it as 1970)
        "/v1/ledger/search?since=0001-01-01T00%3A01%3A01%2B02%3A08",  # no UTC equivalent
        "/v1/audit/report?from=1&to=2",
    ):
        assert_problem(await broker.call("GET", path, auditor), 400, "invalid-request")
    dead_letters = f"/v1/deliveries?state=dead_lettered&after={huge}"
    assert_problem(await broker.call("GET", dead_letters, broker.operator), 400, "invalid-request")
    since = datetime(2020, 1, 1, tzinfo=UTC)
    for days, status in ((732, 200), (733, 400)):
        until = since + timedelta(days=days)
        query = f"/v1/audit/report?from={since.isoformat()}&to={until.isoformat()}"
        response = await broker.call("GET", query.replace("+", "%2B"), auditor)
        assert response.status_code == status, response.text
    assert "at most 732 days" in response.json()["detail"]


# --- slow clients, against real servers -----------------------------------------------------


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


@pytest.mark.e2e
def test_slow_clients_are_cut_off_by_the_real_servers(tmp_path: Path) -> None:
    timeouts = {"TRM_HEADER_TIMEOUT_SECONDS": "1", "TRM_BODY_TIMEOUT_SECONDS": "1"}
    with LocalCluster(tmp_path, extra_env=timeouts) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker()
        node = cluster.start_node("node-at", [demo_case.SENDER])
        for url in (broker.url, node.url):
            # Headers never finished (slowloris): 408, then closed. Sent at once, then
            # nothing: dribbled byte by byte, a loaded machine's slow loop would outlast the
            # 1 s deadline while still sending, and the test would race the server's close.
            with connect(url) as sock:
                started = time.monotonic()
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                answer = read_until_closed(sock, 30)
                assert answer.startswith(b"HTTP/1.1 408 "), answer
                assert b"application/problem+json" in answer
                # Cut off by the 1 s deadline, long before the read's own 30 s.
                assert time.monotonic() - started < 15
            # On a kept-alive connection, the next request's headers have the same deadline.
            with connect(url) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.3)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost")
                answer = read_until_closed(sock, 10)
                assert answer.startswith(b"HTTP/1.1 200 ")
                assert b"HTTP/1.1 408 " in answer
            # Headers in time, the body never finished: 408 problem+json from the app.
            with connect(url) as sock:
                sock.sendall(
                    b"POST /inbox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n{"a":'
                )
                answer = read_until_closed(sock, 10)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 "), answer
                assert json.loads(body)["type"] == "urn:trm-broker:problem:request-timeout"
            # A prompt client is served as before.
            assert httpx.get(url + "/healthz").status_code == 200
        cluster.stop()
        logs = "".join(p.log_text() for p in cluster.processes)
    assert "unexpected_error" not in logs


async def test_a_participant_out_of_tokens_is_refused_before_any_signature_work(
    limited: Broker,
) -> None:
    """Issue 21: once a participant's bucket is empty, a request naming its key is answered
    429 before its signature is checked or its nonce written. Naming a key spends nothing
    of its participant's bucket: only a verified request does, so nobody else can empty it
    (a forged request is charged to its address, as every refusal is)."""
    fp = KeySet.generate("fp.at")
    other = KeySet.generate("fp.other")
    assert (await limited.register(fp, "AT")).status_code == 201
    assert (await limited.register(other, "FR")).status_code == 201

    def forged() -> dict[str, str]:
        """A request naming fp's key, signed with another."""
        forger = SigningKey.generate()
        headers = sign_request("GET", "http://broker/v1/alerts", b"", forger)
        return {name: value.replace(forger.kid, fp.signing.kid) for name, value in headers.items()}

    # A forgery naming fp's key is refused (401) and spends none of fp's tokens.
    assert_problem(await limited.client.get("/v1/alerts", headers=forged()), 401, "bad-signature")
    answers = [(await limited.call("GET", "/v1/alerts", fp)) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    # Out of tokens: a forgery naming fp's key is 429 now, decided before verifying it.
    refused = await limited.client.get("/v1/alerts", headers=forged())
    assert_problem(refused, 429, "rate-limited")
    assert (await limited.call("GET", "/v1/alerts", other)).status_code == 200
