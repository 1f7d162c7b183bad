"""Case transfers the console's tests drive through the broker's API: one that returns
late (its reception confirmed after the planned arrival plus grace), one whose reception
is overdue and still open. Run them with ``TRM_MIN_NOTICE_SECONDS`` and
``TRM_RECEPTION_GRACE_SECONDS`` at 0, so that late comes in seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import Broker, envelope, referral
from trm_broker.background.alert_scheduler import AlertScheduler
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")
T = MessageType
#: How far ahead the planned arrival is: the reception comes after it.
ARRIVAL_IN = timedelta(seconds=1)


async def register_parties(broker: Broker) -> None:
    parties = [(AT, "AT", "focal_point"), (NG, "NG", "focal_point")]
    for keyset, country, kind in [*parties, (SHELTER, "NG", "receiving_org")]:
        inbox = f"https://{keyset.participant}.example/inbox"
        made = await broker.register(keyset, country, kind=kind, inbox_url=inbox)
        assert made.status_code == 201, made.text


def _send(
    sender: KeySet, recipient: KeySet, kind: MessageType, header: dict[str, Any], case: str
) -> dict[str, str]:
    return envelope(sender, recipient, kind, header, case_ref=case, consent_ref=f"consent-{case}")


async def _submit(broker: Broker, message: dict[str, str]) -> None:
    sent = await broker.submit(message)
    assert sent.status_code == 202, sent.text


async def return_prepared(broker: Broker, case: str) -> datetime:
    """Referred, accepted, assessed and prepared, arriving in a second: the planned arrival."""
    now = datetime.now(UTC)
    consent = {
        "id": f"consent-{case}",
        "case_ref": case,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": [NG.participant, SHELTER.participant, AT.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "B" * 43,
    }
    assert (await broker.call("POST", "/v1/consents", AT, json=consent)).status_code == 201
    await _submit(broker, referral(AT, NG, case_ref=case))
    await _submit(broker, _send(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case))
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": now.isoformat()}
    assessed = _send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    await _submit(broker, assessed)
    await broker.acknowledge(assessed)
    arrival = datetime.now(UTC) + ARRIVAL_IN
    plan = {"receiving_org": SHELTER.participant, "planned_arrival": arrival.isoformat()}
    await _submit(broker, _send(AT, NG, T.RETURN_PREPARATION, plan, case))
    return arrival


async def returned_late(broker: Broker, case: str) -> datetime:
    """A case whose reception is confirmed after its planned arrival (grace 0), then
    monitored once: the planned arrival."""
    arrival = await return_prepared(broker, case)
    await asyncio.sleep(max(0.0, (arrival - datetime.now(UTC)).total_seconds()) + 0.2)
    reception = {"outcome": "received", "at": datetime.now(UTC).isoformat()}
    await _submit(broker, _send(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case))
    today = datetime.now(UTC).date().isoformat()
    period = {"period_start": today, "period_end": today}
    await _submit(broker, _send(SHELTER, NG, T.CASE_MONITORING, period, case))
    return arrival


async def left_overdue(broker: Broker, case: str) -> None:
    """A case whose reception is overdue, its alert raised and still open."""
    arrival = await return_prepared(broker, case)
    state = broker.app.state.broker
    scheduler = AlertScheduler(state.sessions, state.rules())
    assert await scheduler.run_once(arrival + timedelta(seconds=5)) == (1, 0)
