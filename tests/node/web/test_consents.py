"""Registering a consent from the browser (issue 19): a focal point's case worker uploads the
signed form and chooses its scope in words; the node keeps the file, the consent reaches the
broker with the file's SHA-256 as ``form_digest``, and the new case offers its referral. A
file too large or of another type is refused in words, on its field; a form without its CSRF
token is refused; nobody of another organisation may download the kept form."""

from __future__ import annotations

import base64
import hashlib
import re
from html import unescape

import httpx

from tests.node.harness import rows
from tests.node.web.browser import Browser, csrf_token
from tests.security.node_access_world import AT, N_CW, N_RO, N_SUP, NAPTIP, S_CW, S_SUP, NodeWorld
from tests.security.world import consent_body
from tests.support import envelope
from trm_broker.domain.messages import MessageType
from trm_broker.node.consent_forms import MAX_BYTES, ConsentForm

#: A small PDF, as a scanner writes one (the node tells a PDF by its first bytes).
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def scope_form(token: str, case_ref: str) -> dict[str, str | list[str]]:
    return {
        "csrf_token": token,
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": ["referral", "referral_response", "risk_assessment"],
        "recipients": [AT.participant, NAPTIP.participant],
        "data_categories": ["identity", "health"],
        "valid_from": "2026-01-01",
        "valid_until": "2027-03-06",
    }


def expected_digest(data: bytes) -> str:
    raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "sha-256:" + raw


async def new_case(worker: Browser, case_ref: str, data: bytes = PDF) -> httpx.Response:
    page = await worker.get("/web/new-case")
    assert page.status_code == 200, page.text
    return await worker.upload(
        "/web/new-case",
        scope_form(csrf_token(page.text), case_ref),
        {"form": ("Jane Doe consent.pdf", data, "application/pdf")},
    )


