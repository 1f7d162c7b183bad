"""A focal point's case worker opens a new case in Debian's chromium (issue 19): uploads the
signed consent form (a small PDF), chooses its scope, sees it in plain words, registers it
at the broker, and is offered the referral; axe-core on every page, each saved as a
screenshot under var/screenshots/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import FilePayload, expect

from tests.browser.conftest import People, WebCluster, axe
from tests.browser.test_web_app import sign_in
from trm_broker.dev.demo_case import RECIPIENT, SENDER

pytestmark = pytest.mark.browser

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def test_a_case_worker_opens_a_case_with_the_signed_consent_and_is_offered_the_referral(
    web_cluster: WebCluster, people: People
) -> None:
    worker = people.person("austria-new-case", web_cluster.at.url)
    sign_in(worker, web_cluster.user(SENDER))
    expect(worker.get_by_role("heading", level=1)).to_have_text("My cases")
    worker.get_by_role("link", name="New case").click()
    expect(worker.get_by_role("heading", level=1)).to_have_text(
        "New case: register the person's consent"
    )
    axe(worker)

    # Sent without the file or any choice: each problem said, on its field.
    worker.get_by_role("button", name="Continue").click()
    expect(worker.locator("#error-summary")).to_contain_text(
        "Choose the file of the signed consent form."
    )
    expect(worker.get_by_label("The signed consent form")).to_have_attribute("aria-invalid", "true")
    axe(worker)

    case_ref = worker.get_by_label("Case reference").input_value()
    assert re.fullmatch(r"AT-\d{4}-[0-9A-F]{6}", case_ref), case_ref
    signed: FilePayload = {"name": "consent.pdf", "mimeType": "application/pdf", "buffer": PDF}
    worker.get_by_label("The signed consent form").set_input_files(files=[signed])
    worker.get_by_label("The person themselves").check()
    for purpose in ("Referral", "Answer to the referral", "Risk assessment"):
        worker.get_by_label(purpose, exact=True).check()
    worker.get_by_label(re.compile("^" + re.escape(RECIPIENT))).check()
    worker.get_by_label(re.compile("^" + re.escape(SENDER))).check()
    for category in ("identity", "health"):
        worker.get_by_label(category, exact=True).check()
    worker.get_by_label("Valid until").fill("2027-03-06")
    worker.get_by_role("button", name="Continue").click()

    expect(worker.get_by_role("heading", level=1)).to_have_text(
        f"Confirm the consent for case {case_ref}"
    )
    scope = (
        f"{SENDER} (Austria) and {RECIPIENT} (Nigeria) may receive: referral, answer to the"
        " referral and risk assessment; data: identity and health; until 6 March 2027;"
        " given by the person themselves."
    )
    expect(worker.locator("#scope")).to_have_text(scope)
    axe(worker)

    worker.get_by_role("button", name="Register the consent").click()
    expect(worker.get_by_role("heading", level=1)).to_have_text(f"Case {case_ref}")
    expect(worker.get_by_role("status")).to_contain_text("The consent is registered")
    expect(worker.locator(".scope")).to_have_text(scope)
    referral = worker.get_by_role("link", name="Referral", exact=True)
    expect(referral).to_have_attribute(
        "href", f"/web/cases/{case_ref}/send/referral?recipient={RECIPIENT}"
    )
    expect(worker.get_by_role("link", name=re.compile("^Download the signed form"))).to_be_visible()
    axe(worker)

    referral.click()
    expect(worker.get_by_role("heading", level=1)).to_contain_text("Referral")
    axe(worker)
