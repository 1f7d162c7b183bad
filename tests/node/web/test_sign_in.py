"""Signing in to the node's web app (issue 19): server-side sessions in a `__Host-` cookie,
sign-out, wrong passwords and their limit, CSRF tokens on every form, and sessions that end
when idle and at their absolute limit."""

from __future__ import annotations

import hashlib

import httpx

from tests.node.harness import rows
from tests.node.web.browser import Browser, csrf_token
from tests.security.node_access_world import N_CW, NodeWorld
from trm_broker.node.audit import AuditEntry
from trm_broker.node.sign_in_throttle import PER_USER
from trm_broker.node.web.sessions import WebSession

SESSION = "__Host-trm_session"


async def test_a_user_signs_in_and_out_with_a_server_side_session(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    browser = Browser(client)
    signed_in = await browser.sign_in(N_CW)
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/web/"
    cookie = browser.last_set[SESSION]
    # __Host-: Secure, no Domain, Path=/; and never readable by script nor sent cross-site.
    assert cookie.attributes.get("secure") is True
    assert cookie.attributes.get("httponly") is True
    assert cookie.attributes.get("samesite") == "strict"
    assert cookie.attributes.get("path") == "/"
    assert "domain" not in cookie.attributes
    # The node keeps only the session id's SHA-256.
    stored = await rows(node_world.database_url, WebSession)
    assert [r["digest"] for r in stored] == [hashlib.sha256(cookie.value.encode()).hexdigest()]
    assert cookie.value not in repr(stored)
    assert stored[0]["user_name"] == N_CW

    dashboard = await browser.get("/web/")
    assert dashboard.status_code == 200, dashboard.text
    assert f"/web/cases/{node_world.case['A']}" in dashboard.text
    assert "naptip.cw" in dashboard.text

    signed_out = await browser.post("/web/sign-out", {"csrf_token": csrf_token(dashboard.text)})
    assert signed_out.status_code == 303
    assert SESSION not in browser.cookies
    assert await rows(node_world.database_url, WebSession) == []
    # The old cookie, replayed, opens nothing.
    replayed = await client.get("/web/", headers={"cookie": f"{SESSION}={cookie.value}"})
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/web/sign-in")


async def test_a_wrong_password_is_refused_in_words_and_counted(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    browser = Browser(client)
    for user in (N_CW, "nobody.here"):
        refused = await browser.sign_in(user, "not the password at all")
        assert refused.status_code == 401, refused.text
        assert "The user name or the password is wrong" in refused.text
        assert SESSION not in browser.cookies
    # The refused sign-in of a known user is in the audit log; nobody's is not.
    audited = [
        (r["user_name"], r["action"], r["status"])
        for r in await rows(node_world.database_url, AuditEntry)
        if r["action"] == "POST /web/sign-in"
    ]
    assert audited == [(N_CW, "POST /web/sign-in", 401)]
    # After PER_USER failures for one name, even the right password waits.
    for _ in range(PER_USER - 1):
        await browser.sign_in(N_CW, "still not the password")
    throttled = await browser.sign_in(N_CW)
    assert throttled.status_code == 429, throttled.text
    assert "Too many failed sign-ins" in throttled.text
    assert await rows(node_world.database_url, WebSession) == []


async def test_every_form_needs_its_sessions_csrf_token(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    browser = Browser(client)
    # The sign-in form's own token (login CSRF): without it, nobody is signed in.
    await browser.get("/web/sign-in")
    no_token = await browser.post("/web/sign-in", {"user": N_CW, "password": "x" * 20})
    assert no_token.status_code == 403
    assert "The sign-in form was not accepted" in no_token.text
    assert (await browser.sign_in(N_CW)).status_code == 303

    for form in ({}, {"csrf_token": "forged-token-" + "x" * 30}):
        refused = await browser.post("/web/sign-out", form)
        assert refused.status_code == 403, refused.text
        assert "This form was not accepted" in refused.text
        assert "reload the page" in refused.text
    # Another session's token is no better.
    other = Browser(client)
    await other.sign_in(N_CW)
    theirs = csrf_token((await other.get("/web/")).text)
    assert (await browser.post("/web/sign-out", {"csrf_token": theirs})).status_code == 403
    # Still signed in: the refused forms did nothing.
    assert (await browser.get("/web/")).status_code == 200
    assert len(await rows(node_world.database_url, WebSession)) == 2
