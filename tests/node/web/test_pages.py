"""The web app's pages (issue 19): scoped by the JSON API's access rules (another
organisation's case or message answers 404 by direct URL), the strict security headers on
every page, French pages and dates in the user's time zone, and every view in the audit log."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.dates import format_date, format_datetime
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.node.harness import rows
from tests.node.web.browser import Browser, csrf_token
from tests.security.node_access_world import (
    N_CW,
    N_SUP,
    NAPTIP,
    S_CW,
    S_RO,
    SHELTER,
    NodeWorld,
)
from trm_broker.domain.alerts import AlertKind
from trm_broker.node import withdrawals
from trm_broker.node.audit import AuditEntry
from trm_broker.node.web import caseload
from trm_broker.store.alerts import raise_alert
from trm_broker.store.database import create_engine
from trm_broker.web.headers import CONTENT_SECURITY_POLICY


def pages(world: NodeWorld) -> list[str]:
    return [
        "/web/",
        f"/web/cases/{world.case['A']}",
        f"/web/messages/{min(world.received[NAPTIP.participant])}",
        "/web/audit",
    ]


async def test_pages_show_the_organisations_own_and_answer_404_for_anothers(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    naptip, shelter = Browser(client), Browser(client)
    await naptip.sign_in(N_CW)
    await shelter.sign_in(S_CW)
    case_a, case_b = node_world.case["A"], node_world.case["B"]

    case = await naptip.get(f"/web/cases/{case_a}")
    assert case.status_code == 200, case.text
    for words in ("Referral", "Answer to the referral", "Risk assessment", "Return plan"):
        assert words in case.text
    assert node_world.consent["A"] in case.text
    for message_id in node_world.received[NAPTIP.participant] & node_world.in_case["A"]:
        assert f"/web/messages/{message_id}" in case.text
    dashboard = await naptip.get("/web/")
    assert case_a in dashboard.text
    assert case_b in dashboard.text

    # The shelter: its own case A and its plan; nothing of case B, nor NAPTIP's messages.
    own = await shelter.get(f"/web/cases/{case_a}")
    assert own.status_code == 200
    for naptips in node_world.received[NAPTIP.participant] | set(node_world.sent):
        assert naptips not in own.text
    shelter_dashboard = await shelter.get("/web/")
    assert case_a in shelter_dashboard.text
    assert case_b not in shelter_dashboard.text
    for path in [f"/web/cases/{case_b}", "/web/cases/not%20a%20case", "/web/messages/x"] + [
        f"/web/messages/{m}" for m in node_world.received[NAPTIP.participant]
    ]:
        refused = await shelter.get(path)
        assert refused.status_code == 404, (path, refused.status_code)
        assert "Nothing was found at this address for your organisation" in refused.text
        assert case_b not in refused.text or case_b in path
    # The message's content, to the organisation it was sealed to only.
    plan_id = min(node_world.received[SHELTER.participant])
    plan = await shelter.get(f"/web/messages/{plan_id}")
    assert plan.status_code == 200
    assert "Return plan" in plan.text
    assert SHELTER.participant in plan.text
    assert (await naptip.get(f"/web/messages/{plan_id}")).status_code == 404


async def test_every_page_has_the_strict_security_headers(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    browser = Browser(client)
    answers = [await browser.get("/web/sign-in")]
    await browser.sign_in(N_SUP)
    answers += [await browser.get(path) for path in pages(node_world)]
    answers.append(await browser.get(f"/web/cases/{node_world.case['B']}x"))  # a refusal
    answers.append(await browser.post("/web/sign-out", {}))  # a refused form
    for response in answers:
        where = f"{response.request.url.path} ({response.status_code})"
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, where
        assert "default-src 'none'" in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff", where
        assert response.headers["referrer-policy"] == "no-referrer", where
        assert response.headers["cache-control"] == "no-store", where
        assert response.headers["content-type"].startswith("text/html"), where
        assert '<html lang="en">' in response.text, where
        assert 'href="#main"' in response.text, where
        assert '<main id="main"' in response.text, where
        assert "<script>" not in response.text, where  # no inline script: the CSP holds
        assert "style=" not in response.text, where
    for sheet in ("pages.css", "web.css"):  # the sheet both page apps share, and the app's
        style = await browser.get(f"/web/static/{sheet}")
        assert style.status_code == 200, sheet
        assert style.headers["x-content-type-options"] == "nosniff"
    assert ":focus-visible" in (await browser.get("/web/static/pages.css")).text


async def test_pages_in_french_with_dates_in_the_users_time_zone(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    browser = Browser(client, language="fr-FR,fr;q=0.9,en;q=0.5")
    sign_in = await browser.get("/web/sign-in")
    assert '<html lang="fr">' in sign_in.text
    assert "Se connecter" in sign_in.text
    assert "Mot de passe" in sign_in.text
    form = {
        "csrf_token": csrf_token(sign_in.text),
        "user": N_CW,
        "password": "a long passphrase 4 tests",
        "time_zone": "Africa/Lagos",
    }
    assert (await browser.post("/web/sign-in", form)).status_code == 303
    case = await browser.get(f"/web/cases/{node_world.case['A']}")
    assert "Évaluation des risques" in case.text
    assert "Prochaines étapes" in case.text
    message_id = min(node_world.received[NAPTIP.participant])
    message = await browser.get(f"/web/messages/{message_id}")
    assert "Reçu" in message.text
    # Babel's French medium format, in Lagos time (UTC+1): "6 déc. 2026, 21:40:07".
    as_api = await node_world.node.get(f"/messages/{message_id}", headers=node_world.auth(N_CW))
    received_at = datetime.fromisoformat(as_api.json()["received_at"])
    lagos = format_datetime(received_at, "medium", tzinfo=ZoneInfo("Africa/Lagos"), locale="fr")
    assert lagos in message.text
    assert format_datetime(received_at, "medium", tzinfo=UTC, locale="fr") not in message.text
    # The content's own dates and times too: the return plan's arrival in Lagos time, its
    # travel date as French writes a date, never the ISO text the payload carries.
    listed = await node_world.node.get(
        f"/messages?case_ref={node_world.case['A']}", headers=node_world.auth(N_CW)
    )
    plan = next(m for m in listed.json()["messages"] if m["type"] == "return_preparation")
    shown = await browser.get(f"/web/messages/{plan['message_id']}")
    arrival = datetime.fromisoformat(plan["payload"]["planned_arrival"].replace("Z", "+00:00"))
    in_lagos = format_datetime(arrival, "medium", tzinfo=ZoneInfo("Africa/Lagos"), locale="fr")
    assert html.escape(in_lagos) in shown.text
    assert plan["payload"]["planned_arrival"] not in shown.text
    travel = date.fromisoformat(plan["payload"]["travel_date"])
    assert html.escape(format_date(travel, "medium", locale="fr")) in shown.text
    assert plan["payload"]["travel_date"] not in shown.text

    # The switcher's choice beats the browser's language, and is kept.
    english = await browser.get("/web/language/en?next=/web/")
    assert english.status_code == 303
    assert english.headers["location"] == "/web/"
    assert "My cases" in (await browser.get("/web/")).text
    # It never sends anyone off the site.
    away = await browser.get("/web/language/fr?next=https://evil.example/")
    assert away.headers["location"] == "/web/"


async def test_every_page_view_and_action_is_audited_and_supervisors_read_it(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker, supervisor, reader = Browser(client), Browser(client), Browser(client)
    await worker.sign_in(N_CW)
    for path in pages(node_world)[:3]:
        assert (await worker.get(path)).status_code == 200
    refused = await worker.get("/web/audit")  # a case worker does not read the audit log
    assert refused.status_code == 403
    assert "Only a supervisor" in refused.text
    await reader.sign_in(S_RO)
    await reader.get(f"/web/cases/{node_world.case['B']}")

    entries = [
        (r["user_name"], r["action"], r["case_ref"], r["status"])
        for r in await rows(node_world.database_url, AuditEntry)
        if r["action"].startswith(("GET /web", "POST /web"))
    ]
    assert entries == [
        (N_CW, "POST /web/sign-in", None, 303),
        (N_CW, "GET /web/", None, 200),
        (N_CW, "GET /web/cases/{case_ref}", node_world.case["A"], 200),
        (N_CW, "GET /web/messages/{message_id}", None, 200),
        (N_CW, "GET /web/audit", None, 403),
        (S_RO, "POST /web/sign-in", None, 303),
        (S_RO, "GET /web/cases/{case_ref}", node_world.case["B"], 404),
    ]
    viewed = [
        r for r in await rows(node_world.database_url, AuditEntry) if "messages" in r["action"]
    ]
    assert viewed[-1]["message_id"] == min(node_world.received[NAPTIP.participant])

    await supervisor.sign_in(N_SUP)
    log = await supervisor.get("/web/audit")
    assert log.status_code == 200
    assert "GET /web/cases/{case_ref}" in log.text
    assert N_CW in log.text
    assert S_RO not in log.text  # another organisation's people


async def test_a_message_under_a_withdrawn_consent_says_it_is_kept_unread_then_deleted(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    """Issue 17: the case worker is told what became of data received under a withdrawn
    consent, first that it is kept unread until a date, then that it was deleted."""
    node_world, client = world
    shelter = Browser(client)
    await shelter.sign_in(S_CW)
    plan_id = min(node_world.received[SHELTER.participant])
    assert "<h2>Content</h2>" in (await shelter.get(f"/web/messages/{plan_id}")).text

    engine = create_engine(node_world.database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as session:
            case_a, consent_a = node_world.case["A"], node_world.consent["A"]
            now = datetime.now(UTC)
            await withdrawals.learned(session, case_a, consent_a, now, withdrawals.FROM_ALERT)
            await session.commit()
        kept = await shelter.get(f"/web/messages/{plan_id}")
        assert kept.status_code == 200
        assert "The person withdrew consent: this message's content is kept, unread, until" in (
            html.unescape(kept.text)
        )
        assert "<h2>Content</h2>" not in kept.text
        async with sessions() as session:
            assert await withdrawals.purge(session, datetime.now(UTC), timedelta(0)) >= 1
            await session.commit()
    finally:
        await engine.dispose()
    deleted = await shelter.get(f"/web/messages/{plan_id}")
    said = html.unescape(deleted.text)
    assert "The person withdrew consent: this message's content was deleted on" in said
    assert "content is kept" not in deleted.text
    assert "<h2>Content</h2>" not in deleted.text


async def test_a_case_with_an_open_alert_is_on_the_dashboard_however_old(
    world: tuple[NodeWorld, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard shows the most recent cases, and every case with an open alert beside
    them: an overdue or withdrawn case is never pushed off it by newer ones. And an older
    case is opened by its reference."""
    node_world, client = world
    naptip = Browser(client)
    await naptip.sign_in(N_CW)
    case_b = node_world.case["B"]
    monkeypatch.setattr(caseload, "SHOWN", 0)  # as if every case were too old to be shown
    before = await naptip.get("/web/")
    assert f"/web/cases/{case_b}" not in before.text

    # The broker's alert scheduler finds the reception overdue.
    async with node_world.broker.app.state.broker.sessions() as session:
        raise_alert(
            session, AlertKind.RECEPTION_OVERDUE, case_b, [NAPTIP.participant], datetime.now(UTC)
        )
        await session.commit()
    after = await naptip.get("/web/")
    assert f"/web/cases/{case_b}" in after.text

    found = await naptip.get(f"/web/find?case_ref={case_b}")
    assert found.status_code == 303
    assert found.headers["location"] == f"/web/cases/{case_b}"
    wrong = await naptip.get("/web/find?case_ref=not a reference")
    assert wrong.status_code == 400
    assert 'aria-invalid="true"' in wrong.text
    assert "A case reference looks like" in wrong.text
