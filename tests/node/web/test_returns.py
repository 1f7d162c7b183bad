"""A receiving organisation's pages (issue 19): the dashboard lists the returns it was
designated for, the return page shows the plan in words and links the steps it may send now,
a step sent from there brings the worker back to it; a supervisor reads it all without
anything to send; another organisation (the destination focal point, sent the same plan, or
one not party to the case) cannot open the return page by its URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx

from tests.node.harness import rows
from tests.node.web.browser import Browser, csrf_token
from tests.security.node_access_world import AT, N_CW, S_CW, S_RO, S_SUP, NodeWorld
from trm_broker.node.audit import AuditEntry
from trm_broker.node.sent_schemas import CaseViewOut, TimelineEntry
from trm_broker.node.web.returns import return_of
from trm_broker.web.headers import CONTENT_SECURITY_POLICY


def return_url(world: NodeWorld) -> str:
    return f"/web/returns/{world.case['A']}"


async def test_the_shelter_sees_its_return_and_answers_the_plan_from_it(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    shelter = Browser(client)
    await shelter.sign_in(S_CW)
    dashboard = await shelter.get("/web/")
    assert "Returns we were designated for" in dashboard.text
    assert f'href="{return_url(node_world)}"' in dashboard.text
    assert "Plan to answer" in dashboard.text
    assert "Answer the return plan" in dashboard.text

    page = await shelter.get(return_url(node_world))
    assert page.status_code == 200, page.text
    text = unescape(page.text)
    for words in (
        "Planned arrival",
        "Escort",
        "Medical and psychological needs",
        "Reintegration plan",
        "Contact person",
        "Languages the person speaks",
        "Plan to answer",
        "Not answered yet",
        # The plan's arrival is 6 days ahead: the reception confirmation is due by then.
        "Reception confirmation due by",
    ):
        assert words in text, words
    answer = (
        f"/web/cases/{node_world.case['A']}/send/reception_plan_response"
        f"?recipient={AT.participant}&back=return"
    )
    assert f'href="{answer}"' in text
    # The plan's arrival, in the user's zone (UTC here, no zone given at sign-in), in full.
    assert "Coordinated Universal Time" in text

    form = await shelter.get(answer)
    assert form.status_code == 200
    assert 'name="back" value="return"' in form.text
    assert "Back to the return in case" in form.text
    sent = await shelter.post(
        answer.replace("&back=return", ""),
        {
            "csrf_token": csrf_token(form.text),
            "back": "return",
            "readiness": "needs_support",
            "needs": "medical_check",
        },
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"].startswith(
        f"{return_url(node_world)}?sent=reception_plan_response"
    )
    shown = await shelter.get(sent.headers["location"])
    assert "Answer to the return plan: sent" in shown.text
    assert "Ready once the needs named are met" in shown.text
    assert "Awaiting travel" in shown.text
    assert "Record the contact before departure" in shown.text


async def test_a_supervisor_reads_the_return_and_has_nothing_to_send(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    for user in (S_SUP, S_RO):
        reader = Browser(client)
        await reader.sign_in(user)
        assert return_url(node_world) in (await reader.get("/web/")).text
        page = await reader.get(return_url(node_world))
        assert page.status_code == 200
        assert "The return plan" in page.text
        assert "/send/" not in page.text
        assert "A case worker of your organisation sends these." in page.text
        assert "<button" not in page.text.split("<main", 1)[1]  # no action, only reading
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "style=" not in page.text
        assert "<script>" not in page.text
    french = Browser(client, language="fr")
    await french.sign_in(S_SUP)
    page = await french.get(return_url(node_world))
    assert "Le plan de retour" in page.text
    assert "Retours pour lesquels nous avons été désignés" in (await french.get("/web/")).text
    viewed = [
        (r["user_name"], r["action"], r["case_ref"], r["status"])
        for r in await rows(node_world.database_url, AuditEntry)
        if "/returns/" in r["action"]
    ]
    assert viewed[-1] == (S_SUP, "GET /web/returns/{case_ref}", node_world.case["A"], 200)


async def test_another_organisation_cannot_open_the_return_page_by_its_url(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    naptip, shelter = Browser(client), Browser(client)
    await naptip.sign_in(N_CW)
    await shelter.sign_in(S_CW)
    # NAPTIP was sent the same plan, but is not the organisation it designates.
    refused = await naptip.get(return_url(node_world))
    assert refused.status_code == 404
    assert "Nothing was found at this address for your organisation" in refused.text
    assert "Returns we were designated for" not in (await naptip.get("/web/")).text
    # The shelter is no party to case B; and a reference that is none.
    for path in (f"/web/returns/{node_world.case['B']}", "/web/returns/not%20a%20case"):
        assert (await shelter.get(path)).status_code == 404


def _view(stage: str, state: dict[str, Any], deadlines: list[dict[str, Any]]) -> CaseViewOut:
    now = datetime.now(UTC)
    plan = TimelineEntry.model_validate(
        {
            "direction": "received",
            "message_id": "0190f0f0-0000-7000-8000-000000000001",
            "type": "return_preparation",
            "sender": "at.focal-point",
            "recipient": "ng.shelter",
            "at": now,
            "status": "received",
            "received": {
                "seq": 1,
                "message_id": "0190f0f0-0000-7000-8000-000000000001",
                "type": "return_preparation",
                "case_ref": "AT-1",
                "sender": "at.focal-point",
                "recipient": "ng.shelter",
                "created_at": now,
                "received_at": now,
                "header": {"receiving_org": "ng.shelter", "planned_arrival": now.isoformat()},
                "payload": {"receiving_org": "ng.shelter", "planned_arrival": now.isoformat()},
                "restricted": False,
            },
        }
    )
    return CaseViewOut(
        case_ref="AT-1",
        reader="ng.shelter",
        stage=stage,
        timeline=[plan],
        consents=[],
        alerts=[],
        deadlines=deadlines,
        broker={"state": state},
    )


def test_monitoring_reminders_come_from_the_brokers_deadlines() -> None:
    now = datetime.now(UTC)
    received = {"receiving_org": "ng.shelter", "readiness": "ready"}
    far = [{"name": "monitoring_due", "due_at": (now + timedelta(days=60)).isoformat()}]
    soon = [{"name": "monitoring_due", "due_at": (now + timedelta(days=3)).isoformat()}]
    late = [
        {"name": "monitoring_due", "due_at": (now - timedelta(days=1)).isoformat(), "overdue": True}
    ]
    steps = [{"type": "case_monitoring", "recipient": "at.focal-point", "allowed": True}]
    quiet = return_of(_view("received", received, far), steps, far, now)
    due = return_of(_view("received", received, soon), steps, soon, now)
    overdue = return_of(_view("received", received, late), steps, late, now)
    assert quiet is not None
    assert due is not None
    assert overdue is not None
    assert (quiet.state, quiet.monitoring, quiet.reminders) == ("arrived", None, [])
    assert (due.monitoring, due.late) == ("due", False)
    assert (overdue.monitoring, overdue.late) == ("overdue", True)
    assert overdue.next_action is not None
    assert overdue.next_action.type == "case_monitoring"
    # A case whose plan now designates another organisation is no longer ours to act on.
    moved = return_of(_view("return_prepared", {"receiving_org": "ng.other"}, []), [], [], now)
    assert moved is not None
    assert moved.state == "closed"
