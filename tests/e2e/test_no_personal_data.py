"""Issue 8, "no personal data at rest or in logs", with real processes on SQLite and PostgreSQL.

The demo's whole case is played with a unique canary in every field of every payload that
can hold free text (the fields are found by walking the payload models, so a new field is
covered without touching this test), then a consent withdrawal, and requests an attacker
would send with canaries in them (bad JSON, unknown members, unknown paths, headers). No
canary may reach the broker's database, the envelopes' clear claims, any process's log, the
broker's metrics or any problem the broker or the nodes answered. Then, once the consent is
withdrawn and the retention window (1 s here) has passed, no trace of any sealed payload may
remain in the broker's database: not its ciphertext, raw or base64url, nor the envelope it
travelled in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.e2e.test_transfer import broker_database_bytes, decoded_envelopes
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.dev import demo, demo_case
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS, check_payload
from trm_broker.node.app import CASE_CALLS
from trm_broker.store.database import create_engine
from trm_broker.store.models import Message
from trm_broker.web.signed_requests import SignedRequests

pytestmark = pytest.mark.e2e

CASE_REF = "AT-2026-E2E-CANARY"
#: Needles are cut into pieces this long: a row the database spread over several pages (or
#: left in part in a free page) still holds whole pieces of it.
PIECE = 32
_PROBE = "CANARY0123456789ABCDEF"
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class Canaries:
    """Unique strings, each remembering where it was put."""

    where: dict[str, str] = field(default_factory=dict)

    def new(self, where: str) -> str:
        canary = f"CANARY{secrets.token_hex(8).upper()}"
        self.where[canary] = where
        return canary


# --- a canary in every free-text field of every payload ------------------------------------


def _shape(annotation: Any) -> tuple[bool, Any]:
    """(is a list, the annotation of one value), with ``X | None`` unwrapped."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return True, _shape(typing.get_args(annotation)[0])[1]
    return False, annotation


def _takes_text(annotation: Any) -> bool:
    """Whether a field takes words: a string type that accepts an arbitrary canary. Codes do
    not (enums, ISO country codes, language tags) and keep the demo's valid values, as do
    dates, date-times and booleans, which cannot hold free text at all."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) else annotation
    if base is not str:  # enums (str subclasses), dates, booleans, numbers
        return False
    try:
        TypeAdapter(annotation).validate_python(_PROBE)
    except ValidationError:
        return False  # a pattern only codes match (Country, LanguageTag)
    return True


def with_canaries(
    model: type[BaseModel],
    base: Mapping[str, Any],
    canaries: Canaries,
    where: str,
    leave_out: set[str] | None = None,
) -> dict[str, Any]:
    """``base`` (a valid payload of ``model``) with a new canary in every field that takes text,
    at any depth (nested parts and list items included, filled in where ``base`` has none),
    but for the members ``leave_out`` names."""
    filled = dict(base)
    for name, info in model.model_fields.items():
        if name in (leave_out or set()):
            continue
        # A required member's constraints (a code's pattern) are its metadata, not its type.
        annotation = (
            typing.Annotated[(info.annotation, *info.metadata)]
            if info.metadata
            else info.annotation
        )
        is_list, item = _shape(annotation)
        at = f"{where}.{name}"
        if isinstance(item, type) and issubclass(item, BaseModel):
            if is_list:
                items = filled.get(name) or [{}]
                filled[name] = [
                    with_canaries(item, part, canaries, f"{at}[{n}]")
                    for n, part in enumerate(items)
                ]
            else:
                filled[name] = with_canaries(item, filled.get(name) or {}, canaries, at)
        elif _takes_text(item):
            filled[name] = [canaries.new(f"{at}[0]")] if is_list else canaries.new(at)
    return filled


#: Members the demo's case leaves out, by step: it is an adult's, under the person's own
#: consent, which does not cover legal data. A plan naming a guardian or a best-interests
#: determination makes a child's case (its header says so) and is refused.
ADULTS_CASE = {"return-preparation": {"guardian", "best_interests_determination"}}


def canary_case(canaries: Canaries) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The demo case's payloads by step, and a consent withdrawal's, full of canaries."""
    types_by_path = {call.path: call.message_type for call in CASE_CALLS}
    payloads = {
        path: with_canaries(
            PAYLOAD_MODELS[types_by_path[path]],
            payload,
            canaries,
            path,
            leave_out=ADULTS_CASE.get(path, set()),
        )
        for path, _, _, _, payload in demo_case.steps(datetime.now(UTC))
    }
    withdrawal = with_canaries(
        PAYLOAD_MODELS[MessageType.CONSENT_WITHDRAWAL],
        {"withdrawn_on": datetime.now(UTC).date().isoformat()},
        canaries,
        "consent-withdrawal",
    )
    covered = {types_by_path[path] for path in payloads} | {MessageType.CONSENT_WITHDRAWAL}
    assert covered == set(PAYLOAD_MODELS), "a message type the case does not send"
    for path, payload in [*payloads.items(), ("consent-withdrawal", withdrawal)]:
        assert check_payload(types_by_path[path], json.dumps(payload)) == [], path
        assert "CANARY" in json.dumps(payload), f"no field of {path} takes text?"
    return payloads, withdrawal


