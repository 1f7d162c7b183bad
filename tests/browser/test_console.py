"""The auditors' console in a real browser (issue 20): Debian's chromium, driven by
Playwright, against a real broker process on loopback.

An auditor signs in with the link `trm-broker console login` prints, searches the ledger and
sees each entry marked verified by the page's own check (WebCrypto SHA-256 and Ed25519);
a page served with a tampered proof shows "Not verified"; two checkpoints are checked
consistent in the page; the page's script agrees with the transparency-dev Merkle vectors;
a focal point and an unknown visitor are refused; the overview draws its charts with their
tables, and every table downloads as CSV from the keyboard. axe-core finds nothing on any
page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route

from tests.browser.conftest import People, axe
from tests.support import referral
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, default_launcher
from trm_broker.dev.launch import Completed
from trm_broker.domain.messages import DataCategory
from trm_broker.ledger.note import NoteSigner
from trm_broker.web.signed_requests import SignedRequests

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "merkle-proofs"
AUDITOR = "at.rapporteur"
FOCAL_POINT = "at.focal-point"
CASE = "AT-2026-CONSOLE-1"


@dataclass(frozen=True)
class ConsoleBroker:
    url: str
    auditor_key: Path
    focal_point_key: Path
    case_ref: str


def _register_focal_point(cluster: LocalCluster, url: str, keyset: KeySet, country: str) -> Path:
    assert cluster.operator is not None
    path = cluster.workdir / f"{keyset.participant}.keys.json"
    keyset.write(path)
    body = {
        "id": keyset.participant,
        "kind": "focal_point",
        "country": country,
        "inbox_url": f"https://node-{country.lower()}.example/inbox",
        "keys": keyset.public(),
        "statements": demo.stated(cluster.operator, keyset),
    }
    made = httpx.post(
        url + "/v1/participants", json=body, auth=SignedRequests(cluster.operator.signing)
    )
    assert made.status_code == 201, made.text
    return path


@pytest.fixture(scope="module")
def console_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleBroker]:
    workdir = tmp_path_factory.mktemp("console")
    with LocalCluster(workdir) as cluster:
        cluster.migrate()
        cluster.init_operator()
        # Cells of one shown (the report's k is 11 by default), so the charts have bars.
        broker = cluster.start_broker(TRM_REPORT_MIN_CELL="1")
        auditor_key = demo.register_auditor(cluster, AUDITOR, "AT")
        at, ng = KeySet.generate(FOCAL_POINT), KeySet.generate("ng.naptip")
        focal_point_key = _register_focal_point(cluster, broker.url, at, "AT")
        _register_focal_point(cluster, broker.url, ng, "NG")
        _refer(broker.url, at, ng, CASE)
        yield ConsoleBroker(broker.url, auditor_key, focal_point_key, CASE)


def _refer(url: str, sender: KeySet, recipient: KeySet, case_ref: str) -> None:
    """Austria refers a case to Nigeria: the consent, then the referral, signed by Austria."""
    consent = {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [recipient.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "A" * 43,
    }
    auth = SignedRequests(sender.signing)
    made = httpx.post(url + "/v1/consents", json=consent, auth=auth)
    assert made.status_code == 201, made.text
    signed = referral(sender, recipient, case_ref=case_ref)
    sent = httpx.post(
        url + "/v1/messages",
        content=json.dumps(signed).encode(),
        headers={"content-type": "application/jose+json"},
        auth=auth,
    )
    assert sent.status_code in (201, 202), sent.text


def login(broker: ConsoleBroker, key: Path, pinned: tuple[str, ...] = ()) -> Completed:
    """`trm-broker console login`, as the auditor runs it on their own computer; ``pinned``:
    the ledger verifier keys given with --broker-key."""
    command = ["console", "login", "--key", str(key), "--broker", broker.url]
    command += [option for vkey in pinned for option in ("--broker-key", vkey)]
    return default_launcher().run(command, dict(os.environ), key.parent)


def sign_in(page: Page, broker: ConsoleBroker, pinned: tuple[str, ...] = ()) -> None:
    done = login(broker, broker.auditor_key, pinned)
    assert done.returncode == 0, done.stderr
    page.goto(done.stdout.strip())
    axe(page)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/ledger")


def wait_for_marks(page: Page) -> list[str | None]:
    """The proof marks of every entry shown, once the page's script has set them all."""
    page.wait_for_function(
        "() => { const rows = document.querySelectorAll('#entries tr[data-index]');"
        " return rows.length > 0 && [...rows].every("
        "r => r.querySelector('[data-proof-status]').dataset.verified); }"
    )
    return [
        cell.get_attribute("data-verified") for cell in page.locator("[data-proof-status]").all()
    ]