async def test_a_case_worker_opens_a_case_by_uploading_the_signed_consent(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    dashboard = await worker.get("/web/")
    assert 'href="/web/new-case"' in dashboard.text
    case_ref = "NG-2026-WEB01"

    uploaded = await new_case(worker, case_ref)
    assert uploaded.status_code == 303, uploaded.text
    confirm_url = uploaded.headers["location"]
    assert re.fullmatch(r"/web/consent-forms/[0-9a-f]{32}", confirm_url)
    # Kept at the node, with its digest, not registered yet.
    kept = await rows(node_world.database_url, ConsentForm)
    assert len(kept) == 1
    assert kept[0]["content"] == PDF
    assert kept[0]["digest"] == expected_digest(PDF)
    assert kept[0]["registered_at"] is None
    assert "Jane" not in str(kept[0])  # the browser's file name is not kept

    confirm = await worker.get(confirm_url)
    assert confirm.status_code == 200
    words = unescape(re.sub(r"\s+", " ", confirm.text))
    scope = (
        f"{AT.participant} (Austria) and {NAPTIP.participant} (Nigeria) may receive: referral,"
        " answer to the referral and risk assessment; data: identity and health;"
        " until 6 March 2027; given by the person themselves."
    )
    assert scope in words
    assert expected_digest(PDF) in confirm.text

    registered = await worker.post(confirm_url, {"csrf_token": csrf_token(confirm.text)})
    assert registered.status_code == 303, registered.text
    assert registered.headers["location"] == f"/web/cases/{case_ref}?consent=registered"
    # At the broker, with the digest of the very file kept here.
    consent_id = kept[0]["consent_id"]
    at_broker = await node_world.broker.call("GET", f"/v1/consents/{consent_id}", NAPTIP)
    assert at_broker.status_code == 200, at_broker.text
    assert at_broker.json()["form_digest"] == expected_digest(PDF)
    assert at_broker.json()["case_ref"] == case_ref
    assert at_broker.json()["registered_by"] == NAPTIP.participant

    case = await worker.get(registered.headers["location"])
    assert case.status_code == 200, case.text
    shown = unescape(re.sub(r"\s+", " ", case.text))
    assert "The consent is registered at the exchange." in shown
    assert scope in shown
    # The new case's next step: the referral, to Austria's focal point.
    assert f"/web/cases/{case_ref}/send/referral?recipient={AT.participant}" in shown
    form_id = kept[0]["id"]
    assert f"/web/consent-forms/{form_id}/file" in case.text
    assert case_ref in (await worker.get("/web/")).text

    download = await worker.get(f"/web/consent-forms/{form_id}/file")
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert "Jane" not in download.headers["content-disposition"]
    # The confirmation again: registered, so to the case; nothing is registered twice.
    again = await worker.post(confirm_url, {"csrf_token": csrf_token(confirm.text)})
    assert again.status_code == 303
    assert (await rows(node_world.database_url, ConsentForm))[0]["registered_at"] is not None


async def test_the_referral_of_the_new_case_is_sent_under_its_consent(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    _, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    case_ref = "NG-2026-WEB02"
    confirm_url = (await new_case(worker, case_ref)).headers["location"]
    confirm = await worker.get(confirm_url)
    await worker.post(confirm_url, {"csrf_token": csrf_token(confirm.text)})
    url = f"/web/cases/{case_ref}/send/referral?recipient={AT.participant}"
    form = await worker.get(url)
    assert form.status_code == 200, form.text
    assert 'name="destination_country"' in form.text
    form_id = re.search(r'name="form_id" value="([0-9a-f]{32})"', form.text)
    assert form_id
    sent = await worker.post(
        url,
        {
            "csrf_token": csrf_token(form.text),
            "form_id": form_id.group(1),
            "destination_country": "AT",
            "is_child": "no",
        },
    )
    assert sent.status_code == 303, sent.text
    shown = await worker.get(sent.headers["location"])
    assert "Referral: sent. The exchange has receipted it." in shown.text


async def test_a_file_too_large_or_not_a_form_is_refused_in_words_on_its_field(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker = Browser(client)
    await worker.sign_in(N_CW)
    too_large = await new_case(worker, "NG-2026-BIG", PDF + b"0" * MAX_BYTES)
    assert too_large.status_code == 400
    assert "The file is too large: at most 5 MB." in too_large.text
    assert 'id="form-error"' in too_large.text
    assert 'aria-describedby="form-help form-error" aria-invalid="true"' in too_large.text
    assert 'href="#form"' in too_large.text  # the summary links to the field
    assert 'value="NG-2026-BIG"' in too_large.text  # what was typed is kept
    for data in (b"MZ\x90\x00 not a form", b"<html><script>alert(1)</script>"):
        wrong = await new_case(worker, "NG-2026-WRONG", data)
        assert wrong.status_code == 400
        assert "This file is not a PDF, PNG or JPEG image." in wrong.text
    # Fields left out: each said on its own.
    page = await worker.get("/web/new-case")
    empty = await worker.upload(
        "/web/new-case",
        {"csrf_token": csrf_token(page.text), "case_ref": "no spaces allowed"},
        {"form": ("f.pdf", PDF, "application/pdf")},
    )
    assert empty.status_code == 400
    for field in ("case_ref", "given_by", "purposes", "recipients", "data_categories"):
        assert f'id="{field}-error"' in empty.text, field
    assert "Choose at least one." in empty.text
    assert not await rows(node_world.database_url, ConsentForm)


async def test_a_consent_the_exchange_refuses_is_said_in_the_users_words(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    """A case that another focal point starts between the upload and its confirmation: the
    broker refuses the consent, and the page says so in French, not in the broker's English
    sentence."""
    node_world, client = world
    theirs = "AT-2026-THEIRS"
    worker = Browser(client, language="fr")
    await worker.sign_in(N_CW)
    confirm_url = (await new_case(worker, theirs)).headers["location"]
    confirm = await worker.get(confirm_url)
    # Meanwhile Austria registers its own consent for that reference, and refers the case.
    body = consent_body("cns-theirs-1", theirs, [NAPTIP.participant])
    made = await node_world.broker.call("POST", "/v1/consents", AT, json=body)
    assert made.status_code == 201, made.text
    referral = envelope(
        AT,
        NAPTIP,
        MessageType.REFERRAL,
        None,
        case_ref=theirs,
        consent_ref="cns-theirs-1",
        payload={"destination_country": "NG"},
    )
    assert (await node_world.broker.submit(referral)).status_code == 202

    refused = await worker.post(confirm_url, {"csrf_token": csrf_token(confirm.text)})
    assert refused.status_code == 403, refused.text
    shown = unescape(refused.text)
    assert "Le consentement n'a pas été enregistré" in shown
    assert (
        '<p lang="fr">Un autre point focal envoie ce dossier : lui seul enregistre les'
        " consentements du dossier." in shown
    )
    assert "is sent by another focal point" not in shown
    assert (await rows(node_world.database_url, ConsentForm))[0]["registered_at"] is None


async def test_csrf_another_organisation_and_who_may_register(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    worker, shelter, shelter_sup, reader, supervisor = (Browser(client) for _ in range(5))
    await worker.sign_in(N_CW)
    page = await worker.get("/web/new-case")
    for token in (None, "not-the-token"):
        fields = scope_form(token or "", "NG-2026-CSRF")
        if token is None:
            del fields["csrf_token"]
        refused = await worker.upload(
            "/web/new-case", fields, {"form": ("f.pdf", PDF, "application/pdf")}
        )
        assert refused.status_code == 403
        assert "This form was not accepted" in refused.text
    assert not await rows(node_world.database_url, ConsentForm)
    assert csrf_token(page.text)

    confirm_url = (await new_case(worker, "NG-2026-MINE")).headers["location"]
    confirm = await worker.get(confirm_url)
    no_token = await worker.post(confirm_url, {})
    assert no_token.status_code == 403
    await worker.post(confirm_url, {"csrf_token": csrf_token(confirm.text)})
    form_id = confirm_url.rsplit("/", 1)[-1]
    file_url = f"/web/consent-forms/{form_id}/file"

    # The shelter, on the same node: the form, its page and the case do not exist for it.
    for browser, user in ((shelter, S_CW), (shelter_sup, S_SUP)):
        await browser.sign_in(user)
        for path in (file_url, confirm_url, "/web/cases/NG-2026-MINE/consent"):
            answer = await browser.get(path)
            # A supervisor confirms no consent (403) wherever it is; the file is not there.
            assert answer.status_code in ((404,) if path == file_url else (403, 404))
            assert PDF not in answer.content
    shelter_token = csrf_token((await shelter.get("/web/")).text)
    assert (await shelter.post(confirm_url, {"csrf_token": shelter_token})).status_code == 404
    # A receiving organisation opens no case; a read-only user neither, nor downloads.
    assert 'href="/web/new-case"' not in (await shelter.get("/web/")).text
    await reader.sign_in(N_RO)
    assert (await reader.get("/web/new-case")).status_code == 403
    assert (await reader.get(file_url)).status_code == 403
    assert 'href="/web/new-case"' not in (await reader.get("/web/")).text
    # NAPTIP's supervisor reads the kept form.
    await supervisor.sign_in(N_SUP)
    assert (await supervisor.get(file_url)).content == PDF
