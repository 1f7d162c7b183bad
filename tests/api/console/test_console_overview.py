"""The console's overview (issue 20): its figures are the API report's for the same period,
as CSV byte for byte; only auditors see it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from tests.api.console.test_console_sign_in import AUDITOR, SESSION, signed_in
from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import KeySet

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, report_min_cell=1)
    async with running_broker(settings) as b:
        assert (await b.register(AUDITOR, "AT", kind="auditor")).status_code == 201
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            inbox = f"https://node-{country.lower()}.example/inbox"
            assert (await b.register(keyset, country, inbox_url=inbox)).status_code == 201
        yield b


async def test_the_overview_shows_the_api_reports_figures(broker: Broker) -> None:
    for _ in range(2):
        sent = await broker.submit(referral(AT, NG, case_ref=f"AT-{uuid.uuid4().hex[:12]}"))
        assert sent.status_code in (201, 202), sent.text
    today = datetime.now(UTC).date()
    first = today - timedelta(days=6)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(today, time(), UTC) + timedelta(days=1)
    api = await broker.call(
        "GET",
        "/v1/audit/report",
        AUDITOR,
        params={"from": since.isoformat(), "to": until.isoformat(), "format": "csv"},
    )
    assert api.status_code == 200
    assert "referral AT->NG,2," in api.text

    session = await signed_in(broker, AUDITOR)
    headers = {"cookie": f"{SESSION}={session}"}
    query = f"from={first.isoformat()}&to={today.isoformat()}"
    exported = await broker.client.get(f"/console/overview.csv?{query}", headers=headers)
    assert exported.status_code == 200
    assert exported.text == api.text
    page = await broker.client.get(f"/console/overview?{query}", headers=headers)
    assert page.status_code == 200
    assert '<th scope="row">referral</th><td>AT</td><td>NG</td><td>2</td>' in page.text

    operator = await signed_in(broker, broker.operator)
    refused = await broker.client.get(
        "/console/overview", headers={"cookie": f"{SESSION}={operator}"}
    )
    assert refused.status_code == 403
