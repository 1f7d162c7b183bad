"""Sending a case's next step from the browser (issue 19): only a step the workflow allows
now has a form, generated from its payload schema; a form with errors comes back with each
error on its field; a sent one is queued and receipted through the node's own send path and
shows on the case page; CSRF, another organisation's case and a read-only user refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from typing import Any

import httpx

from tests.node.harness import rows
from tests.node.web.browser import Browser, csrf_token
from tests.security.node_access_world import (
    AT,
    N_CW,
    N_RO,
    N_SUP,
    NAPTIP,
    S_CW,
    NodeWorld,
    payloads,
)
from trm_broker.node.audit import AuditEntry
from trm_broker.node.store import OutboxMessage
from trm_broker.node.web import i18n, refusals


def send_url(case_ref: str, message_type: str, recipient: str = AT.participant) -> str:
    return f"/web/cases/{case_ref}/send/{message_type}?recipient={recipient}"


def form_id(html: str) -> str:
    found = re.search(r'name="form_id" value="([0-9a-f]{32})"', html)
    assert found, "no form id in the page"
    return found.group(1)


async def steps(world: NodeWorld, case: str) -> list[dict[str, Any]]:
    """NAPTIP's next steps in the case, as the JSON API states them."""
    response = await world.node.get(f"/cases/{world.case[case]}", headers=world.auth(N_CW))
    assert response.status_code == 200, response.text
    return [
        s
        for p in response.json()["next_steps"]
        if p["participant"] == NAPTIP.participant
        for s in p["steps"]
    ]


