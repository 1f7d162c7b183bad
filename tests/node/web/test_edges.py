"""The web app's edges: an address under /web that is no page answers a page in words (404,
with a way back), in the visitor's language; the JSON API's paths keep problem+json."""

from __future__ import annotations

import httpx

from tests.node.web.browser import Browser
from tests.security.node_access_world import N_CW, NodeWorld


async def test_unknown_web_addresses_are_pages_and_api_paths_stay_problem_json(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    visitor = Browser(client)
    for path in ("/web/no/such/page", "/web/static/none.css", "/web/cases/A/B/C"):
        page = await visitor.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert "<h1>Page not found</h1>" in page.text
        assert '<a href="/web/">Go to my cases</a>' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
    # A method the page does not take: a page too.
    wrong = await visitor.post("/web/", {})
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("text/html")
    assert "allow" in wrong.headers
    # In French for a French browser, signed in or not.
    french = Browser(client, language="fr")
    assert "<h1>Page introuvable</h1>" in (await french.get("/web/nothing")).text
    await french.sign_in(N_CW)
    signed_in = await french.get("/web/nothing")
    assert "<h1>Page introuvable</h1>" in signed_in.text
    # A case of no one's, refused by the page itself: the same page.
    refused = await french.get("/web/cases/not%20a%20case")
    assert refused.status_code == 404
    assert "<h1>Page introuvable</h1>" in refused.text

    # The JSON API keeps answering problem+json.
    for path in ("/no/such/path", "/cases/AT-1/nothing"):
        api = await node_world.node.get(path, headers=node_world.auth(N_CW))
        assert api.status_code == 404, path
        assert api.headers["content-type"] == "application/problem+json"
        assert api.json()["type"] == "urn:trm-broker:problem:not-found"
    invalid = await node_world.node.get("/audit?limit=nope", headers=node_world.auth(N_CW))
    assert invalid.headers["content-type"] == "application/problem+json"
