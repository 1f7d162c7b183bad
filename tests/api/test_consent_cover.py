"""Which consent covers a message, through the broker's API: only one its case's sending
focal point registered, and one whose scope covers it; any other is answered as an unknown
id. The accept path reads the message id, the case and the consent in one statement
(store/accept_reads.py): each combination of found and not found is tried here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.world import consent_body
from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import KeySet

AT = KeySet.generate("at.focal-point")
DE = KeySet.generate("de.focal-point")
NG = KeySet.generate("ng.naptip")
GH = KeySet.generate("gh.focal-point")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        b.auto_consent = False
        for keyset, country in [(AT, "AT"), (DE, "DE"), (NG, "NG"), (GH, "GH")]:
            assert (await b.register(keyset, country)).status_code == 201
        yield b


async def register_consent(
    broker: Broker, by: KeySet, consent_id: str, case: str, recipients: list[str]
) -> None:
    body = consent_body(consent_id, case, recipients)
    response = await broker.call("POST", "/v1/consents", by, json=body)
    assert response.status_code == 201, response.text


def refused(response: httpx.Response, rule: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["rule"] == rule, body
    return body


async def test_a_consent_nobody_registered_is_refused(broker: Broker) -> None:
    body = refused(
        await broker.submit(referral(AT, NG, consent_ref="never-registered")), "consent_unknown"
    )
    assert "never-registered" in body["detail"]


async def test_another_focal_points_consent_is_answered_as_an_unknown_one(broker: Broker) -> None:
    await register_consent(broker, DE, "de-consent", "DE-2026-1", [NG.participant])
    borrowed = refused(
        await broker.submit(referral(AT, NG, consent_ref="de-consent")), "consent_unknown"
    )
    unknown = refused(
        await broker.submit(referral(AT, NG, consent_ref="no-such-id")), "consent_unknown"
    )
    assert borrowed["detail"].replace("de-consent", "X") == unknown["detail"].replace(
        "no-such-id", "X"
    )


async def test_a_consent_for_another_recipient_does_not_cover_the_message(
    broker: Broker,
) -> None:
    await register_consent(broker, AT, "for-ghana", "AT-2026-2", [GH.participant])
    envelope = referral(AT, NG, case_ref="AT-2026-2", consent_ref="for-ghana")
    refused(await broker.submit(envelope), "consent_scope")


async def test_a_covered_message_is_accepted_once_and_its_repeat_gets_the_receipt(
    broker: Broker,
) -> None:
    await register_consent(broker, AT, "covers", "AT-2026-3", [NG.participant])
    envelope = referral(AT, NG, case_ref="AT-2026-3", consent_ref="covers")
    first = await broker.submit(envelope)
    assert first.status_code == 202, first.text
    again = await broker.submit(envelope)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # The case exists now: a second referral of it is the workflow's refusal, not consent's.
    second = await broker.submit(referral(AT, NG, case_ref="AT-2026-3", consent_ref="covers"))
    assert second.status_code == 409, second.text
    assert second.json()["rule"] != "consent_unknown"