# --- canaries where an attacker would put them ---------------------------------------------


def attacker_requests(cluster: LocalCluster, at: Node, canaries: Canaries) -> list[httpx.Response]:
    """Requests the broker and the nodes must refuse, each carrying canaries; the answers."""
    assert cluster.broker is not None
    broker = cluster.broker.url
    signed = SignedRequests(at.keysets[0].signing)
    bearer = {"authorization": f"Bearer {at.api_token}"}
    consent = demo_case.consent_body(CASE_REF, "consent-attack", datetime.now(UTC))
    invalid_consent = {
        **consent,
        canaries.new("consent: an unknown member's name"): canaries.new("consent: its value"),
        "given_by": canaries.new("consent: given_by"),
        "form_digest": canaries.new("consent: form_digest"),
    }
    bad_json = ('{"consent": {"id": "' + canaries.new("bad JSON") + '", ').encode()
    unknown = f"/v1/{canaries.new('unknown path')}?{canaries.new('query name')}="
    unknown += canaries.new("query value")
    node_unknown = f"/{canaries.new('node: unknown path')}?q={canaries.new('node: query')}"
    referral = {
        "recipient": demo_case.RECIPIENT,
        "header": {"destination_country": canaries.new("node: header value")},
        "payload": {
            canaries.new("node: unknown payload member"): canaries.new("node: its value"),
            "is_child": canaries.new("node: is_child"),
            "languages": [canaries.new("node: a language")],
        },
        "consent_ref": "consent-attack",
    }
    headers = {
        "x-request-id": canaries.new("header: x-request-id"),
        "user-agent": canaries.new("header: user-agent"),
        "x-forwarded-for": canaries.new("header: x-forwarded-for"),
    }
    bad_signature = {
        "signature-input": f'trm=("{canaries.new("header: signature-input")}");keyid="k"',
        "signature": f"trm=:{canaries.new('header: signature')}:",
    }
    timeout = 10
    refused = [  # (the status that shows the request got as far as it should, the answer)
        (400, httpx.post(broker + "/v1/consents", content=bad_json, auth=signed, timeout=timeout)),
        (
            400,
            httpx.post(broker + "/v1/consents", json=invalid_consent, auth=signed, timeout=timeout),
        ),
        (401, httpx.post(broker + "/v1/consents", json=invalid_consent, timeout=timeout)),
        (400, httpx.post(broker + "/v1/messages", content=bad_json, auth=signed, timeout=timeout)),
        (404, httpx.get(broker + unknown, headers=headers, timeout=timeout)),
        (401, httpx.get(broker + "/v1/alerts", headers=bad_signature, timeout=timeout)),
        (400, httpx.post(at.url + "/consents", content=bad_json, headers=bearer, timeout=timeout)),
        (
            400,
            httpx.post(
                at.url + "/consents",
                json={"consent": invalid_consent},
                headers=bearer,
                timeout=timeout,
            ),
        ),
        (
            400,
            httpx.post(
                f"{at.url}/cases/{CASE_REF}/referral",
                json=referral,
                headers=bearer,
                timeout=timeout,
            ),
        ),
        (404, httpx.get(at.url + node_unknown, headers={**bearer, **headers}, timeout=timeout)),
        (
            401,
            httpx.get(
                at.url + "/messages",
                headers={"authorization": f"Bearer {canaries.new('node: bearer token')}"},
                timeout=timeout,
            ),
        ),
        (401, httpx.post(at.url + "/inbox", content=bad_json, timeout=timeout)),
    ]
    for status, response in refused:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    return [response for _, response in refused]


