"""Real case state for fuzzing the node's API, so its POSTs reach their handlers.

Generated bodies alone are refused by the node's validation (400/422) or the broker's
(an unknown recipient, a consent nobody registered, a case never referred): the handlers
behind them never run. Here the node's participant (Austria's focal point) and a peer
(Nigeria's) are registered at the broker, and each node operation gets a pool of its own
(each pool built on first use, so the operations' order does not matter):

- cases with a consent and nothing sent yet (a referral, or any message type by `POST
  /messages`), cases the peer referred to the node (its acceptance), cases the node
  referred and the peer accepted and assessed (a risk assessment, a return preparation, a
  closure, a consent withdrawal);
- consents the node registered (to withdraw), fresh consents (to register);
- real pushes to the node: envelopes the peer sent it, with the broker's receipts.

:func:`valid_bodies` draws, for one operation, a request that should succeed: the case's
real references with a body a case worker would send (the demo case's), or with the
fuzzer's own payload under the real references.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.security.world import SHELTER, consent_body
from tests.support import Broker, envelope
from trm_broker.crypto.keys import KeySet
from trm_broker.dev.demo_case import DEMO_REFERRAL
from trm_broker.domain.messages import MessageType

NODE_KEYS = KeySet.generate("at.fuzzed-node")  # the node's participant: a focal point in AT
PEER = KeySet.generate("ng.fuzz-peer")  # its counterpart: a focal point in NG
POOL = 6  # cases (or consents, pushes) per operation

#: The node's POST operations that must answer 2xx to some of the bodies drawn here.
SUCCEEDING = frozenset(
    {
        "POST /inbox",
        "POST /messages",
        "POST /consents",
        "POST /consents/{consent_id}/withdraw",
        "POST /cases/{case_ref}/referral",
        "POST /cases/{case_ref}/referral-response",
        "POST /cases/{case_ref}/risk-assessment",
        "POST /cases/{case_ref}/return-preparation",
        "POST /cases/{case_ref}/closure",
        "POST /cases/{case_ref}/consent-withdrawal",
    }
)
#: The node's participant, a focal point, may never send these (only a receiving
#: organisation answers a return plan, meets the person before travel, confirms a reception
#: or, after it, reports monitoring): the broker's workflow refuses them (409), which is the
#: handler reached, not the validation.
REFUSED_BY_THE_WORKFLOW = frozenset(
    {
        "POST /cases/{case_ref}/reception-plan-response",
        "POST /cases/{case_ref}/pre-departure-contact",
        "POST /cases/{case_ref}/reception-confirmation",
        "POST /cases/{case_ref}/monitoring",
    }
)


@dataclass(frozen=True)
class Case:
    case_ref: str
    consent_id: str


def _steps(now: datetime, destination: str = "NG") -> dict[str, dict[str, Any]]:
    """The payload a case worker would send for each per-type call, now (a referral to a
    focal point of ``destination``); the node computes each header from it."""
    arrival = now + timedelta(days=5)
    today = now.date().isoformat()
    return {
        "referral": DEMO_REFERRAL | {"destination_country": destination},
        "referral-response": {"accepted": True},
        "risk-assessment": {
            "risk_level": "low",
            "recommendation": "return",
            "assessed_at": now.isoformat(),
            "protective_factors": [],
        },
        "return-preparation": {
            "receiving_org": SHELTER.participant,
            "planned_arrival": arrival.isoformat(),
            "travel_date": arrival.date().isoformat(),
        },
        "reception-plan-response": {"readiness": "ready"},
        "pre-departure-contact": {"contacted_at": now.isoformat()},
        "reception-confirmation": {"outcome": "received", "received_at": now.isoformat()},
        "monitoring": {"period_start": today, "period_end": today},
        "closure": {"reason": "monitoring_completed"},
        "consent-withdrawal": {},
    }


@dataclass
class NodeWorld:
    """The node's peer and the pools of real state, built through the broker's API."""

    broker: Broker
    pools: dict[str, list[Any]] = field(default_factory=dict)

    async def register(self) -> None:
        for keyset, country in ((NODE_KEYS, "AT"), (PEER, "NG")):
            response = await self.broker.register(keyset, country)
            assert response.status_code == 201, response.text

    async def _consent(self, registrant: KeySet, recipients: list[KeySet]) -> Case:
        case = Case(f"FZ-{uuid.uuid4().hex[:12]}", f"cns-fz-{uuid.uuid4().hex[:12]}")
        body = consent_body(case.consent_id, case.case_ref, [r.participant for r in recipients])
        response = await self.broker.call("POST", "/v1/consents", registrant, json=body)
        assert response.status_code == 201, response.text
        return case

    async def _send(
        self, sender: KeySet, recipient: KeySet, kind: MessageType, step: str, case: Case
    ) -> dict[str, Any]:
        """Send one message through the broker as ``sender``; the push the broker would
        make of it (the envelope and its receipt)."""
        destination = "AT" if recipient is NODE_KEYS else "NG"
        payload = _steps(datetime.now(UTC), destination)[step]
        signed = envelope(
            sender,
            recipient,
            kind,
            None,  # the header a node computes from the payload
            case_ref=case.case_ref,
            consent_ref=case.consent_id,
            payload=payload,
        )
        response = await self.broker.submit(signed)
        assert response.status_code == 202, response.text
        return {"envelope": signed, "receipt": response.json()["receipt"]}

    async def open_case(self) -> Case:
        """A consent the node registered for the peer; nothing sent yet."""
        return await self._consent(NODE_KEYS, [PEER, NODE_KEYS])

    async def referred_to_the_node(self) -> Case:
        """The peer referred a case to the node: the node may answer it."""
        case = await self._consent(PEER, [NODE_KEYS, PEER])
        await self._send(PEER, NODE_KEYS, MessageType.REFERRAL, "referral", case)
        return case

    async def accepted(self) -> Case:
        """The node referred a case, the peer accepted it and assessed a return."""
        case = await self.open_case()
        await self._send(NODE_KEYS, PEER, MessageType.REFERRAL, "referral", case)
        await self._send(PEER, NODE_KEYS, MessageType.REFERRAL_RESPONSE, "referral-response", case)
        assessed = await self._send(
            PEER, NODE_KEYS, MessageType.RISK_ASSESSMENT, "risk-assessment", case
        )
        # The node's answer to it (a return counts only an acknowledged assessment).
        await self.broker.acknowledge(assessed["envelope"])
        return case

    async def push(self) -> dict[str, Any]:
        """A real push to the node: the peer's referral, with the broker's receipt."""
        case = await self._consent(PEER, [NODE_KEYS, PEER])
        return await self._send(PEER, NODE_KEYS, MessageType.REFERRAL, "referral", case)

    async def pool(self, label: str) -> list[Any]:
        """The real state ``label``'s requests draw from (built on first use)."""
        if label not in self.pools:
            path = label.split(" ", 1)[1]
            step = path.rsplit("/", 1)[-1]
            make: Callable[[], Awaitable[Any]]
            if path == "/inbox":
                make = self.push
            elif path == "/consents":
                make = self.open_case  # unused: a fresh consent per request
            elif step == "referral-response":
                make = self.referred_to_the_node
            elif step == "referral" or path in ("/messages", "/consents/{consent_id}/withdraw"):
                make = self.open_case
            else:
                make = self.accepted
            self.pools[label] = [await make() for _ in range(POOL)]
        return self.pools[label]


