"""The web app's safety as a browser meets it (issue 19), against real broker and node
processes: a form posted from another site with the user's own session cookie is refused
(the CSRF token, not the cookie, is what counts); a session left unused ends, and signing in
again leads back to the page asked for; after sign-out the pages ask to sign in; and a
refusal that comes back from the exchange is said in words, with what to fix."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, People, WebCluster, axe, set_password
from tests.browser.test_whole_case import register_consent
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, consent_body

pytestmark = pytest.mark.browser

#: Sessions end after this long unused, so the test can wait for it.
IDLE_SECONDS = 10
#: A case referred (through the JSON API), and one opened in the browser.
CASE = "AT-2026-WEB-SAFE"
NEW_CASE = "AT-2026-WEB-SAFE-2"


@dataclass(frozen=True)
class ShortSessions:
    at: Node
    ng: Node


@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortSessions]:
    """Austria's node and Nigeria's, sessions ending after a few seconds unused, and a
    consent for one case, registered as a case worker does through the JSON API."""
    env = {"TRM_NODE_WEB_SESSION_IDLE_SECONDS": str(IDLE_SECONDS)}
    with LocalCluster(tmp_path_factory.mktemp("short-sessions"), extra_env=env) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG")
        set_password(at, WebCluster.user(SENDER))
        worker = {"authorization": f"Bearer {at.token_for(SENDER)}", "prefer": "wait=10"}
        consent = consent_body(CASE, f"consent-{CASE}", datetime.now(UTC))
        made = httpx.post(
            at.url + "/consents", json={"consent": consent}, headers=worker, timeout=20
        )
        assert made.status_code == 201, made.text
        referral = {
            "sender": SENDER,
            "recipient": RECIPIENT,
            "payload": {"destination_country": "NG", "form_of_exploitation": "forced_labour"},
            "consent_ref": f"consent-{CASE}",
        }
        sent = httpx.post(
            f"{at.url}/cases/{CASE}/referral", json=referral, headers=worker, timeout=20
        )
        assert sent.status_code == 201, sent.text
        yield ShortSessions(at, ng)


def sign_in(page: Page, next_page: str) -> None:
    page.goto(next_page)
    expect(page).to_have_url(re.compile(r"/web/sign-in"))
    page.get_by_label("User name").fill(WebCluster.user(SENDER))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def _sent(node: Node, case: str = CASE) -> list[dict[str, object]]:
    answer = httpx.get(
        node.url + "/outbox",
        params={"case_ref": case},
        headers={"authorization": f"Bearer {node.token_for(SENDER)}"},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, object]] = answer.json()["messages"]
    return messages


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Another site on loopback (another port: the same site for the cookie's SameSite, so
    only the CSRF token stands in the way), serving a page whose form posts itself to the
    node as soon as it loads."""
    pages: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[0].encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_form_posted_from_another_site_is_refused_and_nothing_is_sent(
    short_sessions: ShortSessions, people: People, other_site: tuple[str, list[str]]
) -> None:
    node = short_sessions.at
    worker = people.person("csrf-victim", node.url)
    sign_in(worker, "/web/")
    expect(worker.get_by_role("heading", level=1)).to_have_text("My cases")
    before = len(_sent(node))

    site, pages = other_site
    target = f"{node.url}/web/cases/{CASE}/send/referral?recipient={RECIPIENT}"
    pages.append(
        "<!doctype html><html lang=en><title>prize</title><body>"
        f'<form id=f method=post action="{target}">'
        '<input name="destination_country" value="NG">'
        '<input name="form_of_exploitation" value="forced_labour">'
        "<input name=csrf_token value=guessed></form>"
        "<script>document.getElementById('f').submit()</script></body></html>"
    )
    worker.goto(site)
    expect(worker).to_have_url(re.compile(re.escape(node.url)))
    expect(worker.get_by_role("heading", level=1)).to_have_text("This cannot be shown")
    expect(worker.locator("main")).to_contain_text("did not come from this site")
    axe(worker)
    assert len(_sent(node)) == before, "a forged form sent a message"


def test_a_session_left_unused_ends_and_signing_in_again_leads_back(
    short_sessions: ShortSessions, people: People
) -> None:
    node = short_sessions.at
    worker = people.person("idle", node.url)
    case_page = f"/web/cases/{CASE}"
    sign_in(worker, case_page)
    expect(worker.get_by_role("heading", level=1)).to_contain_text(CASE)

    worker.wait_for_timeout((IDLE_SECONDS + 1.5) * 1000)
    worker.reload()
    expect(worker).to_have_url(re.compile(r"/web/sign-in"))
    expect(worker.get_by_role("status")).to_contain_text("Your session ended")
    axe(worker)
    worker.get_by_label("User name").fill(WebCluster.user(SENDER))
    worker.get_by_label("Password").fill(PASSWORD)
    worker.get_by_role("button", name="Sign in").click()
    expect(worker.get_by_role("heading", level=1)).to_contain_text(CASE)

    # Signed out: the back button and the case's address both ask to sign in.
    worker.get_by_role("button", name="Sign out").click()
    expect(worker).to_have_url(re.compile(r"/web/sign-in"))
    worker.go_back()
    worker.reload()
    expect(worker).to_have_url(re.compile(r"/web/sign-in"))
    worker.goto(case_page)
    expect(worker).to_have_url(re.compile(r"/web/sign-in"))


def test_a_refusal_that_comes_back_is_said_in_words_with_what_to_fix(
    short_sessions: ShortSessions, people: People
) -> None:
    node = short_sessions.at
    worker = people.person("refused", node.url)
    sign_in(worker, "/web/")
    register_consent(worker, NEW_CASE, (RECIPIENT, SENDER))
    consent_id = worker.locator("ul.consents strong").first.inner_text()
    worker.get_by_role("link", name="Referral", exact=True).click()
    expect(worker.get_by_role("heading", level=1)).to_contain_text("Referral")

    # Between opening the form and sending it, the person withdraws consent (her case
    # worker's colleague records it through the node's API).
    withdrawn = httpx.post(
        f"{node.url}/consents/{consent_id}/withdraw",
        headers={"authorization": f"Bearer {node.token_for(SENDER)}"},
        timeout=20,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    before = len(_sent(node, NEW_CASE))

    worker.locator("#field-destination_country").select_option("NG")
    worker.get_by_role("button", name="Send").click()
    refusal = worker.get_by_role("alert")
    expect(refusal).to_be_visible()
    text = refusal.inner_text()
    assert "consent" in text.lower(), text
    assert "{" not in text, f"the refusal shows raw data: {text}"
    axe(worker)
    assert all(m.get("state") != "receipted" for m in _sent(node, NEW_CASE)[before:])
