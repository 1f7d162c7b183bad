"""The console's case timeline (issue 20): the case's messages as the API's timeline
gives them to its parties (same messages, order, senders, recipients, times), a reception
confirmed after the workflow's deadline marked late, and the table as CSV."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.api.console.journeys import AT, register_parties, returned_late
from tests.api.console.test_console_sign_in import AUDITOR, SESSION, signed_in
from tests.support import Broker, broker_settings, running_broker


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(
        database_url, tmp_path, min_notice_seconds=0, reception_grace_seconds=0
    )
    async with running_broker(settings) as b:
        assert (await b.register(AUDITOR, "AT", kind="auditor")).status_code == 201
        await register_parties(b)
        yield b


async def test_the_timeline_matches_the_apis_and_marks_a_late_reception(broker: Broker) -> None:
    case = f"AT-{uuid.uuid4().hex[:12]}"
    arrival = await returned_late(broker, case)
    api = await broker.call("GET", f"/v1/cases/{case}", AT)
    assert api.status_code == 200, api.text
    expected = api.json()["timeline"]

    session = await signed_in(broker, AUDITOR)
    headers = {"cookie": f"{SESSION}={session}"}
    page = await broker.client.get(f"/console/cases/{case}", headers=headers)
    assert page.status_code == 200
    shown = re.findall(r'<tr data-message="([^"]+)"( class="late")?>', page.text)
    assert [m for m, _ in shown] == [item["message_id"] for item in expected]
    late = [m for m, marked in shown if marked]
    reception = next(i for i in expected if i["type"] == "reception_confirmation")
    assert late == [reception["message_id"]]
    assert "Late by" in page.text

    exported = await broker.client.get(f"/console/cases/{case}.csv", headers=headers)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [
        (r["message_id"], r["type"], r["sender"], r["recipient"], r["delivery_status"])
        for r in rows
    ] == [
        (i["message_id"], i["type"], i["sender"], i["recipient"], i["delivery_status"])
        for i in expected
    ]
    for row, item in zip(rows, expected, strict=True):
        assert datetime.fromisoformat(row["accepted_at"]) == datetime.fromisoformat(
            item["accepted_at"].replace("Z", "+00:00")
        )
    by_type = {r["type"]: r for r in rows}
    # Due at the planned arrival plus the grace (0 here): the workflow's deadline.
    due = datetime.fromisoformat(by_type["reception_confirmation"]["due_at"])
    assert abs((due - arrival).total_seconds()) < 0.001
    assert by_type["reception_confirmation"]["late"] == "true"
    assert by_type["case_monitoring"]["deadline"] == "monitoring_due"
    assert by_type["case_monitoring"]["late"] == "false"
    assert by_type["referral"]["late"] == ""

    french = await broker.client.get(
        f"/console/cases/{case}", headers={**headers, "accept-language": "fr"}
    )
    assert french.status_code == 200
