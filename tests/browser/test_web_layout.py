"""The web app on a tablet held at an airport arrival hall, and on a laptop (issue 19): every
page fits the screen's width (nothing to scroll sideways), its controls are large enough to
touch, and axe (WCAG 2.2 AA, target size included) finds nothing, in both orientations."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import People, WebCluster, axe
from tests.browser.test_web_app import sign_in
from trm_broker.dev.demo_case import RECIPIENT

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
        f"/web/cases/{web_cluster.case_ref}/send/referral_response",
    ]
    for width, height in SCREENS.values():
        worker.set_viewport_size({"width": width, "height": height})
        for path in pages:
            worker.goto(path)
            expect(worker.get_by_role("heading", level=1)).to_be_visible()
            fits(worker)
            axe(worker)
