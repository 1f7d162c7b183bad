"""A withdrawal reaches every party of the case: an alert each (the receiving organisation
included, before any message reached it; delivered or not), and the ledger's
`consent.withdrawn` entry names the countries concerned, so an auditor's search finds it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.security.world import integrated
from tests.support import Broker, broker_settings, envelope, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.domain.times import rfc3339

AT = KeySet.generate("at.focal-point")  # sending focal point
NG = KeySet.generate("ng.naptip")  # destination focal point
SHELTER = KeySet.generate("ng.shelter")  # receiving organisation in Nigeria
FR = KeySet.generate("fr.focal-point")  # no party of the case
AUDITOR = KeySet.generate("at.rapporteur")
T = MessageType
PURPOSES = [T.REFERRAL, T.REFERRAL_RESPONSE, T.RISK_ASSESSMENT, T.RETURN_PREPARATION]


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
            (FR, "FR", "focal_point"),
            (AUDITOR, "AT", "auditor"),
        ]:
            inbox = f"https://{keyset.participant}.example/inbox"
            response = await b.register(keyset, country, kind=kind, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield b


async def opened(broker: Broker, case: str) -> str:
    """A case referred under a consent naming NG and the shelter; the consent's id."""
    consent = f"consent-{case}"
    body = {
        "id": consent,
        "case_ref": case,
        "given_by": "person",
        "purposes": [t.value for t in PURPOSES],
        "recipients": [NG.participant, SHELTER.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "C" * 43,
    }
    assert (await broker.call("POST", "/v1/consents", AT, json=body)).status_code == 201
    return consent


async def sent(
    broker: Broker,
    sender: KeySet,
    recipient: KeySet,
    kind: MessageType,
    header: dict[str, Any],
    case: str,
    *,
    acknowledged: bool,
) -> str:
    """Submit a message under the case's consent; with ``acknowledged``, the recipient then
    answers it through the pull inbox, as its node would. Its id."""
    signed = envelope(
        sender,
        recipient,
        kind,
        header,
        case_ref=case,
        consent_ref=f"consent-{case}",
        data_categories=[DataCategory.IDENTITY],
    )
    response = await broker.submit(signed)
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message_id"]
    if acknowledged:
        claims = AckClaims(
            v=1,
            message_id=message_id,
            envelope_digest=jws.digest(signed),
            recipient=recipient.participant,
            received_at=rfc3339(datetime.now(UTC)),
            status="received",
        )
        ack = jws.sign(claims.signed_claims(), recipient.signing, jws.TYP_ACK)
        answer = await broker.call(
            "POST", f"/v1/inbox/{message_id}/ack", recipient, json={"ack": ack}
        )
        assert answer.status_code == 200, answer.text
    return message_id


async def prepared(broker: Broker, case: str) -> None:
    """Referred, accepted, assessed and prepared for return with the shelter, every message
    answered by its recipient; no message went to the shelter."""
    now = datetime.now(UTC)
    referral = {"destination_country": "NG", "subject_is_minor": False}
    steps: list[tuple[KeySet, KeySet, MessageType, dict[str, Any]]] = [
        (AT, NG, T.REFERRAL, referral),
        (NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}),
        (
            NG,
            AT,
            T.RISK_ASSESSMENT,
            {"risk_level": "low", "return_recommended": True, "assessed_at": now.isoformat()},
        ),
        (
            AT,
            NG,
            T.RETURN_PREPARATION,
            {
                "receiving_org": SHELTER.participant,
                "planned_arrival": (now + timedelta(days=5)).isoformat(),
            },
        ),
    ]
    for sender, recipient, kind, header in steps:
        await sent(broker, sender, recipient, kind, header, case, acknowledged=True)


async def alerted(broker: Broker, reader: KeySet, case: str) -> list[list[str]]:
    response = await broker.call("GET", f"/v1/alerts?case_ref={case}", reader)
    assert response.status_code == 200, response.text
    alerts = response.json()["alerts"]
    return sorted(a["parties"] for a in alerts if a["kind"] == "consent_withdrawn")


async def withdrawn_entry(broker: Broker, query: str) -> list[dict[str, Any]]:
    await integrated(broker)
    response = await broker.call("GET", f"/v1/ledger/search?{query}", AUDITOR)
    assert response.status_code == 200, response.text
    return [item["entry"] for item in response.json()["entries"]]


async def test_a_withdrawal_reaches_the_receiving_organisation_before_any_message_did(
    broker: Broker,
) -> None:
    case = "AT-2026-0301"
    consent = await opened(broker, case)
    await prepared(broker, case)

    withdrawn = await broker.call("POST", f"/v1/consents/{consent}/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text

    # One alert for each party of the case, naming it first and the registrant second.
    assert await alerted(broker, SHELTER, case) == [[SHELTER.participant, AT.participant]]
    assert await alerted(broker, NG, case) == [[NG.participant, AT.participant]]
    assert await alerted(broker, AT, case) == [
        [NG.participant, AT.participant],
        [SHELTER.participant, AT.participant],
    ]  # the registrant is told of no alert meant for itself
    assert await alerted(broker, FR, case) == []
    # The shelter's alert is in the ledger as an entry it can read and prove.
    await integrated(broker)
    query = f"/v1/ledger/search?case_ref={case}&type=alert.raised"
    raised = await broker.call("GET", query, SHELTER)
    assert [(e["entry"]["parties"], e["entry"]["countries"]) for e in raised.json()["entries"]] == [
        ([SHELTER.participant, AT.participant], ["AT", "NG"])
    ]


async def test_the_withdrawal_reaches_whoever_holds_data_delivered_or_not(broker: Broker) -> None:
    """The referral is still on its way to NG (no answer): NG is alerted all the same."""
    case = "AT-2026-0302"
    consent = await opened(broker, case)
    referral = {"destination_country": "NG", "subject_is_minor": False}
    await sent(broker, AT, NG, T.REFERRAL, referral, case, acknowledged=False)

    assert (await broker.call("POST", f"/v1/consents/{consent}/withdraw", AT)).status_code == 200

    assert await alerted(broker, NG, case) == [[NG.participant, AT.participant]]
    (entry,) = await withdrawn_entry(broker, f"case_ref={case}&type=consent.withdrawn")
    assert (entry["notified"], entry["deliveries_dropped"]) == ([NG.participant], 1)


async def test_an_auditors_search_by_either_country_finds_the_withdrawal(broker: Broker) -> None:
    case = "AT-2026-0303"
    consent = await opened(broker, case)
    await prepared(broker, case)
    assert (await broker.call("POST", f"/v1/consents/{consent}/withdraw", AT)).status_code == 200

    for country in ("AT", "NG"):
        found = await withdrawn_entry(broker, f"country={country}&type=consent.withdrawn")
        assert [(e["case_ref"], e["consent_id"]) for e in found] == [(case, consent)], country
    (entry,) = found
    assert entry["parties"] == [AT.participant]
    assert entry["countries"] == ["AT", "NG"]
    assert entry["notified"] == [NG.participant, SHELTER.participant]
    assert await withdrawn_entry(broker, "country=FR&type=consent.withdrawn") == []
    # The entry says who was told and where, and nothing else (no payload, no name).
    assert set(entry) == {
        "v",
        "type",
        "at",
        "parties",
        "countries",
        "case_ref",
        "consent_id",
        "deliveries_dropped",
        "notified",
    }
    assert json.dumps(entry).isascii()
