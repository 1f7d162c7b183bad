"""The console's case timeline (issue 20): the steps of one case as the ledger records them,
the same entries, in the same order, as the API's ledger search for the case; each with
a proof the page can check."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.console.test_console_sign_in import AUDITOR, SESSION, signed_in
from tests.support import Broker, broker_settings, polling, referral, running_broker
from trm_broker.crypto.keys import KeySet

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        assert (await b.register(AUDITOR, "AT", kind="auditor")).status_code == 201
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            inbox = f"https://node-{country.lower()}.example/inbox"
            made = await b.register(keyset, country, inbox_url=inbox)
            assert made.status_code == 201, made.text
        yield b


async def test_the_case_timeline_shows_the_cases_entries_as_the_api_does(broker: Broker) -> None:
    case_ref = f"AT-{uuid.uuid4().hex[:12]}"
    accepted = await broker.submit(referral(AT, NG, case_ref=case_ref))
    assert accepted.status_code in (201, 202), accepted.text
    found: list[int] = []
    async for _ in polling():
        search = await broker.call("GET", f"/v1/ledger/search?case_ref={case_ref}", AUDITOR)
        found = [e["index"] for e in search.json()["entries"]]
        if any(e["entry"]["type"] == "message.accepted" for e in search.json()["entries"]):
            break
    session = await signed_in(broker, AUDITOR)
    page = await broker.client.get(
        f"/console/cases/{case_ref}", headers={"cookie": f"{SESSION}={session}"}
    )
    assert page.status_code == 200
    shown = [int(i) for i in re.findall(r'<tr data-index="(\d+)"', page.text)]
    assert shown == found
    assert 'data-value="referral"' in page.text  # the message type of the acceptance
    unknown = await broker.client.get(
        "/console/cases/<script>", headers={"cookie": f"{SESSION}={session}"}
    )
    assert unknown.status_code == 404


async def test_the_ledger_search_downloads_as_the_apis_csv(broker: Broker) -> None:
    case_ref = f"AT-{uuid.uuid4().hex[:12]}"
    accepted = await broker.submit(referral(AT, NG, case_ref=case_ref))
    assert accepted.status_code in (201, 202), accepted.text
    api = None
    async for _ in polling():
        api = await broker.call("GET", f"/v1/ledger/search?case_ref={case_ref}&format=csv", AUDITOR)
        if "message.accepted" in api.text:
            break
    assert api is not None
    session = await signed_in(broker, AUDITOR)
    exported = await broker.client.get(
        f"/console/ledger.csv?case_ref={case_ref}", headers={"cookie": f"{SESSION}={session}"}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text == api.text
