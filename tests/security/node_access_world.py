"""A node serving two organisations, `ng.naptip` (Nigeria's focal point) and `ng.shelter` (a
receiving organisation), with users of each in every role, and real messages of both
received through the broker: the world of the node's access matrix.

- Case A: Austria refers a case to NAPTIP, NAPTIP accepts it and assesses the risk (sent by
  NAPTIP's case worker through the node), Austria prepares the return with the shelter: NAPTIP
  and the shelter each receive the plan, NAPTIP also the referral.
- Case B: Austria refers another case to NAPTIP; the shelter is no party to it.

Austria has no node here: its messages are signed and submitted straight to the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.node.harness import node_settings, running_node
from tests.security.world import consent_body
from tests.support import Broker, envelope, polling
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import MessageType
from trm_broker.node import users
from trm_broker.node.users import IssuedToken, NodeUser, Role

AT = KeySet.generate("at.focal-point")
NAPTIP = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")
ADMIN_TOKEN = "node-administrator-token-0123456789"
T = MessageType

#: The matrix's callers (columns): a user of each organisation in each role, the
#: administrator's token, a revoked token, a disabled user's token, a user of an
#: organisation the node no longer serves, and no credential at all.
N_CW, N_SUP, N_RO = "naptip.cw", "naptip.sup", "naptip.ro"
S_CW, S_SUP, S_RO = "shelter.cw", "shelter.sup", "shelter.ro"
ADMIN, REVOKED, DISABLED, GONE, NOBODY = "admin", "revoked", "disabled", "gone", "nobody"
CALLERS = (N_CW, N_SUP, N_RO, S_CW, S_SUP, S_RO, ADMIN, REVOKED, DISABLED, GONE, NOBODY)
USERS: dict[str, tuple[str, Role]] = {
    N_CW: (NAPTIP.participant, Role.CASE_WORKER),
    N_SUP: (NAPTIP.participant, Role.SUPERVISOR),
    N_RO: (NAPTIP.participant, Role.READ_ONLY),
    S_CW: (SHELTER.participant, Role.CASE_WORKER),
    S_SUP: (SHELTER.participant, Role.SUPERVISOR),
    S_RO: (SHELTER.participant, Role.READ_ONLY),
    REVOKED: (SHELTER.participant, Role.CASE_WORKER),
    DISABLED: (NAPTIP.participant, Role.CASE_WORKER),
}


def organisation(caller: str) -> str | None:
    """The organisation a caller acts for (None: the administrator, or nobody)."""
    if caller in USERS:
        return USERS[caller][0]
    return "ng.gone" if caller == GONE else None


def other(caller: str) -> str:
    """The served organisation that is not the caller's (NAPTIP's for the administrator)."""
    return SHELTER.participant if organisation(caller) == NAPTIP.participant else NAPTIP.participant


@dataclass
class NodeWorld:
    broker: Broker
    node: httpx.AsyncClient
    database_url: str
    tokens: dict[str, str] = field(default_factory=dict)
    case: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)
    #: Message ids received, by recipient, and by case ("A", "B").
    received: dict[str, set[str]] = field(default_factory=dict)
    in_case: dict[str, set[str]] = field(default_factory=dict)
    #: Message ids NAPTIP's case worker sent through the node (its outbox).
    sent: list[str] = field(default_factory=list)

    def auth(self, caller: str) -> dict[str, str]:
        token = self.tokens.get(caller)
        return {"authorization": f"Bearer {token}"} if token else {}


def utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def payloads(now: datetime) -> dict[str, dict[str, Any]]:
    """A payload a case worker would send for each per-type call."""
    arrival = now + timedelta(days=6)
    today = now.date().isoformat()
    return {
        "referral": {"destination_country": "NG", "is_child": False},
        "referral-response": {"accepted": True},
        "risk-assessment": {
            "risk_level": "low",
            "recommendation": "return",
            "assessed_at": now.isoformat(),
        },
        "return-preparation": {
            "receiving_org": SHELTER.participant,
            "planned_arrival": utc(arrival),
            "travel_date": arrival.date().isoformat(),
        },
        "reception-plan-response": {"readiness": "ready"},
        "pre-departure-contact": {"contacted_at": now.isoformat()},
        "reception-confirmation": {"outcome": "received", "received_at": now.isoformat()},
        "monitoring": {"period_start": today, "period_end": today},
        "closure": {"reason": "monitoring_completed"},
        "consent-withdrawal": {},
    }


async def _make_users(node_database: str) -> dict[str, str]:
    """The users, straight in the node's database (`trm-broker node users` does the same)."""
    from trm_broker.store.database import create_engine, session_factory

    engine = create_engine(node_database)
    tokens: dict[str, str] = {}
    now = datetime.now(UTC)
    try:
        async with session_factory(engine)() as session:
            for name, (org, role) in USERS.items():
                issued: IssuedToken = await users.add_user(session, name, org, role, now)
                tokens[name] = issued.token
            revoked = await users.tokens(session, REVOKED)
            await users.revoke_token(session, revoked[0].id, now)
            await users.disable(session, DISABLED, now)
            # A user of an organisation whose key file the node no longer has.
            session.add(
                NodeUser(name=GONE, organisation="ng.gone", role=Role.CASE_WORKER, created_at=now)
            )
            await session.flush()
            tokens[GONE] = (await users.new_token(session, GONE, now)).token
            await session.commit()
    finally:
        await engine.dispose()
    tokens[ADMIN] = ADMIN_TOKEN
    return tokens


