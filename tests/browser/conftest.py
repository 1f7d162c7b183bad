"""The node's web app in a real browser (issue 19): Debian's chromium, driven by Playwright,
against real broker and node processes on loopback.

- ``chromium``: the browser, headless, from /usr/bin/chromium (tools/ensure-chromium.sh
  installs it in `make test`; Playwright's own browser builds are never downloaded). Where
  it is missing the tests are skipped, except in CI (CI=true), where they fail, as the
  PostgreSQL tests do (tests/conftest.py).
- ``people``: one browser context per person (their own cookies), every page they load
  saved as a screenshot under var/screenshots/ (git-ignored) to look at.
- :func:`axe`: axe-core (bundled by axe-playwright-python, no network) run on a page; any
  violation fails the test with a readable list.
- ``web_cluster``: Austria's node (its focal point) and Nigeria's (NAPTIP and a shelter),
  each organisation's case worker with a password, NAPTIP's supervisor with one, and one
  case referred from Austria.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node, default_launcher
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, consent_body

CHROMIUM = Path(os.environ.get("TRM_TEST_CHROMIUM", "/usr/bin/chromium"))
#: What chromium needs here: no sandbox (root, in a container), no GPU, nothing fetched from
#: the network behind the test's back (updates, sync, QUIC probes).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
AXE_SOURCE = (files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")
#: WCAG 2.2 A and AA, as issue 19 asks, and axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
PASSWORD = "correct horse battery staple 19"
CASE = "AT-2026-WEB-1"
WAIT = 60.0


@pytest.fixture
def playwright() -> Iterator[Playwright]:
    """Playwright's driver for one test only. Its sync API runs an event loop in this thread
    while it lives: kept for the session, it would break every coroutine test that the same
    pytest-xdist worker runs after it ("Runner.run() cannot be called from a running event
    loop")."""
    if not CHROMIUM.exists():
        message = f"chromium not installed at {CHROMIUM} (tools/ensure-chromium.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def chromium(playwright: Playwright) -> Iterator[Browser]:
    # Each launch runs on a fresh user data dir that Playwright makes and removes (it
    # refuses --user-data-dir: that is for one persistent context, and each person here
    # needs a context of their own).
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
    )
    yield browser
    browser.close()


def axe(page: Page) -> None:
    """Run axe-core on the page as it is; fail with every violation, readably."""
    # A click that navigates returns once the next page starts loading: wait for it to load,
    # or axe would run on a document that has no root element yet.
    page.wait_for_load_state("load")
    # Evaluated through the DevTools protocol, so the page's strict CSP does not block it.
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE)
    results: dict[str, Any] = page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags},"
        " resultTypes: ['violations']})",
        AXE_TAGS,
    )
    problems = [
        f"- {v['id']} ({v['impact']}): {v['help']}\n"
        + "\n".join(f"    at {n['target']}: {n['failureSummary']}" for n in v["nodes"][:5])
        for v in results["violations"]
    ]
    assert not problems, f"axe found on {page.url}:\n" + "\n".join(problems)


@dataclass
class People:
    """One browser context per person; every page each loads is saved as a screenshot."""

    browser: Browser
    folder: Path
    contexts: list[BrowserContext] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def person(self, name: str, base_url: str, screen: tuple[int, int] | None = None) -> Page:
        """``screen``: the viewport's width and height (a tablet's), else Playwright's."""
        size: ViewportSize | None = {"width": screen[0], "height": screen[1]} if screen else None
        context = self.browser.new_context(
            base_url=base_url, locale="en-GB", timezone_id="Europe/Vienna", viewport=size
        )
        context.set_default_timeout(20_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("load", lambda loaded: self.shoot(name, loaded))
        return page

    def shoot(self, name: str, page: Page) -> None:
        where = re.sub(r"[^A-Za-z0-9]+", "-", page.url.split("//", 1)[-1].split("/", 1)[-1])
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}-{where.strip('-')[:60]}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def people(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[People]:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    crowd = People(chromium, folder)
    yield crowd
    crowd.close()


# --- real processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class WebCluster:
    at: Node
    ng: Node
    case_ref: str
    referral_id: str

    @staticmethod
    def user(organisation: str) -> str:
        return f"case-worker@{organisation}"

    @staticmethod
    def supervisor(organisation: str) -> str:
        return f"supervisor@{organisation}"


def node_command(node: Node, *command: str, stdin: str | None = None) -> None:
    """An administrator's `trm-broker` command, run at the node as they run it."""
    done = default_launcher().run(
        command, node.process.env, node.process.log_path.parent, input=stdin
    )
    assert done.returncode == 0, done.stderr[-2000:]


def set_password(node: Node, user: str, password: str = PASSWORD) -> None:
    """The administrator's command that sets a user's password."""
    node_command(node, "node", "users", "password", "set", user, "--stdin", stdin=password + "\n")


def add_user(node: Node, user: str, organisation: str, role: str) -> None:
    """The administrator's command that adds a user (`trm-broker node users add`)."""
    node_command(node, "node", "users", "add", user, "--organisation", organisation, "--role", role)


def _call(node: Node, organisation: str, method: str, path: str, body: Any) -> httpx.Response:
    return httpx.request(
        method,
        node.url + path,
        json=body,
        headers={"authorization": f"Bearer {node.token_for(organisation)}", "prefer": "wait=10"},
        timeout=20,
    )


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def web_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCluster]:
    workdir = tmp_path_factory.mktemp("web-cluster")
    env = {"TRM_NODE_STATUS_POLL_SECONDS": "1"}
    with LocalCluster(workdir, extra_env=env) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT, SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG", kinds={SHELTER: "receiving_org"})
        for node, organisation in ((at, SENDER), (ng, RECIPIENT), (ng, SHELTER)):
            set_password(node, WebCluster.user(organisation))
        add_user(ng, WebCluster.supervisor(RECIPIENT), RECIPIENT, "supervisor")
        set_password(ng, WebCluster.supervisor(RECIPIENT))
        consent = consent_body(CASE, f"consent-{CASE}", datetime.now(UTC))
        made = _call(at, SENDER, "POST", "/consents", {"consent": consent})
        assert made.status_code == 201, made.text
        sent = _call(
            at,
            SENDER,
            "POST",
            f"/cases/{CASE}/referral",
            {
                "sender": SENDER,
                "recipient": RECIPIENT,
                "payload": {"destination_country": "NG", "form_of_exploitation": "forced_labour"},
                "consent_ref": f"consent-{CASE}",
            },
        )
        assert sent.status_code == 201, sent.text
        referral = sent.json()["message_id"]

        def arrived() -> bool:
            found = _call(ng, RECIPIENT, "GET", f"/messages/{referral}", None)
            return found.status_code == 200

        _eventually(arrived, "the referral at Nigeria's node")
        yield WebCluster(at, ng, CASE, referral)
