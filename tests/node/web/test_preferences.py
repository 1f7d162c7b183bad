"""A user's language and time zone (issue 19): times are in the browser's zone read at
sign-in until the user chooses one on the settings page; the choice is kept with the user
(``node_users``) and follows them to another browser; every page names the zone. The forms
generated from the payload schemas speak the user's language too."""

from __future__ import annotations

from html import unescape

import httpx

from tests.node.harness import rows
from tests.node.web.browser import PASSWORD, Browser, csrf_token
from tests.security.node_access_world import AT, N_CW, NAPTIP, NodeWorld
from trm_broker.domain.messages import MessageType
from trm_broker.node.store import ReceivedMessage
from trm_broker.node.users import NodeUser
from trm_broker.node.web import forms, i18n


async def sign_in_from(browser: Browser, user: str, time_zone: str) -> None:
    """Signs in as a browser with JavaScript does: its time zone in the form."""
    form = await browser.get("/web/sign-in")
    signed_in = await browser.post(
        "/web/sign-in",
        {
            "csrf_token": csrf_token(form.text),
            "user": user,
            "password": PASSWORD,
            "time_zone": time_zone,
        },
    )
    assert signed_in.status_code == 303, signed_in.text


async def test_times_are_in_the_browsers_zone_until_the_user_chooses_one(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    message_id = min(node_world.received[NAPTIP.participant])
    received = next(
        r for r in await rows(node_world.database_url, ReceivedMessage) if r["id"] == message_id
    )
    message_url = f"/web/messages/{message_id}"

    # Signed in from a browser in Lagos: the times in Lagos's zone, the zone named.
    lagos = Browser(client)
    await sign_in_from(lagos, N_CW, "Africa/Lagos")
    page = unescape((await lagos.get(message_url)).text)
    assert i18n.DateFormat("en", "Africa/Lagos")(received["received_at"]) in page
    assert "Dates and times are shown in Africa/Lagos (GMT+01:00)." in page

    # The settings page: the user chooses French and La Paz (UTC-4 all year).
    settings = await lagos.get("/web/settings")
    assert settings.status_code == 200
    assert '<option value="America/La_Paz">America/La_Paz</option>' in settings.text
    saved = await lagos.post(
        "/web/settings",
        {
            "csrf_token": csrf_token(settings.text),
            "language": "fr",
            "time_zone": "America/La_Paz",
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/web/settings?saved=1"
    shown = unescape((await lagos.get(saved.headers["location"])).text)
    assert "Vos réglages sont enregistrés." in shown
    assert '<option value="America/La_Paz" selected>' in shown
    stored = next(r for r in await rows(node_world.database_url, NodeUser) if r["name"] == N_CW)
    assert (stored["language"], stored["time_zone"]) == ("fr", "America/La_Paz")

    page = unescape((await lagos.get(message_url)).text)
    assert i18n.DateFormat("fr", "America/La_Paz")(received["received_at"]) in page
    assert "selon le fuseau America/La_Paz (UTC-04:00)" in page

    # Another browser, in Tokyo and in English: the user's choices follow them.
    tokyo = Browser(client, language="en")
    await sign_in_from(tokyo, N_CW, "Asia/Tokyo")
    page = unescape((await tokyo.get(message_url)).text)
    assert '<html lang="fr">' in page
    assert i18n.DateFormat("fr", "America/La_Paz")(received["received_at"]) in page

    # Back to "the browser's zone": Tokyo's, as it said at sign-in.
    settings = await tokyo.get("/web/settings")
    await tokyo.post(
        "/web/settings",
        {"csrf_token": csrf_token(settings.text), "language": "fr", "time_zone": ""},
    )
    page = unescape((await tokyo.get(message_url)).text)
    assert i18n.DateFormat("fr", "Asia/Tokyo")(received["received_at"]) in page


async def test_a_zone_or_language_not_in_the_list_is_refused_on_its_field(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    _node_world, client = world
    browser = Browser(client)
    await browser.sign_in(N_CW)
    settings = await browser.get("/web/settings")
    refused = await browser.post(
        "/web/settings",
        {"csrf_token": csrf_token(settings.text), "language": "xx", "time_zone": "Mars/Olympus"},
    )
    assert refused.status_code == 400
    assert "Choose a language from the list." in refused.text
    assert "Choose a time zone from the list." in refused.text
    assert 'id="field-time_zone" name="time_zone"' in refused.text
    assert 'aria-invalid="true"' in refused.text
    # And without the session's CSRF token: refused, nothing stored.
    forged = await browser.post("/web/settings", {"language": "fr", "time_zone": "UTC"})
    assert forged.status_code == 403


async def test_the_step_form_speaks_french_to_a_french_case_worker(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client, language="fr")
    await worker.sign_in(N_CW)
    url = f"/web/cases/{node_world.case['B']}/send/referral_response?recipient={AT.participant}"
    form = unescape((await worker.get(url)).text)
    french = i18n.translations("fr").gettext
    for spec in forms.walk(forms.form_spec(MessageType.REFERRAL_RESPONSE, french, "fr")):
        assert spec.label in form
    assert "Si le dossier est pris en charge." in form  # the schema's help text
    # An error, in French, on its field.
    sent = await worker.post(url, {"csrf_token": csrf_token(form), "form_id": "0" * 32})
    assert sent.status_code == 400
    assert "Remplissez ce champ." in unescape(sent.text)
