"""Signing in to the auditors' console with a registered key (issue 20): an auditor's signed
challenge opens a session once; a focal point, an unknown visitor, a forged, reused or
stale link are refused; sessions end at sign-out and when left idle."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support import Broker, broker_settings, polling, running_broker
from trm_broker.crypto import console_challenge as challenges
from trm_broker.crypto.keys import KeySet
from trm_broker.ledger import merkle
from trm_broker.web.headers import CONTENT_SECURITY_POLICY

AUDITOR = KeySet.generate("at.rapporteur")
FOCAL_POINT = KeySet.generate("at.focal-point")
SESSION = "__Host-trm_console"
SIGN_IN = "__Host-trm_console_signin"


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        assert (await b.register(AUDITOR, "AT", kind="auditor")).status_code == 201
        registered = await b.register(FOCAL_POINT, "AT", inbox_url="https://node-at.example/inbox")
        assert registered.status_code == 201, registered.text
        yield b


def cookie(response: httpx.Response, name: str) -> str | None:
    """The value ``response`` sets for ``name`` (httpx keeps no Secure cookie over http)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header.split(";", 1)[0].split("=", 1)[1].strip('"')
    return None


def set_cookie_header(response: httpx.Response, name: str) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith(name + "="))


async def link_for(broker: Broker, keyset: KeySet) -> str:
    """What `trm-broker console login` prints: the sign-in link with the signed challenge."""
    issued = await broker.call("POST", "/console/challenges", keyset)
    assert issued.status_code == 200, issued.text
    given = issued.json()["challenge"]
    signature = challenges.answer(keyset.signing, given)
    return f"/console/sign-in?challenge={given}&key={keyset.signing.kid}&signature={signature}"


async def open_link(broker: Broker, link: str) -> httpx.Response:
    """Open the link, then press its page's sign-in button."""
    page = await broker.client.get(link)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
    token = cookie(page, SIGN_IN)
    return await broker.client.post(
        "/console/sign-in",
        data={k: html.unescape(v) for k, v in fields.items()},
        headers={"cookie": f"{SIGN_IN}={token}"},
    )


async def signed_in(broker: Broker, keyset: KeySet) -> str:
    done = await open_link(broker, await link_for(broker, keyset))
    assert done.status_code == 303, done.text
    session = cookie(done, SESSION)
    assert session
    return session


async def ledger_page(broker: Broker, session: str) -> httpx.Response:
    """The ledger page once the sequencer has integrated the registrations (it signs its
    checkpoints in the background, so the first may not hold them yet)."""
    page = None
    async for _ in polling():
        page = await broker.client.get(
            "/console/ledger", headers={"cookie": f"{SESSION}={session}"}
        )
        if 'data-entry="' in page.text:
            break
    assert page is not None
    return page


async def test_an_auditor_signs_in_with_a_signed_challenge_and_reads_the_ledger(
    broker: Broker,
) -> None:
    link = await link_for(broker, AUDITOR)
    done = await open_link(broker, link)
    assert done.status_code == 303
    assert done.headers["location"] == "/console/ledger"
    header = set_cookie_header(done, SESSION).lower()
    assert all(part in header for part in ("secure", "httponly", "samesite=strict", "path=/"))
    session = cookie(done, SESSION)
    assert session is not None

    page = await ledger_page(broker, session)
    assert page.status_code == 200
    assert "Signed in as at.rapporteur" in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["cache-control"] == "no-store"
    assert 'data-entry="' in page.text  # the registrations are entries, shown with proofs

    again = await open_link(broker, link)  # a link signs in once
    assert again.status_code == 401
    assert "not valid" in again.text
    assert cookie(again, SESSION) is None


async def test_every_entry_shown_comes_with_a_proof_that_verifies(broker: Broker) -> None:
    session = await signed_in(broker, AUDITOR)
    page = await ledger_page(broker, session)
    note = html.unescape(re.search(r'data-note="([^"]*)"', page.text, re.S)[1])  # type: ignore[index]
    lines = note.split("\n")
    size, root = int(lines[1]), base64.b64decode(lines[2])
    rows = re.findall(r'data-index="(\d+)" data-entry="([^"]*)" data-proof="([^"]*)"', page.text)
    assert rows
    for index, entry, proof in rows:
        leaf = merkle.leaf_hash(base64.b64decode(entry))
        path = [base64.b64decode(h) for h in proof.split()]
        merkle.verify_inclusion(leaf, int(index), size, path, root)


async def test_a_focal_point_gets_no_challenge_and_cannot_borrow_one(broker: Broker) -> None:
    refused = await broker.call("POST", "/console/challenges", FOCAL_POINT)
    assert refused.status_code == 403
    assert "auditors and operators" in refused.json()["detail"]

    # An auditor's challenge, answered with the focal point's key: refused.
    issued = (await broker.call("POST", "/console/challenges", AUDITOR)).json()["challenge"]
    forged = challenges.answer(FOCAL_POINT.signing, issued)
    for kid in (AUDITOR.signing.kid, FOCAL_POINT.signing.kid):
        done = await open_link(
            broker, f"/console/sign-in?challenge={issued}&key={kid}&signature={forged}"
        )
        assert done.status_code == 401
        assert cookie(done, SESSION) is None


async def test_an_unknown_visitor_is_sent_to_sign_in_and_cannot_get_a_challenge(
    broker: Broker,
) -> None:
    for path in ("/console/ledger", "/console/checkpoints", "/console/"):
        page = await broker.client.get(path)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/sign-in?next=")
    unsigned = await broker.client.post("/console/challenges")
    assert unsigned.status_code == 401
    sign_in = await broker.client.get("/console/sign-in")
    assert "trm-broker console login" in sign_in.text
    made_up = await open_link(
        broker, "/console/sign-in?challenge=made-up&key=nobody&signature=AAAA"
    )
    assert made_up.status_code == 401
    stolen = await broker.client.get(
        "/console/ledger", headers={"cookie": f"{SESSION}=not-a-session"}
    )
    assert stolen.status_code == 303


