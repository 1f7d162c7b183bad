"""The console's overview (issue 20): its figures are the API report's for the same period,
as CSV byte for byte, table by table and in its charts' tables; only auditors see it."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from tests.api.console.journeys import (
    AT,
    NG,
    SHELTER,
    left_overdue,
    register_parties,
    returned_late,
)
from tests.api.console.test_console_sign_in import AUDITOR, SESSION, signed_in
from tests.support import Broker, broker_settings, envelope, referral, running_broker
from trm_broker.domain.messages import MessageType


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(
        database_url, tmp_path, report_min_cell=1, min_notice_seconds=0, reception_grace_seconds=0
    )
    async with running_broker(settings) as b:
        assert (await b.register(AUDITOR, "AT", kind="auditor")).status_code == 201
        await register_parties(b)
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


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))[1:]


async def test_the_overviews_tables_and_charts_show_the_api_reports_figures(
    broker: Broker,
) -> None:
    late = f"AT-{uuid.uuid4().hex[:12]}"
    await returned_late(broker, late)  # referral to reception: one case AT -> NG
    await left_overdue(broker, f"AT-{uuid.uuid4().hex[:12]}")  # one reception overdue, open
    again = {"outcome": "received", "at": datetime.now(UTC).isoformat()}
    refused = await broker.submit(
        envelope(
            SHELTER,
            NG,
            MessageType.RECEPTION_CONFIRMATION,
            again,
            case_ref=late,
            consent_ref=f"consent-{late}",
        )
    )
    assert refused.status_code == 409, refused.text  # a refusal by a workflow rule
    today = datetime.now(UTC).date()
    since = datetime.combine(today, time(), UTC)
    until = since + timedelta(days=1)
    api = await broker.call(
        "GET",
        "/v1/audit/report",
        AUDITOR,
        params={"from": since.isoformat(), "to": until.isoformat()},
    )
    assert api.status_code == 200, api.text
    report = api.json()
    assert report["open_alerts"] == [{"kind": "reception_overdue", "count": 1, "suppressed": False}]
    assert [
        (r["from_country"], r["to_country"], r["cases"])
        for r in report["referral_to_reception_by_pair"]
    ] == [("AT", "NG", 1)]
    assert sum(r["count"] for r in report["messages_per_week"]) == sum(
        r["count"] for r in report["messages"]
    )
    assert report["refusals"]

    session = await signed_in(broker, AUDITOR)
    headers = {"cookie": f"{SESSION}={session}"}
    query = f"from={today.isoformat()}&to={today.isoformat()}"

    async def table(name: str) -> list[list[str]]:
        got = await broker.client.get(f"/console/overview/{name}.csv?{query}", headers=headers)
        assert got.status_code == 200, got.text
        return _rows(got.text)

    assert await table("messages-per-week") == [
        [r["week"], r["type"], str(r["count"])] for r in report["messages_per_week"]
    ]
    assert await table("referral-to-reception") == [
        [
            r["from_country"],
            r["to_country"],
            str(r["cases"]),
            str(r["median_hours"]),
            str(r["p90_hours"]),
        ]
        for r in report["referral_to_reception_by_pair"]
    ]
    assert await table("open-alerts") == [["reception_overdue", "1"]]
    assert await table("refusals") == [[r["rule"], str(r["count"])] for r in report["refusals"]]
    assert await table("alerts") == [[r["kind"], str(r["count"])] for r in report["alerts"]]
    assert await table("messages") == [
        [r["type"], r["from_country"], r["to_country"], str(r["count"])] for r in report["messages"]
    ]
    missing = await broker.client.get(f"/console/overview/nothing.csv?{query}", headers=headers)
    assert missing.status_code == 404

    page = await broker.client.get(f"/console/overview?{query}", headers=headers)
    assert page.status_code == 200
    # Four charts drawn by the server, each an image with a title and a description.
    assert page.text.count('<svg role="img"') == 4
    for chart in ("weekly", "pairs", "open-alerts", "refusals"):
        assert f'aria-labelledby="{chart}-t {chart}-d"' in page.text
    assert '<th scope="row">reception_overdue</th><td>1</td>' in page.text
    week = report["messages_per_week"][0]["week"]
    assert f'<th scope="row">{week}</th>' in page.text