async def test_a_case_worker_answers_the_referral_through_the_form(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    case_b = node_world.case["B"]
    case = await worker.get(f"/web/cases/{case_b}")
    url = send_url(case_b, "referral_response")
    assert url.replace("?", "?").split("?")[0] in unescape(case.text)

    form = await worker.get(url)
    assert form.status_code == 200, form.text
    assert "Answer to the referral" in form.text
    assert 'name="accepted"' in form.text
    assert AT.participant in form.text
    # The case's one consent that covers it: filled in by the node, named on the form.
    assert f"{node_world.consent['B']}: the node fills it in." in form.text

    sent = await worker.post(
        url,
        {"csrf_token": csrf_token(form.text), "form_id": form_id(form.text), "accepted": "yes"},
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"].startswith(f"/web/cases/{case_b}?sent=referral_response")
    shown = await worker.get(sent.headers["location"])
    assert "Answer to the referral: sent. The exchange has receipted it." in shown.text
    assert "Sent to " + AT.participant in shown.text
    # Receipted at the broker, through the node's outbox, under the case's consent.
    outbox = [
        r for r in await rows(node_world.database_url, OutboxMessage) if r["case_ref"] == case_b
    ]
    assert [r["type"] for r in outbox] == ["referral_response"]
    assert outbox[0]["state"] == "receipted"
    listed = await node_world.node.get(f"/sent?case_ref={case_b}", headers=node_world.auth(N_CW))
    assert [m["type"] for m in listed.json()["messages"]] == ["referral_response"]
    # The answer is given: it is no longer offered.
    again = await worker.get(url)
    assert 'name="accepted"' not in again.text

    audited = [
        (r["user_name"], r["action"], r["case_ref"], r["status"])
        for r in await rows(node_world.database_url, AuditEntry)
        if "/send/" in r["action"]
    ]
    assert audited == [
        (N_CW, "GET /web/cases/{case_ref}/send/{message_type}", case_b, 200),
        (N_CW, "POST /web/cases/{case_ref}/send/{message_type}", case_b, 303),
        (N_CW, "GET /web/cases/{case_ref}/send/{message_type}", case_b, 200),
    ]


async def test_a_blocked_step_shows_its_rule_and_no_form(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    blocked = next(s for s in await steps(node_world, "B") if not s["allowed"])
    url = send_url(node_world.case["B"], blocked["type"], blocked["recipient"])
    page = await worker.get(url)
    assert page.status_code == 200
    assert "This step is not possible yet:" in page.text
    # The rule in the catalog's words (what to do), not the broker's English sentence.
    english = i18n.translations("en").gettext
    rule = refusals.rule_sentence(blocked["rule"], blocked["window_seconds"], english, "en")
    assert rule is not None, f"no sentence for the rule {blocked['rule']}"
    assert unescape(rule.sentence) in unescape(page.text)
    # And in French for a French-speaking case worker.
    french = Browser(client, language="fr")
    await french.sign_in(N_CW)
    in_french = await french.get(url)
    assert "Cette étape n'est pas encore possible :" in unescape(in_french.text)
    said = refusals.rule_sentence(
        blocked["rule"], blocked["window_seconds"], i18n.translations("fr").gettext, "fr"
    )
    assert said is not None
    assert said.sentence in unescape(in_french.text)
    assert unescape(blocked["detail"]) not in unescape(in_french.text)
    assert '<form method="post" action="/web/cases' not in page.text
    # Posted anyway: refused, nothing queued.
    posted = await worker.post(url, {"csrf_token": csrf_token(page.text)})
    assert posted.status_code == 409
    assert not [
        r
        for r in await rows(node_world.database_url, OutboxMessage)
        if r["case_ref"] == node_world.case["B"]
    ]
    # A step the case does not offer at all, and a type that is none.
    other = await worker.get(send_url(node_world.case["B"], "referral_response", "ng.shelter"))
    assert "This step is not offered to your organisation in this case." in other.text
    assert (await worker.get(send_url(node_world.case["B"], "nonsense"))).status_code == 404


async def test_the_case_page_says_why_a_step_waits_and_why_one_was_refused_in_french(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    """The case page says a blocked step's rule, and a refusal the broker gave a message
    already sent, in the catalog's words: never the broker's English sentence."""
    node_world, client = world
    case_b = node_world.case["B"]
    blocked = next(s for s in await steps(node_world, "B") if s["type"] == "risk_assessment")
    assert not blocked["allowed"], blocked
    # Sent anyway through the JSON API (a script would): the broker refuses it for good.
    body = {
        "recipient": AT.participant,
        "payload": payloads(datetime.now(UTC))["risk-assessment"],
        "consent_ref": node_world.consent["B"],
    }
    refused = await node_world.node.post(
        f"/cases/{case_b}/risk-assessment",
        json=body,
        headers={**node_world.auth(N_CW), "prefer": "wait=5"},
    )
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["rule"] == "risk_assessment_needs_acceptance"

    french = Browser(client, language="fr")
    await french.sign_in(N_CW)
    page = unescape((await french.get(f"/web/cases/{case_b}")).text)
    gettext = i18n.translations("fr").gettext
    waits = refusals.rule_sentence(blocked["rule"], blocked["window_seconds"], gettext, "fr")
    assert waits is not None
    assert f'<span lang="fr">{waits.sentence}</span>' in page
    assert unescape(blocked["detail"]) not in page
    said = refusals.refusal_words(problem, gettext, "fr")
    assert said.lang == "fr"
    assert f'<p class="late" lang="fr">{said.sentence}</p>' in page  # on the refused message
    assert unescape(problem["detail"]) not in page
    assert "Refusé" in page or "refusé" in page


async def test_a_missing_required_field_comes_back_on_its_field(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    url = send_url(node_world.case["B"], "referral_response")
    form = await worker.get(url)
    posted = await worker.post(
        url,
        {
            "csrf_token": csrf_token(form.text),
            "form_id": form_id(form.text),
            "accepted": "",
            "notes": "kept as typed",
        },
    )
    assert posted.status_code == 400, posted.text
    assert 'id="error-summary"' in posted.text
    assert '<a href="#field-accepted">' in posted.text
    assert 'id="field-accepted-error"' in posted.text
    assert "Fill this in." in posted.text
    assert 'aria-invalid="true"' in posted.text
    assert "kept as typed" in posted.text
    assert not [
        r
        for r in await rows(node_world.database_url, OutboxMessage)
        if r["case_ref"] == node_world.case["B"]
    ]


async def test_csrf_another_organisations_case_and_who_may_send(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker, shelter, reader, supervisor = (Browser(client) for _ in range(4))
    await worker.sign_in(N_CW)
    url = send_url(node_world.case["B"], "referral_response")
    assert (await worker.get(url)).status_code == 200
    forms: list[dict[str, str]] = [{}, {"csrf_token": "not-the-token"}]
    for sent in forms:
        refused = await worker.post(url, {**sent, "accepted": "yes"})
        assert refused.status_code == 403
        assert "This form was not accepted" in refused.text
    # The shelter is no party to case B: as if it did not exist.
    await shelter.sign_in(S_CW)
    for answer in (await shelter.get(url), await shelter.post(url, {"accepted": "yes"})):
        assert answer.status_code in (403, 404)
    other = await shelter.get(url)
    assert other.status_code == 404
    assert "Nothing was found at this address for your organisation" in other.text
    # Read-only users and supervisors read the case, but send nothing.
    for browser, user in ((reader, N_RO), (supervisor, N_SUP)):
        await browser.sign_in(user)
        page = await browser.get(url)
        assert page.status_code == 403
        assert "Only a case worker of your organisation may send" in page.text
        own_token = csrf_token((await browser.get("/web/")).text)
        posted = await browser.post(url, {"csrf_token": own_token, "accepted": "yes"})
        assert posted.status_code == 403
        case = await browser.get(f"/web/cases/{node_world.case['B']}")
        assert "/send/" not in case.text
    assert not [
        r
        for r in await rows(node_world.database_url, OutboxMessage)
        if r["case_ref"] == node_world.case["B"]
    ]
