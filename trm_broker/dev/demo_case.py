"""The demo's case: one whole case transfer through real nodes and a real broker.

Austria's focal point refers a (fictional) person to Nigeria's; with the person's consent,
the case goes through acceptance, a risk assessment, return preparation, reception by a
Nigerian shelter, a monitoring report and closure. Two refusals a case worker should see
are shown on the way, each with the broker's explanation.

Case workers give payloads only: each node computes the clear header and data categories
from the payload (trm_broker/domain/projections.py), and the recipient's node checks them.
"""

from __future__ import annotations

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


@dataclass
class CaseRun:
    """What happened: the messages accepted (step, message id) and the refusals shown."""

    case_ref: str
    consent_ref: str
    sent: list[tuple[str, str]] = field(default_factory=list)
    refusals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _post(node: Node, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        node.url + path,
        json=body,
        headers={"authorization": f"Bearer {node.api_token}"},
        timeout=15,
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
            },
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
    return run


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
