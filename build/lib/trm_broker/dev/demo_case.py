"""The demo's case: one whole case transfer through real nodes and a real broker.

Austria's focal point refers a (fictional) person to Nigeria's; with the person's consent,
the case goes through acceptance, a risk assessment, return preparation (the plan goes to
Nigeria's focal point and to the Nigerian shelter, which answers it and meets the person
before travel), reception by the shelter, a monitoring report and closure. Two refusals a
case worker should see are shown on the way, each with the broker's explanation.

Case workers give payloads only: each node computes the clear header and data categories
from the payload (trm_broker/domain/projections.py), and the recipient's node checks them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from trm_broker.dev.cluster import Node

SENDER = "at.focal-point"  # Austria: country of exploitation, where the case is opened
RECIPIENT = "ng.naptip"  # Nigeria: country of return (NAPTIP, the Nigerian NRM)
SHELTER = "ng.shelter"  # a receiving organisation registered in Nigeria's NRM

DEMO_REFERRAL: dict[str, Any] = {
    "destination_country": "NG",
    "identification_summary": "Fictional demo person identified during a labour inspection.",
    "form_of_exploitation": "forced_labour",
    "immediate_needs": ["shelter", "medical_check", "legal_counselling"],
    "languages": ["en", "pcm"],
    "interpreter_needed": True,
    "is_child": False,
}

#: What the return plan tells the shelter, so that it can prepare the reception.
DEMO_PLAN: dict[str, Any] = {
    "route": [{"mode": "air", "departure_place": "VIE", "arrival_place": "LOS"}],
    "escort": {"required": True, "roles": ["social_worker"]},
    "reintegration_plan": {"services": ["shelter", "psychological_support"]},
    "languages": ["en", "pcm"],
}


@dataclass
class CaseRun:
    """What happened: the messages accepted (step, message id) and the refusals shown."""

    case_ref: str
    consent_ref: str
    sent: list[tuple[str, str]] = field(default_factory=list)
    refusals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


#: A send answers `202 queued` at once (the node's outbox sends it in the background); the
#: demo waits for the broker's receipt or refusal instead (RFC 7240), to show each outcome.
WAIT_FOR_RECEIPT = "wait=10"


def _post(node: Node, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        node.url + path,
        json=body,
        # The sending organisation's own case worker (the shelter's for its steps).
        headers={
            "authorization": f"Bearer {node.token_for(body.get('sender'))}",
            "prefer": WAIT_FOR_RECEIPT,
        },
        timeout=20,
    )


def consent_body(case_ref: str, consent_ref: str, now: datetime) -> dict[str, Any]:
    """The person's consent, as the Austrian focal point registers it. It covers every step
    of the return with Nigeria's focal point and the shelter, for identity, health, family,
    contact, travel and other data, but not legal data: the second refusal below."""
    return {
        "id": consent_ref,
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": [
            "referral",
            "referral_response",
            "risk_assessment",
            "return_preparation",
            "reception_confirmation",
            "case_monitoring",
            "case_closure",
            "reception_plan_response",
            "pre_departure_contact",
        ],
        "recipients": [RECIPIENT, SHELTER, SENDER],
        "data_categories": ["identity", "health", "family", "contact", "travel", "other"],
        "valid_from": (now - timedelta(minutes=5)).isoformat(),
        "valid_until": (now + timedelta(days=3 * 365)).isoformat(),
        "form_digest": "sha-256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
    }


#: One step of the case: (path, sender, recipient, label, payload).
Step = tuple[str, str, str, str, dict[str, Any]]


def steps(now: datetime) -> list[Step]:
    """The case in order: (path, sender, recipient, label, payload). The payloads carry the
    facts the safeguards read; the nodes compute the headers from them."""
    arrival = now + timedelta(days=5)
    today = now.date().isoformat()
    return [
        ("referral", SENDER, RECIPIENT, "referral", DEMO_REFERRAL),
        ("referral-response", RECIPIENT, SENDER, "acceptance", {"accepted": True}),
        (
            "risk-assessment",
            RECIPIENT,
            SENDER,
            "risk assessment",
            {
                "risk_level": "low",
                "recommendation": "return",
                "assessed_at": now.isoformat(),
                "protective_factors": ["supportive_family"],
            },
        ),
        (
            "return-preparation",
            SENDER,
            RECIPIENT,
            "return preparation",
            {
                "receiving_org": SHELTER,
                "planned_arrival": arrival.isoformat(),
                "travel_date": arrival.date().isoformat(),
                **DEMO_PLAN,
            },
        ),
        # The shelter answers the plan it was sent, then meets the person before travel.
        (
            "reception-plan-response",
            SHELTER,
            SENDER,
            "plan answered: ready",
            {"readiness": "ready"},
        ),
        (
            "pre-departure-contact",
            SHELTER,
            SENDER,
            "pre-departure contact",
            {"contacted_at": now.isoformat(), "mode": "video", "counselling_given": True},
        ),
        (
            "reception-confirmation",
            SHELTER,
            SENDER,
            "reception confirmation",
            {"outcome": "received", "received_at": now.isoformat()},
        ),
        (
            "monitoring",
            SHELTER,
            SENDER,
            "monitoring report",
            {"period_start": today, "period_end": today},
        ),
        ("closure", SENDER, RECIPIENT, "closure", {"reason": "monitoring_completed"}),
    ]


def play_case(
    at: Node,
    ng: Node,
    case_ref: str,
    echo: Callable[[str], None] = print,
    payloads: Mapping[str, dict[str, Any]] | None = None,
) -> CaseRun:
    """Play the case through the nodes' local APIs; raise if anything unexpected happens.

    ``payloads`` replaces the payload of the steps it names by path (``"referral"``,
    ``"risk-assessment"``, ...), e.g. to fill every field of every form in a test."""
    now = datetime.now(UTC)
    run = CaseRun(case_ref, f"consent-{case_ref}")
    registered = _post(at, "/consents", {"consent": consent_body(case_ref, run.consent_ref, now)})
    if registered.status_code != 201:
        raise RuntimeError(f"the consent was refused: {registered.text}")
    echo(f"  consent {run.consent_ref} registered by {SENDER} (the signed form stays there)")
    nodes = {SENDER: at, RECIPIENT: ng, SHELTER: ng}
    plan = [
        (path, sender, recipient, label, (payloads or {}).get(path, payload))
        for path, sender, recipient, label, payload in steps(now)
    ]
    for index, (path, sender, recipient, label, payload) in enumerate(plan):
        if path == "risk-assessment" and not run.refusals:
            # First refusal: a return prepared before any risk assessment (TRM guidelines).
            detail = _refusal(run, at, case_ref, plan[3], "a return preparation, too early")
            echo(f"     refused: a return preparation before any risk assessment:\n       {detail}")
        if path == "return-preparation" and len(run.refusals) == 1:
            # Second refusal: data outside the consent's scope. The trafficking status is
            # legal data, which the consent leaves out: the node puts `legal` in the
            # message's data categories, and the broker refuses it.
            referral = plan[0]
            legal = referral[4] | {"trafficking_status": "actual_victim_of_trafficking"}
            detail = _refusal(run, at, case_ref, (*referral[:4], legal), "legal data")
            echo(f"     refused: a referral naming a trafficking status:\n       {detail}")
        if path == "return-preparation":
            # A risk assessment counts for a return once its recipient's node acknowledged it.
            _wait_acknowledged(at, case_ref, dict(run.sent)["risk assessment"])
        body = {
            "sender": sender,
            "recipient": recipient,
            "payload": payload,
            "consent_ref": run.consent_ref,
        }
        response = _post(nodes[sender], f"/cases/{case_ref}/{path}", body)
        if response.status_code != 201:
            raise RuntimeError(f"step {index + 1} ({label}) was refused: {response.text}")
        run.sent.append((label, response.json()["message_id"]))
        echo(f"  {index + 1}. {label:<23} {sender} -> {recipient}: accepted")
        if path == "return-preparation":
            _plan_reaches_the_shelter(run, nodes[SHELTER], response.json(), echo)
    return run


def _plan_reaches_the_shelter(
    run: CaseRun, shelter: Node, sent: dict[str, Any], echo: Callable[[str], None]
) -> None:
    """The node sent the plan on to the shelter, sealed to the shelter's key: wait until the
    shelter's node has opened it, and say what the shelter now knows."""
    to_org = sent["to_receiving_org"]
    if not to_org["sent"]:
        raise RuntimeError(f"the plan did not go to the shelter: {to_org['refused']}")
    run.sent.append(("return plan to shelter", to_org["message_id"]))
    plan = _opened(shelter, to_org["message_id"])["payload"]
    escort = plan.get("escort") or {}
    roles = ", ".join(escort.get("roles") or []) or "none"
    arrival = str(plan["planned_arrival"])[:16].replace("T", " ")
    echo(f"     {SHELTER} received the return plan, sealed to its own key:")
    echo(f"       arrival {arrival} UTC, escort {roles}")