def _message_body(case: Case, payload: Any) -> dict[str, Any]:
    return {"recipient": PEER.participant, "payload": payload, "consent_ref": case.consent_id}


def valid_bodies(label: str, pool: list[Any]) -> st.SearchStrategy[tuple[dict[str, Any], Any]]:
    """(path parameters, body) for a request of ``label`` that should succeed: real state,
    with a case worker's body, or the fuzzer's payload under real references
    (``generated``: the fuzzer's body for the operation, drawn beside)."""
    path = label.split(" ", 1)[1]
    now = st.builds(lambda: datetime.now(UTC))  # drawn per example: times stay current
    if path == "/inbox":
        return st.tuples(st.just({}), st.sampled_from(pool))
    if path == "/consents":
        # Drawn ids (not uuid4() in a callable): hypothesis runs each distinct draw once.
        fresh = st.builds(lambda u: Case(f"FZ-{u.hex[:12]}", f"cns-fz-{u}"), st.uuids())
        return st.tuples(
            st.just({}),
            fresh.map(
                lambda c: {"consent": consent_body(c.consent_id, c.case_ref, [PEER.participant])}
            ),
        )
    if path == "/consents/{consent_id}/withdraw":
        return st.tuples(
            st.sampled_from(pool).map(lambda c: {"consent_id": c.consent_id}), st.just(None)
        )
    if path == "/messages":

        def referral(case: Case, moment: datetime) -> dict[str, Any]:
            return {
                "type": MessageType.REFERRAL.value,
                "case_ref": case.case_ref,
                **_message_body(case, _steps(moment)["referral"]),
            }

        return st.tuples(st.just({}), st.builds(referral, st.sampled_from(pool), now))
    step = path.rsplit("/", 1)[-1]

    def typed(case: Case, moment: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"case_ref": case.case_ref}, _message_body(case, _steps(moment)[step])

    return st.builds(typed, st.sampled_from(pool), now)


def with_real_references(generated: Any, case: Case) -> Any:
    """The fuzzer's body for a case call, addressed as a real one: its own payload reaches
    the payload checks, the header computed from it and the broker's workflow, not only the
    validation (its own header and categories are left out: they would contradict it)."""
    if not isinstance(generated, dict):
        return generated
    body = {k: v for k, v in generated.items() if k not in ("header", "data_categories")}
    return {**body, "recipient": PEER.participant, "consent_ref": case.consent_id}
