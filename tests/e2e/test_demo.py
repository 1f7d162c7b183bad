"""`trm-broker demo --serve`, run as the README says: the whole case plays, the processes keep
running, the case worker it prints can sign in to a node's web app with the password it
prints and find the demo case there, the demo's auditor signs in to the broker's console
with the link it prints and finds the case in the ledger; Ctrl-C stops everything."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER

pytestmark = pytest.mark.e2e

_SIGN_IN = re.compile(r"^\s+(\S+)\s+(http://\S+/web/)\s+user (\S+)$")
_PASSWORD = re.compile(r"^\s+password\s+(\S+)\s")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')
_CONSOLE = re.compile(r"^\s+(http://\S+/console/sign-in\?\S+)$")


@contextmanager
def demo_serving() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "trm_broker.cli", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
            assert time.monotonic() < deadline, "\n".join(lines)
        assert lines, "the demo printed nothing"
        assert lines[-1].startswith("Press Ctrl-C"), "\n".join(lines)
        yield demo, lines
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def _cookies(response: httpx.Response, jar: dict[str, str]) -> None:
    # The session cookie is `__Host-` (Secure): a browser keeps it for the node on loopback,
    # httpx would not send it over http, so it is kept here as the browser keeps it.
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";", 1)[0]


def test_demo_serve_lets_the_printed_case_worker_sign_in_and_stops_on_ctrl_c() -> None:
    with demo_serving() as (demo, lines):
        text = "\n".join(lines)
        assert "AT-2026-DEMO-0001" in text
        signs = [m.groups() for line in lines if (m := _SIGN_IN.match(line))]
        assert {organisation for organisation, _, _ in signs} == {SENDER, RECIPIENT, SHELTER}, text
        password = next(m.group(1) for line in lines if (m := _PASSWORD.match(line)))
        _, url, user = next(s for s in signs if s[0] == RECIPIENT)

        jar: dict[str, str] = {}
        with httpx.Client(timeout=20) as client:
            form = client.get(url + "sign-in")
            _cookies(form, jar)
            token = _CSRF.search(form.text)
            assert token is not None
            signed_in = client.post(
                url + "sign-in",
                data={"csrf_token": token.group(1), "user": user, "password": password},
                headers={"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())},
            )
            assert signed_in.status_code == 303, signed_in.text
            _cookies(signed_in, jar)
            dashboard = client.get(
                url, headers={"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
            )
            assert dashboard.status_code == 200
            assert "AT-2026-DEMO-0001" in dashboard.text
            wrong = client.post(
                url + "sign-in",
                data={"csrf_token": token.group(1), "user": user, "password": "not it"},
                headers={"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())},
            )
            assert wrong.status_code != 303

            # The auditor's one-time link to the console: one button, then the console.
            link = next(m.group(1) for line in lines if (m := _CONSOLE.match(line)))
            # The ledger's key pinned in the fragment, which the browser never sends.
            assert "#pin=" in link
            console: dict[str, str] = {}
            page = client.get(link)
            assert page.status_code == 200, page.text
            _cookies(page, console)
            fields = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
            assert {"csrf_token", "challenge", "key", "signature"} <= set(fields)
            base = link.split("/console/", 1)[0]
            entered = client.post(
                base + "/console/sign-in",
                data=fields,
                headers={"cookie": "; ".join(f"{k}={v}" for k, v in console.items())},
            )
            assert entered.status_code == 303, entered.text
            _cookies(entered, console)
            ledger = client.get(
                base + "/console/ledger?case_ref=AT-2026-DEMO-0001",
                headers={"cookie": "; ".join(f"{k}={v}" for k, v in console.items())},
            )
            assert ledger.status_code == 200, ledger.text
            rows = re.findall(r'data-field="case_ref" data-value="AT-2026-DEMO-0001"', ledger.text)
            assert len(rows) >= 10, "the case's entries are listed"  # a consent, 10 messages…
            assert "trm-broker console login --key" in text
            assert "--broker-key " in text

        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, rest
        assert "All processes stopped, files removed." in rest
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "sign-in", timeout=5)
