"""The web app's edges in Debian's chromium, against real processes: a received message
prints as a case file (no navigation; the case, the organisation and when it was printed);
the settings page, used with the keyboard alone, switches the language and time zone of
every page; an unknown address is a page in words. axe-core on each."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, People, WebCluster, axe
from trm_broker.dev.demo_case import RECIPIENT

pytestmark = pytest.mark.browser


def sign_in(page: Page, user: str, next_page: str) -> None:
    page.goto(next_page)
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_received_message_prints_as_a_case_file(web_cluster: WebCluster, people: People) -> None:
    naptip = people.person("naptip-print", web_cluster.ng.url)
    sign_in(naptip, web_cluster.user(RECIPIENT), f"/web/messages/{web_cluster.referral_id}")
    expect(naptip.get_by_role("heading", level=1)).to_have_text("Referral")
    # On screen: the app around the message, the browser's zone (Vienna) named.
    expect(naptip.locator(".site-header")).to_be_visible()
    expect(naptip.locator(".case-file-head")).to_be_hidden()
    expect(naptip.locator(".site-footer")).to_contain_text("Europe/Vienna")
    assert naptip.locator('link[rel="stylesheet"][media="print"]').get_attribute("href") == (
        "/web/static/print.css"
    )
    axe(naptip)

    naptip.emulate_media(media="print")
    for hidden in (".site-header", "nav", ".skip-link", ".no-print"):
        for found in naptip.locator(hidden).all():
            expect(found).to_be_hidden()
    head = naptip.locator(".case-file-head")
    expect(head).to_be_visible()
    expect(head).to_contain_text(web_cluster.case_ref)
    expect(head).to_contain_text(RECIPIENT)
    expect(head).to_contain_text("printed")
    expect(naptip.get_by_role("heading", name="Content")).to_be_visible()
    naptip.screenshot(path=str(people.folder / "print-case-file.png"), full_page=True)
    pdf = naptip.pdf()
    assert pdf.startswith(b"%PDF")


def test_settings_chosen_with_the_keyboard_change_language_and_zone(
    web_cluster: WebCluster, people: People
) -> None:
    worker = people.person("naptip-settings", web_cluster.ng.url)
    sign_in(worker, web_cluster.user(RECIPIENT), "/web/settings")
    expect(worker.get_by_role("heading", level=1)).to_have_text("Settings")
    axe(worker)
    # Keyboard only: from the language list to the zone list to the button.
    worker.locator("#field-language").focus()
    worker.keyboard.press("ArrowDown")  # English
    worker.keyboard.press("ArrowDown")  # français
    worker.keyboard.press("Tab")
    expect(worker.get_by_label("Time zone")).to_be_focused()
    worker.get_by_label("Time zone").select_option("America/La_Paz")
    worker.keyboard.press("Tab")
    expect(worker.get_by_role("button", name="Save")).to_be_focused()
    worker.keyboard.press("Enter")
    expect(worker.get_by_role("status")).to_contain_text("Vos réglages sont enregistrés")
    expect(worker.locator("html")).to_have_attribute("lang", "fr")
    expect(worker.locator(".site-footer")).to_contain_text("America/La_Paz (UTC-04:00)")
    axe(worker)

    worker.goto(f"/web/messages/{web_cluster.referral_id}")
    expect(worker.get_by_role("heading", level=1)).to_have_text("Orientation")
    expect(worker.locator(".site-footer")).to_contain_text("America/La_Paz")
    # The content's labels are the form's, in French.
    expect(worker.locator(".case-file")).to_contain_text("Pays de destination")
    axe(worker)


def test_an_unknown_address_is_a_page_in_words(web_cluster: WebCluster, people: People) -> None:
    visitor = people.person("visitor-404", web_cluster.ng.url)
    answer = visitor.goto("/web/no/such/page")
    assert answer is not None
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    expect(visitor.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(visitor.get_by_role("link", name=re.compile("Go to my cases"))).to_be_visible()
    axe(visitor)
