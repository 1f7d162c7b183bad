"""A whole case by three people in three browsers (issue 19), against a real broker and two
real nodes (tests/browser/conftest.py): the Austrian case worker registers the consent and
refers; the Nigerian case worker accepts and assesses the risk through the forms; the
Austrian worker prepares the return through the form; the shelter's worker sees the plan on
its return page (on a tablet), answers it, records the contact before departure, confirms
the reception and sends a monitoring report; the Austrian worker sees every step on the case
page, its own messages delivered and confirmed. axe-core runs on every page visited; every
page is saved under var/screenshots/test_a_whole_case_by_three_people_in_three_browsers/."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import People, WebCluster, axe
from tests.browser.test_web_app import sign_in
from tests.browser.test_web_layout import SCREENS, fits
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER

pytestmark = pytest.mark.browser

#: Every person's browser is in Vienna's time zone (conftest.People); forms take local times.
ZONE = ZoneInfo("Europe/Vienna")
WAIT = 60.0
TABLET = SCREENS["tablet-portrait"]


def local(moment: datetime) -> str:
    """A moment as a person types it in a date-and-time field, in their browser's zone."""
    return moment.astimezone(ZONE).replace(tzinfo=None).isoformat(timespec="minutes")


def until(page: Page, check: Callable[[], bool], what: str) -> None:
    """Reload ``page`` until ``check`` holds (another node's part takes a moment)."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what} on {page.url}"
        time.sleep(0.5)
        page.reload()


def send(page: Page) -> None:
    """Send the form, and check it was sent: the page it brings back to says so."""
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_contain_text("sent", timeout=20_000)
    axe(page)


def open_step(page: Page, case_ref: str, message_type: str, recipient: str) -> None:
    page.locator(f"a[href*='/cases/{case_ref}/send/{message_type}?recipient={recipient}']").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    axe(page)


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
#: What the person consents to: every step of the return, with NAPTIP, the shelter and the
#: Austrian focal point itself (for the answers), for all data but the legal.
CATEGORIES = ("identity", "health", "family", "contact", "travel", "other")


def register_consent(
    page: Page, case_ref: str, recipients: tuple[str, ...] = (RECIPIENT, SHELTER, SENDER)
) -> None:
    """A new case: the signed consent form uploaded, its scope chosen, confirmed in words,
    and registered at the broker."""
    page.get_by_role("link", name="New case").click()
    axe(page)
    page.get_by_label("Case reference").fill(case_ref)
    signed: FilePayload = {"name": "consent.pdf", "mimeType": "application/pdf", "buffer": PDF}
    page.get_by_label("The signed consent form").set_input_files(files=[signed])
    page.get_by_label("The person themselves").check()
    for box in page.locator("input[name=purposes]").all():
        box.check()
    for organisation in recipients:
        page.locator(f"input[name=recipients][value='{organisation}']").check()
    for category in CATEGORIES:
        page.locator(f"input[name=data_categories][value='{category}']").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Confirm the consent for case {case_ref}"
    )
    expect(page.locator("#scope")).to_contain_text(f"{RECIPIENT} (Nigeria)")
    axe(page)
    page.get_by_role("button", name="Register the consent").click()
    expect(page.get_by_role("status")).to_contain_text("The consent is registered")
    axe(page)


def refer_with_the_keyboard_alone(page: Page) -> None:
    """From the case page to the referral sent, by Tab, typing and Enter only."""

    def focused() -> str:
        return str(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return e.id || (e.tagName + ':' + (e.textContent || '').trim()); }"
            )
        )

    def tab_to(wanted: Callable[[str], bool], what: str) -> str:
        for _ in range(80):
            page.keyboard.press("Tab")
            now = focused()
            if wanted(now):
                return now
        raise AssertionError(f"{what} was never reached with Tab on {page.url}")

    tab_to(lambda f: f == "A:Referral", "the referral's link")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Referral")
    axe(page)
    tab_to(lambda f: f == "field-destination_country", "the destination country")
    is_choice = page.evaluate("() => document.activeElement.tagName === 'SELECT'")
    page.keyboard.type("Nigeria" if is_choice else "NG")
    tab_to(lambda f: f == "field-form_of_exploitation", "the form of exploitation")
    page.keyboard.type("Forced labour")
    tab_to(lambda f: f.startswith("BUTTON:Send"), "the Send button")
    page.keyboard.press("Enter")


def test_a_whole_case_by_three_people_in_three_browsers(
    web_cluster: WebCluster, people: People
) -> None:
    case_ref = f"AT-2026-WHOLE-{uuid.uuid4().hex[:6].upper()}"
    now = datetime.now(UTC)
    at, ng = web_cluster.at, web_cluster.ng

    # --- Austria: the consent, and the referral ------------------------------------------
    austria = people.person("austria", at.url)
    sign_in(austria, web_cluster.user(SENDER))
    expect(austria.get_by_role("heading", level=1)).to_have_text("My cases")
    axe(austria)
    register_consent(austria, case_ref)
    refer_with_the_keyboard_alone(austria)
    expect(austria.get_by_role("status")).to_contain_text("sent", timeout=20_000)
    austria.goto(f"/web/cases/{case_ref}")
    expect(austria.locator("table.timeline")).to_contain_text("Referral")
    axe(austria)

    # --- Nigeria's focal point: accepts, and assesses the risk ---------------------------
    naptip = people.person("naptip", ng.url)
    sign_in(naptip, web_cluster.user(RECIPIENT), f"/web/cases/{case_ref}")
    until(naptip, lambda: naptip.locator("table.timeline").count() > 0, "the referral")
    axe(naptip)
    open_step(naptip, case_ref, "referral_response", SENDER)
    naptip.locator("#field-accepted").select_option("yes")
    naptip.locator("#field-contact_point").fill("NAPTIP case desk, Lagos")
    send(naptip)
    open_step(naptip, case_ref, "risk_assessment", SENDER)
    naptip.locator("#field-risk_level").select_option("low")
    naptip.locator("#field-recommendation").select_option("return")
    naptip.locator("#field-assessed_at").fill(local(now - timedelta(hours=1)))
    naptip.locator("#field-protective_factors-4").check()  # supportive family
    send(naptip)

    # --- Austria: the return plan, once the risk assessment is confirmed ----------------
    austria.goto(f"/web/cases/{case_ref}")
    plan_link = austria.locator(f"a[href*='/send/return_preparation?recipient={RECIPIENT}']")
    until(austria, lambda: plan_link.count() > 0, "the return plan offered")
    axe(austria)
    open_step(austria, case_ref, "return_preparation", RECIPIENT)
    arrival = now + timedelta(days=5)
    austria.locator("#field-receiving_org").fill(SHELTER)
    austria.locator("#field-planned_arrival").fill(local(arrival))
    austria.locator("#field-travel_date").fill(arrival.astimezone(ZONE).date().isoformat())
    austria.locator("#field-route-0-mode").select_option("air")
    austria.locator("#field-route-0-departure_place").fill("Vienna (VIE)")
    austria.locator("#field-route-0-arrival_place").fill("Lagos (LOS)")
    austria.locator("#field-route-0-reference").fill("OS 1234")
    austria.locator("#field-travel_documents-kind").select_option("emergency_travel_document")
    austria.locator("#field-travel_documents-status").select_option("issued")
    austria.locator("#field-escort-required").select_option("yes")
    austria.locator("#field-escort-roles-0").check()  # a social worker
    austria.locator("#field-health-medical_needs").select_option("no")
    austria.locator("#field-health-psychological_needs").select_option("yes")
    austria.locator("#field-reintegration_plan-services-0").check()  # shelter
    austria.locator("#field-reintegration_plan-accommodation_arranged").select_option("yes")
    austria.locator("#field-contact_person").fill("Mrs Ada Example, escort")
    austria.locator("#field-languages").fill("en\npcm")
    send(austria)

    # --- The shelter: the plan, its answer, the contact, the reception, a report ---------
    # The shelter's worker is at the arrival hall, with a tablet held upright.
    shelter = people.person("shelter", ng.url, TABLET)
    sign_in(shelter, web_cluster.user(SHELTER))
    designated = shelter.get_by_role("link", name=f"Return in case {case_ref}")
    until(shelter, lambda: designated.count() > 0, "the return on the shelter's dashboard")
    expect(shelter.get_by_role("heading", name="Returns we were designated for")).to_be_visible()
    row = shelter.locator("tr", has=designated)
    expect(row).to_contain_text("Plan to answer")
    expect(row).to_contain_text("Answer the return plan")
    fits(shelter)
    axe(shelter)
    designated.click()
    expect(shelter.get_by_role("heading", level=1)).to_have_text(f"Return in case {case_ref}")
    plan = shelter.locator("section", has=shelter.get_by_role("heading", name="The return plan"))
    for words in (
        "Lagos (LOS)",
        "OS 1234",
        "Social worker",
        "Emergency travel document",
        "Mrs Ada Example, escort",
        "Nigerian Pidgin",
        "Shelter",
    ):
        expect(plan).to_contain_text(words)
    # The planned arrival in the shelter worker's zone, as Babel writes it in full.
    expect(shelter.locator("dl.facts").first).to_contain_text(str(arrival.astimezone(ZONE).year))
    fits(shelter)
    axe(shelter)
    # Printed, the page is the case file: no header, no actions.
    shelter.emulate_media(media="print")
    assert not shelter.get_by_role("heading", name="What to do").is_visible()
    assert not shelter.locator(".site-header").is_visible()
    assert plan.is_visible()
    shelter.emulate_media(media="screen")

    # With the keyboard alone: Tab from the page's start to the next step, Enter to open it.
    shelter.locator("body").focus()
    for _ in range(30):
        shelter.keyboard.press("Tab")
        if shelter.evaluate("() => document.activeElement.textContent.trim()") == (
            "Answer the return plan"
        ):
            break
    shelter.keyboard.press("Enter")
    expect(shelter.get_by_role("heading", level=1)).to_contain_text("Answer to the return plan")
    fits(shelter)
    axe(shelter)
    shelter.locator("#field-readiness").select_option("ready")
    shelter.locator("#field-contact_person").fill("Shelter reception desk")
    send(shelter)
    expect(shelter.get_by_role("heading", level=1)).to_have_text(f"Return in case {case_ref}")
    expect(shelter.locator("dl.facts").first).to_contain_text("Ready to receive")

    with shelter.expect_navigation():
        shelter.get_by_role("link", name="Record the contact before departure").click()
    axe(shelter)
    shelter.locator("#field-contacted_at").fill(local(datetime.now(UTC) - timedelta(minutes=5)))
    shelter.locator("#field-mode").select_option("phone")
    shelter.locator("#field-counselling_given").select_option("yes")
    send(shelter)

    with shelter.expect_navigation():
        shelter.get_by_role("link", name="Confirm the reception (or why not)").click()
    fits(shelter)
    axe(shelter)
    shelter.locator("#field-outcome").select_option("received")
    shelter.locator("#field-received_at").fill(local(datetime.now(UTC) - timedelta(minutes=1)))
    shelter.locator("#field-place").fill("Lagos airport, arrivals hall")
    send(shelter)
    expect(shelter.locator("dl.facts").first).to_contain_text("Arrived")

    with shelter.expect_navigation():
        shelter.get_by_role("link", name="Send a monitoring report").click()
    fits(shelter)
    axe(shelter)
    today = datetime.now(ZONE).date().isoformat()
    shelter.locator("#field-period_start").fill(today)
    shelter.locator("#field-period_end").fill(today)
    shelter.locator("#field-contact").select_option("office_visit")
    shelter.locator("#field-wellbeing-psychosocial").select_option("fair")
    send(shelter)
    what_we_sent = shelter.locator(
        "section", has=shelter.get_by_role("heading", name="What we sent")
    )
    for words in (
        "Answer to the return plan",
        "Contact before departure",
        "Reception confirmation",
        "Monitoring report",
    ):
        expect(what_we_sent).to_contain_text(words)

    # --- Austria: every step there, and its own messages delivered and confirmed --------
    austria.goto(f"/web/cases/{case_ref}")
    timeline = austria.locator("table.timeline")
    received = [
        "Answer to the referral",
        "Risk assessment",
        "Answer to the return plan",
        "Contact before departure",
        "Reception confirmation",
        "Monitoring report",
    ]

    def all_there() -> bool:
        text = timeline.inner_text()
        sent_rows = timeline.locator("tr", has_text="Sent to")
        statuses = [sent_rows.nth(i).inner_text() for i in range(sent_rows.count())]
        return (
            all(words in text for words in received)
            and len(statuses) == 3  # the referral, the plan to NAPTIP and to the shelter
            and all("Delivered and confirmed" in s for s in statuses)
        )

    until(austria, all_there, "every step at Austria's node, confirmed")
    expect(austria.get_by_text("Person received")).to_be_visible()
    axe(austria)
    assert len(people.shots) >= 20, "every page is saved as a screenshot"
    assert re.search(r"shelter", " ".join(p.name for p in people.shots))
