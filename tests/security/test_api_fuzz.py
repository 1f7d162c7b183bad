"""API fuzzing (issue 8): schemathesis over every operation of the broker's and the node's
OpenAPI, with requests that get past authentication.

The broker holds the access matrix's world (tests/security/world.py: two case transfers,
every kind of participant, a revoked key, dead letters, alerts), so generated requests
meet real objects: path parameters are drawn half of the time from the world's own ids.
Each request is signed (RFC 9421) by one of the matrix's callers, drawn per example: a
focal point, another country's, a receiving organisation, an auditor, an operator, an
unknown key, a revoked key, or nobody. The node's local API gets its bearer token, and
its inbox pushes signed with the broker's key. The node's operations also draw from real
case state (tests/security/node_world.py: consents, cases at each stage, real pushes), so
its POSTs reach their handlers and the broker behind them: each must answer 2xx to some
(or, for the two a focal point may never send, the workflow's 409).

For every response: no 5xx; every error an RFC 9457 problem (application/problem+json,
with our type, a title and its own status); status code, content type, headers and body
as the OpenAPI says; data outside the schema refused. Then the stateful phase: the
schema's links chain operations (a consent registered, then read and withdrawn; a message
sent, then its status read ...).

TRM_FUZZ_EXAMPLES (default 100; `make fuzz`: 2000) examples per operation and mode
(schema-conforming, and not).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.databases import copy_sqlite
from tests.security.node_world import (
    NODE_KEYS,
    REFUSED_BY_THE_WORKFLOW,
    SUCCEEDING,
    NodeWorld,
    valid_bodies,
    with_real_references,
)
from tests.security.world import (
    AUDITOR,
    CALLERS,
    DE,
    FOCAL_POINT,
    NG,
    OPERATOR,
    REVOKED_KEY,
    SPARE,
    UNSIGNED,
    World,
    build_world,
)
from tests.support import broker_settings, running_broker, running_node
from trm_broker.api.app import create_app
from trm_broker.node.app import create_node_app
from trm_broker.settings import Settings
from trm_broker.web.problems import PROBLEM_BASE
from trm_broker.web.signed_requests import SignedRequests

EXAMPLES = int(os.environ.get("TRM_FUZZ_EXAMPLES", "100"))
NODE_TOKEN = "fuzz-node-token-0123456789"


def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is an RFC 9457 problem of ours, with its own status."""
    if response.status_code < 400:
        return None
    media = response.headers.get("content-type", [""])
    media = media[0] if isinstance(media, list) else media
    assert media == "application/problem+json", f"{response.status_code} answered as {media}"
    body = response.json()
    assert isinstance(body, dict), "a problem is a JSON object"
    assert str(body.get("type", "")).startswith(PROBLEM_BASE), f"problem type {body.get('type')}"
    assert isinstance(body.get("title"), str), "a problem has a title"
    assert body["title"], "a problem's title is not empty"
    assert body.get("status") == response.status_code, "the problem's status is the response's"
    assert isinstance(body.get("detail", ""), str), "a problem's detail is text"
    return True


CHECKS = [
    not_a_server_error,
    problem_details,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]


@dataclass
class Target:
    """One app under fuzzing: how to reach it and what it answered."""

    name: str
    portal: BlockingPortal
    client: httpx.AsyncClient
    auth: Callable[[str], dict[str, Any]]  # caller -> keyword arguments of the request
    real: dict[str, list[Any]]  # path parameter -> ids of real objects
    fixed_headers: dict[str, str] = field(default_factory=dict)
    node_world: NodeWorld | None = None  # the node's real case state

    def pool(self, label: str) -> list[Any]:
        """The node's real state for ``label`` (none for the broker, or a GET)."""
        if self.node_world is None or label not in SUCCEEDING | REFUSED_BY_THE_WORKFLOW:
            return []
        return self.portal.call(partial(self.node_world.pool, label))

    def send(self, case: Any, caller: str) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url=str(self.client.base_url).rstrip("/"))
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "headers": {
                **{k: v for k, v in kwargs.get("headers", {}).items() if k != "Connection"},
                **self.fixed_headers,
            },
            "params": kwargs.get("params") or None,
            "cookies": kwargs.get("cookies") or None,
            **self.auth(caller),
        }
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif kwargs.get("data") is not None:
            data = kwargs["data"]
            request["content"] = data if isinstance(data, bytes | str) else str(data)
        return self.portal.call(partial(self.client.request, **request))


def broker_auth(world: World) -> Callable[[str], dict[str, Any]]:
    def auth(caller: str) -> dict[str, Any]:
        signer = world.signer(caller)
        return {} if signer is None else {"auth": SignedRequests(signer.signing)}

    return auth