def test_an_auditor_signs_in_and_the_page_verifies_every_entry(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("auditor", console_broker.url)
    sign_in(page, console_broker)
    marks = wait_for_marks(page)
    assert marks
    assert all(mark == "true" for mark in marks)
    assert page.locator("#entries").get_by_text("Verified").count() == len(marks)
    signature = page.locator("#checkpoint [data-signature-status]")
    assert signature.inner_text() == "Signature checked in this browser (Ed25519): valid."
    assert "entries verified in this browser" in page.locator("#proof-summary").inner_text()
    axe(page)

    page.get_by_role("link", name="Overview").click()
    page.wait_for_url("**/console/overview")
    assert page.get_by_role("heading", name="Messages by type and country pair").is_visible()
    axe(page)
    page.go_back()
    wait_for_marks(page)

    # Search with the keyboard only: the participant field, then Enter.
    page.get_by_label("Participant").focus()
    page.keyboard.type(FOCAL_POINT)
    page.keyboard.press("Enter")
    page.wait_for_url("**participant=at.focal-point**")
    marks = wait_for_marks(page)
    assert marks
    assert all(mark == "true" for mark in marks)
    for cell in page.locator("td[data-field='parties']").all():
        assert FOCAL_POINT in cell.inner_text()
    people.shoot("auditor", page)
    axe(page)


def test_a_tampered_proof_is_marked_not_verified(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("auditor", console_broker.url)
    sign_in(page, console_broker)

    def tamper(route: Route) -> None:
        served = route.fetch()
        text = served.text()
        start = text.index('data-proof="') + len('data-proof="')
        flipped = "A" if text[start] != "A" else "B"
        route.fulfill(response=served, body=text[:start] + flipped + text[start + 1 :])

    page.route("**/console/ledger*", tamper)
    page.reload()
    marks = wait_for_marks(page)
    assert marks[0] == "false"
    assert page.locator("[data-proof-status]").first.inner_text().endswith("Not verified")
    assert all(mark == "true" for mark in marks[1:])
    people.shoot("auditor", page)


def test_checkpoints_are_checked_with_the_key_the_auditor_pinned(
    console_broker: ConsoleBroker, people: People
) -> None:
    served = httpx.get(console_broker.url + "/v1/broker").json()["ledger"]["verifier_key"]
    # The key obtained out of band, given to `console login` as to `ledger verify`: the
    # link carries it after "#", which the browser sends to no server.
    done = login(console_broker, console_broker.auditor_key, (served,))
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.split("#", 1)[1].startswith("pin=")
    page = people.person("auditor", console_broker.url)
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    sign_in(page, console_broker, (served,))
    assert all("pin=" not in url for url in sent)
    assert all(mark == "true" for mark in wait_for_marks(page))
    signature = page.locator("#checkpoint [data-signature-status]")
    assert signature.inner_text() == (
        "Signature checked in this browser (Ed25519) with the key you pinned: valid."
    )
    # Pages opened afterwards in the tab keep checking with the pinned key.
    page.get_by_role("link", name="Checkpoints").click()
    page.wait_for_url("**/console/checkpoints")
    page.get_by_role("link", name="Ledger").click()
    wait_for_marks(page)
    assert "with the key you pinned" in signature.inner_text()
    axe(page)

    # An auditor who pinned another key (the broker's was swapped, or the page's server
    # lies): the key the broker serves is not the pinned one, nothing is marked verified.
    other = NoteSigner(served.split("+")[0], SigningKey.generate()).verifier().vkey()
    page = people.person("misled auditor", console_broker.url)
    sign_in(page, console_broker, (other,))
    assert all(mark == "false" for mark in wait_for_marks(page))
    misled = page.locator("#checkpoint [data-signature-status]").inner_text()
    assert misled == "The broker serves a key you did not pin: nothing below is verified."
    people.shoot("misled auditor", page)
    axe(page)


def test_two_checkpoints_are_checked_consistent_in_the_page(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("auditor", console_broker.url)
    sign_in(page, console_broker)
    page.get_by_role("link", name="Checkpoints").click()
    axe(page)
    sizes = sorted(int(s) for s in page.locator("tbody th[scope='row']").all_inner_texts())
    nonzero = [s for s in sizes if s > 0]
    assert len(nonzero) >= 2, sizes
    page.get_by_label("Earlier size").fill(str(nonzero[0]))
    page.get_by_label("Later size").fill(str(nonzero[-1]))
    page.get_by_label("Later size").press("Enter")
    status = page.locator("[data-consistency-status]")
    page.wait_for_function(
        "() => document.querySelector('[data-consistency-status]').dataset.verified"
    )
    assert status.get_attribute("data-verified") == "true"
    assert status.inner_text().startswith("\u2714 Verified")
    people.shoot("auditor", page)
    axe(page)

    def tamper(route: Route) -> None:
        served = route.fetch()
        text = served.text()
        start = text.index('data-proof="') + len('data-proof="')
        flipped = "A" if text[start] != "A" else "B"
        route.fulfill(response=served, body=text[:start] + flipped + text[start + 1 :])

    page.route("**/console/checkpoints*", tamper)
    page.reload()
    page.wait_for_function(
        "() => document.querySelector('[data-consistency-status]').dataset.verified"
    )
    assert status.get_attribute("data-verified") == "false"

    # In French, the same page, checked by the same script, in the reader's words.
    page.unroute("**/console/checkpoints*")
    page.get_by_role("link", name="Français").click()
    page.wait_for_function(
        "() => document.querySelector('[data-consistency-status]').dataset.verified"
    )
    assert page.locator("html").get_attribute("lang") == "fr"
    assert status.inner_text().startswith("\u2714 Vérifié")
    people.shoot("auditor", page)
    axe(page)


def _vectors(kind: str) -> list[dict[str, Any]]:
    folder = VECTORS / kind
    assert folder.is_dir(), f"Merkle proof vectors not found at {folder}"
    cases = []
    for path in sorted(folder.rglob("*.json")):
        case = json.loads(path.read_text())
        case["name"] = str(path.relative_to(VECTORS))
        cases.append(case)
    return cases


_RUN_VECTORS = """async ([inclusion, consistency]) => {
  const p = window.TrmProofs;
  const hashes = (list) => (list || []).map(p.bytesOf);
  const wrong = [];
  for (const c of inclusion) {
    let ok;
    try {
      ok = await p.verifyInclusion(c.leafIdx, c.treeSize, p.bytesOf(c.leafHash || ""),
                                   hashes(c.proof), p.bytesOf(c.root || ""));
    } catch (e) { ok = false; }
    if (ok === c.wantErr) wrong.push(c.name);
  }
  for (const c of consistency) {
    let ok;
    try {
      ok = await p.verifyConsistency(c.size1, c.size2, p.bytesOf(c.root1 || ""),
                                     p.bytesOf(c.root2 || ""), hashes(c.proof));
    } catch (e) { ok = false; }
    if (ok === c.wantErr) wrong.push(c.name);
  }
  return wrong;
}"""


def test_the_pages_proof_checks_agree_with_the_merkle_vectors(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("visitor", console_broker.url)
    page.goto("/console/sign-in")
    page.wait_for_function("() => typeof window.TrmProofs === 'object'")
    inclusion, consistency = _vectors("inclusion"), _vectors("consistency")
    assert len(inclusion) > 50
    assert len(consistency) > 50
    wrong = page.evaluate(_RUN_VECTORS, [inclusion, consistency])
    assert wrong == []


def test_a_focal_point_and_an_unknown_visitor_are_refused(
    console_broker: ConsoleBroker, people: People
) -> None:
    refused = login(console_broker, console_broker.focal_point_key)
    assert refused.returncode != 0
    assert "Only auditors and operators sign in to the console" in refused.stderr
    assert refused.stdout == ""

    page = people.person("visitor", console_broker.url)
    page.goto("/console/ledger")
    assert "/console/sign-in" in page.url
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert page.get_by_text("trm-broker console login").is_visible()
    assert page.locator("#entries").count() == 0
    axe(page)
    page.goto("/console/sign-in?challenge=made-up&key=nobody&signature=AAAA")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("This sign-in link is not valid")
    page.goto("/console/checkpoints")
    assert "/console/sign-in" in page.url


def test_the_case_timeline_is_verified_in_the_page(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("auditor", console_broker.url)
    sign_in(page, console_broker)
    page.get_by_label("Case reference").fill(console_broker.case_ref)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**case_ref=**")
    marks = wait_for_marks(page)
    assert marks
    assert all(mark == "true" for mark in marks)
    page.get_by_role("link", name=console_broker.case_ref).first.click()
    page.wait_for_url(f"**/console/cases/{console_broker.case_ref}")
    steps = wait_for_marks(page)
    assert len(steps) == len(marks)
    assert all(mark == "true" for mark in steps)
    referred = page.locator("td[data-field='message_type']", has_text="referral")
    assert referred.count() == 1
    people.shoot("auditor", page)
    axe(page)


def _download_with_the_keyboard(page: Page, link: Any) -> str:
    """Focus the link, press Enter: the name of the file the browser saves."""
    link.focus()
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    return download.value.suggested_filename


def test_the_overview_draws_its_charts_and_the_timeline_downloads(
    console_broker: ConsoleBroker, people: People
) -> None:
    page = people.person("auditor", console_broker.url)
    sign_in(page, console_broker)
    page.goto("/console/overview")
    weekly = page.get_by_role("img", name="Messages per week, by type")
    assert weekly.is_visible()
    assert page.locator("#weekly-chart rect").count() >= 1  # the referral's bar
    assert "referral" in page.locator("#messages-per-week").inner_text()
    links = page.get_by_role("link", name="Download this table as CSV")
    assert links.count() >= 2
    name = _download_with_the_keyboard(page, links.first)
    assert name.startswith("trm-messages-per-week-")
    people.shoot("auditor", page)
    axe(page)

    page.get_by_role("link", name="Français").click()
    page.wait_for_url("**/console/overview**")
    assert page.get_by_role("img", name="Messages par semaine, par type").is_visible()
    people.shoot("auditor", page)
    axe(page)
    page.get_by_role("link", name="English").click()

    page.goto(f"/console/cases/{console_broker.case_ref}")
    steps = page.locator("#steps tbody tr")
    assert steps.count() == 1
    assert steps.first.locator("th").inner_text() == "referral"
    link = page.get_by_role("link", name="Download this table as CSV")
    assert _download_with_the_keyboard(page, link) == f"trm-case-{console_broker.case_ref}.csv"
    wait_for_marks(page)
    people.shoot("auditor", page)
    axe(page)