async def test_an_unknown_console_address_is_a_page_in_words_the_api_keeps_problem_json(
    broker: Broker,
) -> None:
    page = await broker.client.get("/console/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no such page." in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    api = await broker.client.get("/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


async def test_a_link_is_refused_after_two_minutes(broker: Broker) -> None:
    link = await link_for(broker, AUDITOR)
    later = datetime.now(UTC) + timedelta(minutes=2, seconds=1)
    broker.app.state.console_clock = lambda: later
    done = await open_link(broker, link)
    assert done.status_code == 401


async def test_the_sign_in_button_needs_its_own_token(broker: Broker) -> None:
    link = await link_for(broker, AUDITOR)
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    done = await broker.client.post("/console/sign-in", data={**query, "csrf_token": "guess"})
    assert done.status_code == 403
    assert cookie(done, SESSION) is None


async def test_sign_out_needs_the_session_token_and_ends_the_session(broker: Broker) -> None:
    session = await signed_in(broker, AUDITOR)
    headers = {"cookie": f"{SESSION}={session}"}
    page = await broker.client.get("/console/checkpoints", headers=headers)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]  # type: ignore[index]

    forged = await broker.client.post("/console/sign-out", data={}, headers=headers)
    assert forged.status_code == 403
    out = await broker.client.post("/console/sign-out", data={"csrf_token": token}, headers=headers)
    assert out.status_code == 303
    assert out.headers["location"] == "/console/sign-in?note=signed-out"
    after = await broker.client.get("/console/ledger", headers=headers)
    assert after.status_code == 303
    assert "note=ended" in after.headers["location"]


async def test_a_session_left_idle_ends(broker: Broker) -> None:
    session = await signed_in(broker, AUDITOR)
    later = datetime.now(UTC) + timedelta(minutes=31)
    broker.app.state.console_clock = lambda: later
    page = await broker.client.get("/console/ledger", headers={"cookie": f"{SESSION}={session}"})
    assert page.status_code == 303
    assert "note=ended" in page.headers["location"]


async def test_an_operator_signs_in_to_the_checkpoints_not_the_entries(broker: Broker) -> None:
    session = await signed_in(broker, broker.operator)
    headers = {"cookie": f"{SESSION}={session}"}
    assert (await broker.client.get("/console/ledger", headers=headers)).status_code == 403
    checkpoints = await broker.client.get("/console/checkpoints", headers=headers)
    assert checkpoints.status_code == 200
    assert "Signature valid" in checkpoints.text


async def test_the_console_speaks_french(broker: Broker) -> None:
    session = await signed_in(broker, AUDITOR)
    page = await broker.client.get(
        "/console/ledger",
        headers={"cookie": f"{SESSION}={session}", "accept-language": "fr-FR,fr;q=0.9"},
    )
    assert '<html lang="fr">' in page.text
    assert "Registre" in page.text
    assert "Se déconnecter" in page.text


async def test_the_checkpoints_page_gives_a_consistency_proof_between_two_sizes(
    broker: Broker,
) -> None:
    session = await signed_in(broker, AUDITOR)
    headers = {"cookie": f"{SESSION}={session}"}

    async def signed_sizes() -> list[int]:
        history = await broker.client.get("/console/checkpoints", headers=headers)
        found = re.findall(r'<th scope="row">(\d+)</th>', history.text)
        return sorted(int(s) for s in found if int(s) > 0)

    async for _ in polling():  # the registrations join the ledger within a second
        if await signed_sizes():
            break
    # One more entry, so that a later checkpoint extends the first.
    another = KeySet.generate("fr.rapporteur")
    assert (await broker.register(another, "FR", kind="auditor")).status_code == 201
    sizes: list[int] = []
    async for _ in polling():
        sizes = await signed_sizes()
        if len(sizes) >= 2:
            break
    assert len(sizes) >= 2, f"no second checkpoint within the wait: {sizes}"
    first, second = sizes[0], sizes[-1]
    page = await broker.client.get(
        f"/console/checkpoints?first={first}&second={second}", headers=headers
    )
    assert page.status_code == 200
    notes = [
        html.unescape(re.search(rf'data-{which}-note="([^"]*)"', page.text, re.S)[1])  # type: ignore[index]
        for which in ("first", "second")
    ]
    roots = [base64.b64decode(note.split("\n")[2]) for note in notes]
    proof = re.search(r'data-proof="([^"]*)"', page.text)[1]  # type: ignore[index]
    merkle.verify_consistency(
        first, second, roots[0], roots[1], [base64.b64decode(h) for h in proof.split()]
    )
    missing = await broker.client.get(
        f"/console/checkpoints?first={second + 1000}&second={second}", headers=headers
    )
    assert missing.status_code == 400
    assert "no checkpoint of one of these sizes" in missing.text

    # The history's table as CSV: the same sizes, each with its signed note. The sequencer
    # may sign another checkpoint meanwhile: the CSV holds every size listed before it was
    # asked for, and none that the page does not list afterwards.
    before = set(await signed_sizes())
    exported = await broker.client.get("/console/checkpoints.csv", headers=headers)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    listed = {int(r["size"]) for r in rows if int(r["size"]) > 0}
    assert before <= listed <= set(await signed_sizes())
    assert len(listed) == len([r for r in rows if int(r["size"]) > 0])
    assert all(r["server_verified"] == "true" and r["note"] for r in rows)