def real_ids(world: World) -> dict[str, list[Any]]:
    # Participants and keys of the world who are not callers here: the only routes naming
    # them change keys (an operator's fuzzed rotation expires the old key after its overlap,
    # a revocation ends it), which must not take a caller's key away in the middle of a run.
    bystanders = (NG, DE, SPARE)
    return {
        "message_id": sorted(world.messages.values()),
        "consent_id": sorted(world.consents.values()),
        "case_ref": sorted(world.case.values()),
        "index": sorted(world.entries.values()),
        "participant_id": sorted(k.participant for k in bystanders),
        "kid": sorted({k.signing.kid for k in bystanders} | {REVOKED_KEY.kid}),
    }


@pytest.fixture(scope="module")
def targets(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[dict[str, Target]]:
    """The broker, holding the matrix's world, and a node serving Austria's focal point,
    both started once, in one event loop run in a thread of its own."""
    tmp = tmp_path_factory.mktemp("api-fuzz")
    url = copy_sqlite(sqlite_template, tmp / "broker.db")
    # Rate limits off: they are proven in test_resource_limits; here every request counts.
    # No long polls either: a generated `wait` would hold the inbox for up to 300 s.
    options = {
        "rate_per_second": 0,
        "address_rate_per_second": 0,
        "alert_check_seconds": 3600,
        "inbox_max_wait_seconds": 0,
    }
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            running_broker(broker_settings(url, tmp, **options))
        ) as broker,
    ):
        world = portal.call(build_world, broker)
        # The node's participant is not among the ids the broker's fuzzing draws from: an
        # operator's fuzzed requests revoke the world's keys (as they may), and a node whose
        # key is revoked is rightly a 502 (its set-up is wrong, not the caller's request).
        node_world = NodeWorld(broker)
        portal.call(node_world.register)
        key_file = tmp / "node.keys.json"
        NODE_KEYS.write(key_file)
        with portal.wrap_async_context_manager(
            running_node(tmp, [key_file], broker.client, NODE_TOKEN)
        ) as node:
            real = real_ids(world)
            broker_key = broker.app.state.broker.signing_key
            yield {
                "broker": Target("broker", portal, broker.client, broker_auth(world), real),
                "node": Target(
                    "node",
                    portal,
                    node,
                    # Pushes signed as the broker signs them, so the inbox's parsing is
                    # reached; the case workers' calls carry the bearer token besides.
                    lambda caller: {"auth": SignedRequests(broker_key)},
                    real,
                    fixed_headers={"authorization": f"Bearer {NODE_TOKEN}"},
                    node_world=node_world,
                ),
            }


def _schema(app: Any) -> Any:
    return schemathesis.openapi.from_dict(app.openapi())


SCHEMAS = {
    "broker": _schema(create_app(Settings())),
    "node": _schema(create_node_app(Settings())),
}
OPERATIONS = [
    (name, result.ok().label)
    for name, schema in SCHEMAS.items()
    for result in schema.get_all_operations()
]


def _operation(name: str, label: str) -> Any:
    for result in SCHEMAS[name].get_all_operations():
        if result.ok().label == label:
            return result.ok()
    raise LookupError(label)