async def _from_austria(
    world: NodeWorld, recipient: KeySet, kind: MessageType, payload: dict[str, Any], case: str
) -> dict[str, str]:
    signed = envelope(
        AT,
        recipient,
        kind,
        None,
        case_ref=world.case[case],
        consent_ref=world.consent[case],
        payload=payload,
    )
    response = await world.broker.submit(signed)
    assert response.status_code == 202, response.text
    return signed


async def _open_case(world: NodeWorld, case: str, recipients: list[KeySet]) -> None:
    world.case[case] = f"AT-{case}{uuid.uuid4().hex[:10].upper()}"
    world.consent[case] = f"cns-{case.lower()}-{uuid.uuid4().hex[:10]}"
    body = consent_body(world.consent[case], world.case[case], [r.participant for r in recipients])
    response = await world.broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text


async def _as_naptip(world: NodeWorld, step: str, case: str) -> str:
    """NAPTIP's case worker sends a step through the node, naming no sender."""
    body = {
        "recipient": AT.participant,
        "payload": payloads(datetime.now(UTC))[step],
        "consent_ref": world.consent[case],
    }
    response = await world.node.post(
        f"/cases/{world.case[case]}/{step}", json=body, headers=world.auth(N_CW)
    )
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    world.sent.append(message_id)
    return message_id


async def _received(world: NodeWorld, expected: int) -> None:
    """Wait until the node's puller stored ``expected`` messages."""
    found: list[dict[str, Any]] = []
    async for _ in polling():
        response = await world.node.get("/messages", headers=world.auth(ADMIN))
        found = response.json()["messages"]
        if len(found) >= expected:
            break
    assert len(found) == expected, found
    cases = {ref: name for name, ref in world.case.items()}
    for message in found:
        world.received.setdefault(message["recipient"], set()).add(message["message_id"])
        world.in_case.setdefault(cases[message["case_ref"]], set()).add(message["message_id"])


@asynccontextmanager
async def node_world(
    broker: Broker, tmp_path: Path, *, database: str | None = None, **overrides: Any
) -> AsyncIterator[NodeWorld]:
    """The world above, on the node database ``database`` (a new SQLite file by default);
    ``overrides`` are the node's further settings (single sign-on)."""
    for keyset, kind in ((NAPTIP, "focal_point"), (SHELTER, "receiving_org")):
        assert (await broker.register(keyset, "NG", kind=kind)).status_code == 201
    assert (await broker.register(AT, "AT")).status_code == 201
    database = database or f"sqlite+aiosqlite:///{tmp_path / 'ng-node.db'}"
    settings = node_settings(
        tmp_path,
        [NAPTIP, SHELTER],
        database,
        node_api_token=ADMIN_TOKEN,
        node_pull=True,
        node_pull_wait_seconds=0.2,
        **overrides,
    )
    transport = httpx.ASGITransport(app=broker.app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://broker") as to_broker,
        running_node(settings, to_broker) as node,
    ):
        world = NodeWorld(broker, node, database, await _make_users(database))
        # Case A, through to the return plan for NAPTIP and the shelter.
        steps = payloads(datetime.now(UTC))
        await _open_case(world, "A", [NAPTIP, SHELTER, AT])
        await _from_austria(world, NAPTIP, T.REFERRAL, steps["referral"], "A")
        await _as_naptip(world, "referral-response", "A")
        assessment = await _as_naptip(world, "risk-assessment", "A")
        inbox = (await broker.call("GET", "/v1/inbox", AT)).json()["items"]
        assessed = next(i["envelope"] for i in inbox if i["message_id"] == assessment)
        await broker.acknowledge(assessed)  # Austria's node would
        plan = steps["return-preparation"]
        await _from_austria(world, NAPTIP, T.RETURN_PREPARATION, plan, "A")
        await _from_austria(world, SHELTER, T.RETURN_PREPARATION, plan, "A")
        # Case B: NAPTIP's only.
        await _open_case(world, "B", [NAPTIP, AT])
        await _from_austria(world, NAPTIP, T.REFERRAL, steps["referral"], "B")
        await _received(world, 4)
        yield world
