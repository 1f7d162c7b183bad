"""The web app on a tablet held at an airport arrival hall, and on a laptop (issue 19): every
page fits the screen's width (nothing to scroll sideways), its controls are large enough to
touch, and axe (WCAG 2.2 AA, target size included) finds nothing, in both orientations. A
supervisor reads everything of their organisation and its audit log, and sends nothing.
(The shelter's pages are checked at tablet size in test_whole_case.py.)"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, People, WebCluster, axe
from tests.browser.test_web_app import sign_in
from trm_broker.dev.demo_case import RECIPIENT, SENDER

pytestmark = pytest.mark.browser

SCREENS = {
    "tablet-portrait": (768, 1024),
    "tablet-landscape": (1024, 768),
    "laptop": (1366, 768),
}
#: WCAG 2.2 2.5.8 asks for 24 CSS pixels; fingers in a hurry want more.
TOUCH = 24


def fits(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways at {width[1]} px: {width[0]}"
    small = page.evaluate(
        """(least) => [...document.querySelectorAll(
            'main a, main button, main input, main select, main textarea, header button')]
          .filter(e => e.offsetParent !== null && e.type !== 'hidden')
          .map(e => [e.outerHTML.slice(0, 80), e.getBoundingClientRect()])
          .filter(([, r]) => r.height < least && !(r.width >= least * 2 && r.height >= 18))
          .map(([html, r]) => `${html} (${Math.round(r.width)}x${Math.round(r.height)})`)""",
        TOUCH,
    )
    assert not small, f"{page.url}: controls too small to touch: {small}"


def test_every_page_fits_a_tablet_and_a_laptop(web_cluster: WebCluster, people: People) -> None:
    worker = people.person("naptip-screens", web_cluster.ng.url)
    sign_in(worker, web_cluster.user(RECIPIENT))
    expect(worker.get_by_role("heading", level=1)).to_have_text("My cases")
    pages = [
        "/web/",
        f"/web/cases/{web_cluster.case_ref}",
        f"/web/messages/{web_cluster.referral_id}",
        # A form that stays offered whatever the module's other tests sent.
        f"/web/cases/{web_cluster.case_ref}/send/case_closure?recipient={SENDER}",
        "/web/new-case",
        "/web/settings",
        "/web/no/such/page",
    ]
    for width, height in SCREENS.values():
        worker.set_viewport_size({"width": width, "height": height})
        for path in pages:
            worker.goto(path)
            expect(worker.get_by_role("heading", level=1)).to_be_visible()
            fits(worker)
            axe(worker)
            if "/send/" in path:  # the form itself, not a page saying it is not offered
                expect(worker.get_by_role("button", name="Send")).to_be_visible()


def test_a_supervisor_reads_the_case_and_the_audit_log_and_sends_nothing(
    web_cluster: WebCluster, people: People
) -> None:
    supervisor = people.person("naptip-supervisor", web_cluster.ng.url, SCREENS["tablet-portrait"])
    supervisor.goto("/web/")
    supervisor.get_by_label("User name").fill(web_cluster.supervisor(RECIPIENT))
    supervisor.get_by_label("Password").fill(PASSWORD)
    supervisor.get_by_role("button", name="Sign in").click()
    expect(supervisor.get_by_role("heading", level=1)).to_have_text("My cases")
    expect(supervisor.get_by_role("link", name="New case")).to_have_count(0)
    fits(supervisor)
    axe(supervisor)

    # The organisation's case, read-only: its steps named, no link to a form.
    supervisor.get_by_role("link", name=web_cluster.case_ref).first.click()
    expect(supervisor.get_by_role("heading", level=1)).to_contain_text(web_cluster.case_ref)
    expect(supervisor.locator("main")).to_contain_text("A case worker of your organisation sends")
    expect(supervisor.locator("a[href*='/send/']")).to_have_count(0)
    fits(supervisor)
    axe(supervisor)
    # A step form's address, tried directly: a page saying who sends.
    answer = supervisor.goto(f"/web/cases/{web_cluster.case_ref}/send/referral_response")
    assert answer is not None
    assert answer.status == 403
    expect(supervisor.locator("main")).to_contain_text("Only a case worker of your organisation")
    axe(supervisor)

    # The node's audit log of the organisation: the case worker's pages and sends, never
    # content; a case worker does not get it.
    supervisor.goto("/web/")
    supervisor.get_by_role("link", name="Audit log").click()
    expect(supervisor.get_by_role("heading", level=1)).to_have_text("Audit log")
    log = supervisor.locator("table.audit")
    expect(log).to_contain_text(web_cluster.user(RECIPIENT))
    expect(log).to_contain_text("GET /web/cases/{case_ref}")
    expect(log).to_contain_text(web_cluster.supervisor(RECIPIENT))
    assert "forced_labour" not in supervisor.content()
    fits(supervisor)
    axe(supervisor)

    worker = people.person("naptip-no-audit", web_cluster.ng.url)
    sign_in(worker, web_cluster.user(RECIPIENT))
    expect(worker.get_by_role("link", name="Audit log")).to_have_count(0)
    refused = worker.goto("/web/audit")
    assert refused is not None
    assert refused.status == 403
    axe(worker)