def _cases(operation: Any, mode: GenerationMode, target: Target) -> st.SearchStrategy[Any]:
    headers = target.fixed_headers or None
    generated = operation.as_strategy(mode, headers=headers)
    names = [p.name for p in operation.path_parameters]
    known = [n for n in names if target.real.get(n)]
    pool = target.pool(operation.label) if mode is GenerationMode.POSITIVE else []
    if mode is GenerationMode.NEGATIVE or not (known or pool):
        return cast(st.SearchStrategy[Any], generated)
    strategies = [generated]
    if known:
        real = st.fixed_dictionaries({n: st.sampled_from(target.real[n]) for n in known})
        strategies.append(
            real.flatmap(
                lambda values: operation.as_strategy(mode, headers=headers, path_parameters=values)
            )
        )
    if pool:
        # The node's real state: a case worker's request (twice as likely as the others),
        # and the fuzzer's own body under a real case's references.
        valid = valid_bodies(operation.label, pool).flatmap(
            lambda drawn: operation.as_strategy(
                mode,
                headers=headers,
                path_parameters=drawn[0] or None,
                **({} if drawn[1] is None else {"body": drawn[1]}),
            )
        )
        strategies += [valid, valid]
        if "case_ref" in names:
            strategies.append(
                st.tuples(generated, st.sampled_from(pool)).flatmap(
                    lambda drawn: operation.as_strategy(
                        mode,
                        headers=headers,
                        path_parameters={"case_ref": drawn[1].case_ref},
                        body=with_real_references(drawn[0].body, drawn[1]),
                    )
                )
            )
    return st.one_of(*strategies)


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters()) or list(operation.body))


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(
    ("app", "label"), OPERATIONS, ids=[f"{app} {label}" for app, label in OPERATIONS]
)
def test_every_operation_survives_fuzzing(targets: dict[str, Target], app: str, label: str) -> None:
    target = targets[app]
    operation = _operation(app, label)
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    callers = st.sampled_from(CALLERS) if app == "broker" else st.just(UNSIGNED)

    impossible: list[str] = []

    def run(mode: GenerationMode, checks: list[Any]) -> None:
        @FUZZ_SETTINGS
        @given(case=_cases(operation, mode, target), caller=callers)
        def fuzz(case: Any, caller: str) -> None:
            response = target.send(case, caller)
            counts[mode.value] += 1
            statuses[response.status_code] += 1
            case.validate_response(response, checks=checks)

        try:
            fuzz()
        except Unsatisfiable:
            # Only in the negative mode, when no input can break the schema: an operation
            # without parameters or body, or whose parameters are free text in the path.
            assert mode is GenerationMode.NEGATIVE, label
            impossible.append(mode.value)

    run(GenerationMode.POSITIVE, CHECKS)
    run(GenerationMode.NEGATIVE, NEGATIVE_CHECKS)
    total = counts["positive"] + counts["negative"]
    seen = " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))
    negative = "none possible" if impossible else f"{counts['negative']} not"
    print(
        f"api fuzz {app} {label}: {total} examples "
        f"({counts['positive']} conforming, {negative}), 0 failures; statuses {seen}"
    )
    assert statuses
    assert max(statuses) < 500
    # Hypothesis stops early only when it has tried every distinct input (no parameters).
    assert counts["positive"] >= (EXAMPLES if _has_inputs(operation) else 1)
    # The node's POSTs reach their handlers, not only the validation in front of them.
    if app == "node" and label in SUCCEEDING:
        assert any(200 <= status < 300 for status in statuses), f"{label}: no 2xx: {seen}"
    if app == "node" and label in REFUSED_BY_THE_WORKFLOW:
        assert statuses[409], f"{label}: never refused by the workflow: {seen}"


#: Who signs each step of the stateful phase: a caller allowed to take it, so the chains
#: (register, then read, then change or withdraw) go past authorisation too.
STATEFUL_CALLERS = {
    "/v1/participants": OPERATOR,
    "/v1/deliveries": OPERATOR,
    "/v1/ledger": AUDITOR,
    "/v1/audit": AUDITOR,
}


def _stateful_caller(label: str) -> str:
    path = label.split(" ", 1)[1]
    return next((c for p, c in STATEFUL_CALLERS.items() if path.startswith(p)), FOCAL_POINT)


@pytest.mark.parametrize("app", sorted(SCHEMAS))
def test_the_stateful_phase_chains_operations_without_a_failure(
    targets: dict[str, Target], app: str
) -> None:
    """Schemathesis' stateful phase: the links between operations (inferred from the
    schema: a consent registered, then read, then withdrawn; a participant registered, then
    given a key, then the key revoked ...) chained into scenarios of up to 8 calls."""
    target = targets[app]
    steps: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    class Workflow(SCHEMAS[app].as_state_machine()):  # type: ignore[misc]
        def call(self, case: Any, **kwargs: Any) -> Response:
            caller = _stateful_caller(case.operation.label) if app == "broker" else UNSIGNED
            response = target.send(case, caller)
            steps[case.operation.label] += 1
            statuses[response.status_code] += 1
            return Response.from_any(response)

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:  # kept: Hypothesis's replay of it may then turn flaky
                failures.append(f"{case.operation.label}: {exc}")
                raise

    # The scenarios run against a live broker whose state moves on (a dead letter re-queued
    # is gone from the list a later scenario draws from): a replay can then draw otherwise,
    # which Hypothesis calls a flaky strategy. As schemathesis' own runner does, go on in a
    # fresh session until the scenarios have made their calls; a failure still fails.
    budget, sessions = 2 * EXAMPLES, 0
    while sum(steps.values()) < budget and sessions < 20:
        sessions += 1
        try:
            Workflow.run(
                settings=settings(
                    phases=[Phase.explicit, Phase.generate],  # no shrinking against live state
                    max_examples=max(EXAMPLES // 4, 10),
                    stateful_step_count=8,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            continue
    seen = " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))
    print(
        f"api fuzz {app} stateful: {sum(steps.values())} calls over {len(steps)} operations "
        f"in {sessions} session(s), 0 failures; statuses {seen}"
    )
    assert failures == []
    assert sum(steps.values()) > 0
    assert max(statuses) < 500