def _opened(node: Node, message_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The message as the node's case workers read it, once delivered and opened there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(
            node.url + "/messages",
            headers={"authorization": f"Bearer {node.api_token}"},
            timeout=5,
        )
        for message in response.json()["messages"]:
            if message["message_id"] == message_id:
                found: dict[str, Any] = message
                return found
        time.sleep(0.2)
    raise TimeoutError(f"message {message_id} never reached {node.process.name}")


def _wait_acknowledged(node: Node, case_ref: str, message_id: str, timeout: float = 60) -> None:
    """Wait until the case's timeline at the broker (the `broker` part of ``node``'s case
    view) shows the message acknowledged by its recipient's node."""
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(
            f"{node.url}/cases/{case_ref}",
            headers={"authorization": f"Bearer {node.api_token}"},
            timeout=15,
        )
        view.raise_for_status()
        at_broker = view.json().get("broker") or {}
        items = {item["message_id"]: item for item in at_broker.get("timeline", [])}
        status = items.get(message_id, {}).get("delivery_status")
        if status == "acknowledged":
            return
        if status not in (None, "pending") or time.monotonic() > deadline:
            raise RuntimeError(f"message {message_id} was not acknowledged ({status})")
        time.sleep(0.2)


def _refusal(run: CaseRun, node: Node, case_ref: str, step: Step, what: str) -> str:
    """Send a message the broker must refuse; return its explanation."""
    path, sender, recipient, _, payload = step
    body = {
        "sender": sender,
        "recipient": recipient,
        "payload": payload,
        "consent_ref": run.consent_ref,
    }
    response = _post(node, f"/cases/{case_ref}/{path}", body)
    if response.status_code < 400:
        raise RuntimeError(f"the broker accepted a {what}")
    problem: dict[str, Any] = response.json()
    run.refusals.append((what, problem))
    return str(problem.get("detail", ""))