# --- where to look -------------------------------------------------------------------------

_HEX_BYTEA = re.compile(rb"\\x((?:[0-9a-f]{2})+)")
_B64URL_RUN = re.compile(rb"[A-Za-z0-9_-]{16,}")


def decoded_forms(data: bytes) -> bytes:
    """What ``data`` hides in encodings: PostgreSQL's hex ``bytea`` (as pg_dump writes it)
    decoded, then every base64url run decoded at each of the four alignments (a fragment of
    one, left in a free page, starts anywhere)."""
    unhexed = b"".join(binascii.unhexlify(run) for run in _HEX_BYTEA.findall(data))
    decoded = [unhexed]
    for run in _B64URL_RUN.findall(data + b"\n" + unhexed):
        for skip in range(4):
            text = run[skip:]
            text = text[: len(text) - len(text) % 4]
            decoded.append(base64.urlsafe_b64decode(text))
    return b"\n".join(decoded)


def sqlite_files_bytes(path: Path) -> bytes:
    """A SQLite database's bytes: the file and its WAL (where recent writes are)."""
    files = [Path(str(path) + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def stored_envelopes(cluster: LocalCluster) -> dict[str, bytes]:
    """The envelopes the broker holds now, by message id, exactly as they were sent."""

    async def read() -> dict[str, bytes]:
        engine = create_engine(cluster.database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(select(Message.id, Message.envelope))
                return {id_: bytes(env) for id_, env in rows.all() if env is not None}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def sealed_pieces(envelope: bytes) -> list[bytes]:
    """Pieces of what a sealed payload leaves behind, in every form it may be stored in: its
    ``ct`` and ``enc`` as base64url text and as raw bytes; the characters of the stored JWS
    payload text that encode them (and nothing else: the clear claims are also in receipts,
    which stay); and each of those hex-encoded (PostgreSQL ``bytea`` in a dump)."""
    jws_payload: str = json.loads(envelope)["payload"]
    claims = b64url_decode(jws_payload)
    sealed = json.loads(claims)["sealed"]
    forms = []
    for part in (sealed["ct"], sealed["enc"]):
        start = claims.index(f'"{part}"'.encode()) + 1
        end = start + len(part)
        # base64url writes 3 bytes as 4 characters: the whole groups within [start, end).
        encoded = jws_payload[-(-start // 3) * 4 : end // 3 * 4]
        forms += [part.encode(), b64url_decode(part), encoded.encode()]
    pieces = [form[i : i + PIECE] for form in forms for i in range(0, len(form) - PIECE + 1, PIECE)]
    return pieces + [piece.hex().encode() for piece in pieces]


def dumped_rows(dump: str, table: str) -> list[dict[str, str]]:
    """The rows of ``table`` in a pg_dump's COPY block (``\\N`` is NULL)."""
    match = re.search(
        rf"^COPY public\.{table} \((.*?)\) FROM stdin;\n(.*?)^\\\.$", dump, re.M | re.S
    )
    assert match, f"no {table} in the dump"
    columns = [c.strip().strip('"') for c in match.group(1).split(",")]
    return [
        dict(zip(columns, line.split("\t"), strict=True)) for line in match.group(2).splitlines()
    ]


def search(
    needles: Iterable[str], places: Mapping[str, bytes], forms: Callable[[str], list[bytes]]
) -> tuple[int, list[str]]:
    """Look for every needle, in every form, in every place: (checks done, hits)."""
    checks, hits = 0, []
    for needle in needles:
        for place, haystack in places.items():
            checks += 1
            if any(form in haystack for form in forms(needle)):
                hits.append(f"{needle} in {place}")
    return checks, hits


# --- the test ------------------------------------------------------------------------------


def test_no_personal_data_reaches_the_broker_and_no_payload_outlives_consent(
    tmp_path: Path, backend: str, broker_database: str | None
) -> None:
    canaries = Canaries()
    payloads, withdrawal_payload = canary_case(canaries)
    in_payloads = set(canaries.where)
    database = b""  # the broker's database, at each stage: a canary must never be in any
    envelopes = b""
    problems: list[str] = []
    with LocalCluster(tmp_path, broker_database_url=broker_database) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker(TRM_RETENTION_SECONDS="1")
        at = cluster.start_node("node-at", [demo_case.SENDER])
        ng = cluster.start_node("node-ng", [demo_case.RECIPIENT, demo_case.SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG", kinds={demo_case.SHELTER: "receiving_org"})

        # 1. The whole case, with its two refusals (which carry canaries too).
        case = demo_case.play_case(at, ng, CASE_REF, echo=lambda _: None, payloads=payloads)
        assert len(case.sent) == 10  # the return plan goes to NG and to the shelter
        assert len(case.refusals) == 2
        problems += [json.dumps(problem) for _, problem in case.refusals]
        for _, message_id in case.sent:
            demo.wait_acknowledged(cluster, message_id, at)

        # 2. What an attacker would send; every one is refused with a problem.
        for response in attacker_requests(cluster, at, canaries):
            problems.append(f"{response.headers}\n{response.text}")

        sealed = stored_envelopes(cluster)
        assert set(sealed) == {message_id for _, message_id in case.sent}
        database += broker_database_bytes(cluster)
        envelopes += decoded_envelopes(cluster)

        # 3. The person withdraws consent: the other messages' payloads go at once; the
        # withdrawal's own goes once acknowledged and past retention.
        body = {
            "sender": demo_case.SENDER,
            "recipient": demo_case.RECIPIENT,
            "payload": withdrawal_payload,
            "consent_ref": case.consent_ref,
        }
        sent = httpx.post(
            f"{at.url}/cases/{CASE_REF}/consent-withdrawal",
            json=body,
            # Wait for the receipt (RFC 7240), not only the outbox's 202.
            headers={"authorization": f"Bearer {at.api_token}", "prefer": "wait=10"},
            timeout=20,
        )
        assert sent.status_code == 201, sent.text
        withdrawal = sent.json()["message_id"]
        demo.wait_acknowledged(cluster, withdrawal, at)
        message_ids = [*(message_id for _, message_id in case.sent), withdrawal]
        sealed |= stored_envelopes(cluster)
        assert set(sealed) == set(message_ids)
        database += broker_database_bytes(cluster)
        # (decoded_envelopes reads every row, and the others are purged now: decode the
        # withdrawal's envelope and receipt here.)
        envelopes += b64url_decode(json.loads(sealed[withdrawal])["payload"])
        envelopes += b64url_decode(sent.json()["receipt"]["payload"])

        # Sanity: the canaries travelled (each is in its recipient's own decrypted store),
        # and we are looking at the right database, which held every sealed payload.
        recipients = {path: to for path, _, to, _, _ in demo_case.steps(datetime.now(UTC))}
        recipients["consent-withdrawal"] = demo_case.RECIPIENT
        node_of = {p: node for node in (at, ng) for p in (k.participant for k in node.keysets)}
        for node in (at, ng):
            held = sqlite_files_bytes(tmp_path / f"{node.process.name}.db")
            for canary in in_payloads:
                step = canaries.where[canary].split(".")[0]
                if node_of[recipients[step]] is node:
                    assert canary.encode() in held, f"{canaries.where[canary]} did not arrive"
        for message_id, envelope in sealed.items():
            assert message_id.encode() in database
            assert any(piece in database for piece in sealed_pieces(envelope)), message_id

        # 4. Retention, 1 s here: the broker's purger looks at start, then every minute.
        # The broker is killed, not stopped: a clean stop would checkpoint SQLite's WAL and
        # delete it, and so hide what the WAL still held of the payloads withdrawn above.
        time.sleep(1.1)
        broker.kill()
        broker = cluster.restart(broker)
        auth = SignedRequests(at.keysets[0].signing)

        def purged() -> bool | None:
            statuses = [
                httpx.get(f"{broker.url}/v1/messages/{message_id}", auth=auth, timeout=5).json()
                for message_id in message_ids
            ]
            restarted = broker.log_text().rsplit("--- restarted at", 1)[-1]
            done = all(s["payload_purged_at"] for s in statuses) and "payloads_purged" in restarted
            return True if done else None

        demo.eventually("the payloads' purge", purged)
        assert stored_envelopes(cluster) == {}
        metrics = httpx.get(broker.url + "/metrics", timeout=5).text
        after = broker_database_bytes(cluster)
        database += after
        cluster.stop()
        logs = {f"{p.name} log": p.log_text().encode() for p in cluster.processes}

    assert list(logs) == ["broker log", "node-at log", "node-ng log"]
    assert b"payloads_purged" in logs["broker log"]  # the logs hold what happened
    assert all(b"message_received" in logs[f"{node} log"] for node in ("node-at", "node-ng"))
    places = {
        "database": database + decoded_forms(database),
        "decoded envelopes": envelopes,
        **logs,
        "metrics": metrics.encode(),
        "problem bodies": "\n".join(problems).encode(),
    }
    checks, hits = search(
        canaries.where, places, lambda canary: [canary.encode(), canary.encode().hex().encode()]
    )
    print(
        f"canary search ({backend}): {len(canaries.where)} canaries ({len(in_payloads)} in "
        f"payloads, {len(canaries.where) - len(in_payloads)} in refused requests) {TIMES} "
        f"{len(places)} places ({', '.join(places)}) = {checks} checks, {len(hits)} hits"
    )
    # The sealed payloads are gone from the broker: no piece of any, in any form, in the
    # database's bytes (SQLite: the file, its free pages and its WAL) or in a log.
    # PostgreSQL keeps an updated row's old version (a dead tuple) until VACUUM reuses its
    # space, and pg_dump shows live rows only; so there the dump's rows are checked too.
    if make_url(cluster.database_url).get_backend_name() != "sqlite":
        rows = dumped_rows(after.decode(), "messages")
        assert sorted(row["id"] for row in rows) == sorted(message_ids)
        assert all(row["envelope"] == r"\N" and row["purged_at"] != r"\N" for row in rows)
    remains = {"database": after, "logs": b"\n".join(logs.values()), "metrics": metrics.encode()}
    pieces = {message_id: sealed_pieces(envelope) for message_id, envelope in sealed.items()}
    ct_checks, ct_hits = search(pieces, remains, lambda message_id: pieces[message_id])
    print(
        f"sealed payloads after withdrawal and retention ({backend}): {len(pieces)} messages, "
        f"{sum(map(len, pieces.values()))} pieces (ct, enc and the stored JWS; raw, base64url, "
        f"hex) {TIMES} {len(remains)} places ({', '.join(remains)}) = {ct_checks} checks, "
        f"{len(ct_hits)} hits"
    )
    # Both searches ran and printed their counts; now each must have found nothing.
    assert not hits, "personal data at the broker or in an answer:\n" + "\n".join(
        f"{hit} (put in {canaries.where[hit.split()[0]]})" for hit in hits
    )
    assert not ct_hits, "sealed payloads left at the broker:\n" + "\n".join(ct_hits)
