"""The node's web app as its users meet it, in Debian's chromium, against real broker and
node processes (tests/browser/conftest.py): a case worker signs in, sees their dashboard and
the case; every page passes axe-core; the sign-in form works with the keyboard alone; and a
user of another organisation on the same node is refused the case by its URL."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, People, WebCluster, axe
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER

pytestmark = pytest.mark.browser


def sign_in(page: Page, user: str, next_page: str = "/web/") -> None:
    page.goto(next_page)
    expect(page).to_have_url(re.compile(r"/web/sign-in"))
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_case_worker_signs_in_and_sees_their_case_every_page_accessible(
    web_cluster: WebCluster, people: People
) -> None:
    naptip = people.person("naptip", web_cluster.ng.url)
    naptip.goto("/web/")
    expect(naptip).to_have_url(re.compile(r"/web/sign-in"))
    axe(naptip)

    sign_in(naptip, web_cluster.user(RECIPIENT))
    expect(naptip.get_by_role("heading", level=1)).to_have_text("My cases")
    axe(naptip)

    naptip.get_by_role("link", name=web_cluster.case_ref).click()
    expect(naptip.get_by_role("heading", level=1)).to_contain_text(web_cluster.case_ref)
    expect(naptip.get_by_role("heading", name="Next steps")).to_be_visible()
    axe(naptip)
    assert people.shots, "every page is saved as a screenshot"


def test_a_wrong_password_is_said_in_words_and_tied_to_the_fields(
    web_cluster: WebCluster, people: People
) -> None:
    visitor = people.person("visitor", web_cluster.ng.url)
    visitor.goto("/web/sign-in")
    visitor.get_by_label("User name").fill(web_cluster.user(RECIPIENT))
    visitor.get_by_label("Password").fill("not the password")
    visitor.get_by_role("button", name="Sign in").click()
    problem = visitor.get_by_role("alert")
    expect(problem).to_contain_text("The user name or the password is wrong")
    expect(visitor.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    axe(visitor)


def test_the_sign_in_form_is_used_with_the_keyboard_alone(
    web_cluster: WebCluster, people: People
) -> None:
    worker = people.person("keyboard", web_cluster.ng.url)
    worker.goto("/web/sign-in")
    reached: list[str] = []
    for _ in range(30):  # from the page's start, Tab by Tab, to the form's fields and button
        worker.keyboard.press("Tab")
        focused = worker.evaluate(
            "() => { const e = document.activeElement;"
            " return e.id || (e.tagName + ':' + (e.textContent || '').trim()); }"
        )
        reached.append(focused)
        if focused == "user":
            worker.keyboard.type(web_cluster.user(RECIPIENT))
        if focused == "password":
            worker.keyboard.type(PASSWORD)
            worker.keyboard.press("Enter")
            break
    assert "user" in reached, reached
    assert reached.index("user") < reached.index("password")
    expect(worker.get_by_role("heading", level=1)).to_have_text("My cases")
    # Focus is visible: the focused field has an outline or a box shadow of its own.
    worker.keyboard.press("Tab")
    style = worker.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth, s.boxShadow]; }"
    )
    assert style[0] != "none" or style[2] != "none", style


def test_another_organisation_on_the_same_node_cannot_open_the_case_by_its_url(
    web_cluster: WebCluster, people: People
) -> None:
    shelter = people.person("shelter", web_cluster.ng.url)
    sign_in(shelter, web_cluster.user(SHELTER))
    expect(shelter.get_by_role("heading", level=1)).to_have_text("My cases")
    expect(shelter.get_by_role("link", name=web_cluster.case_ref)).to_have_count(0)

    for path in (f"/web/cases/{web_cluster.case_ref}", f"/web/messages/{web_cluster.referral_id}"):
        answer = shelter.goto(path)
        assert answer is not None
        assert answer.status in (403, 404), (path, answer.status)
        expect(shelter.get_by_role("heading", level=1)).to_have_text("Page not found")
        assert "forced_labour" not in shelter.content()
        axe(shelter)


def test_the_nigerian_case_worker_answers_the_referral_through_its_form(
    web_cluster: WebCluster, people: People
) -> None:
    naptip = people.person("naptip-answers", web_cluster.ng.url)
    sign_in(naptip, web_cluster.user(RECIPIENT), f"/web/cases/{web_cluster.case_ref}")
    naptip.get_by_role("link", name="Answer to the referral").click()
    expect(naptip.get_by_role("heading", level=1)).to_contain_text("Answer to the referral")
    axe(naptip)

    # Sent without its one required field: the error is said, on the field, and summarised.
    naptip.get_by_role("button", name="Send").click()
    expect(naptip.locator("#error-summary")).to_contain_text("Fill this in.")
    expect(naptip.get_by_label("Accepted")).to_have_attribute("aria-invalid", "true")
    axe(naptip)

    naptip.get_by_label("Accepted").select_option("yes")
    naptip.get_by_role("button", name="Send").click()
    expect(naptip.get_by_role("heading", level=1)).to_contain_text(web_cluster.case_ref)
    expect(naptip.get_by_role("status")).to_contain_text("Answer to the referral")
    expect(naptip.locator("table.timeline")).to_contain_text("Answer to the referral")
    axe(naptip)


def test_the_core_pages_work_with_javascript_off(
    web_cluster: WebCluster, chromium: Browser
) -> None:
    """Sign-in, the dashboard, a case, a received message and a step form's errors, in a
    browser with JavaScript switched off: nothing of the core needs it."""
    context = chromium.new_context(
        base_url=web_cluster.ng.url, java_script_enabled=False, locale="en-GB"
    )
    try:
        page = context.new_page()
        sign_in(page, web_cluster.user(RECIPIENT))
        expect(page.get_by_role("heading", level=1)).to_have_text("My cases")
        page.get_by_role("link", name=web_cluster.case_ref).first.click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(web_cluster.case_ref)
        page.goto(f"/web/messages/{web_cluster.referral_id}")
        expect(page.locator("main")).to_contain_text("Forced labour")
        page.goto(f"/web/cases/{web_cluster.case_ref}/send/case_closure?recipient={SENDER}")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#error-summary")).to_be_visible()
    finally:
        context.close()
