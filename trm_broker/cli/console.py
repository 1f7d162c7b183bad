"""`trm-broker console login`: the auditor's one-time sign-in link to the console (issue 20).

The auditor's key never leaves their computer: the command asks the broker for a challenge
in a request signed with the key (RFC 9421), signs the challenge, and prints a link that
carries the answer. Opening the link within two minutes signs the browser in, once.

With ``--broker-key`` (the ledger's verifier key, obtained out of band, as for ``ledger
verify``), the link also carries that key in its fragment (``#pin=…``), which the browser
never sends to a server: the page keeps it for the tab and checks each checkpoint against
it, not against the key the broker serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

import typer

from trm_broker.cli.ledger import read_vkeys
from trm_broker.cli.signed_call import fail

console_app = typer.Typer(
    help="The auditors' console at the broker's /console.", no_args_is_help=True
)


@console_app.command("login")
def login(
    key: Annotated[Path, typer.Option(help="Your auditor (or operator) key file.")],
    broker: Annotated[
        str | None, typer.Option(help="The broker's base URL; default TRM_BROKER_URL.")
    ] = None,
    broker_key: Annotated[
        list[str] | None,
        typer.Option(
            help="The ledger's verifier key, obtained out of band (as for `ledger verify`), "
            "or a file holding it; repeat it for retired keys. The page then checks "
            "checkpoints with it, not with the key the broker serves."
        ),
    ] = None,
) -> None:
    """Print a one-time link that signs your browser in to the console with your key."""
    import httpx  # loaded only by the commands that call out

    from trm_broker.crypto.console_challenge import answer
    from trm_broker.crypto.keys import KeySet
    from trm_broker.ledger.note import NoteError, NoteVerifier
    from trm_broker.settings_explained import settings_or_exit
    from trm_broker.web.signed_requests import SignedRequests

    try:
        keys = KeySet.read(key)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"cannot read the key file {key}") from exc
    pinned = read_vkeys(broker_key or [])
    for vkey in pinned:
        try:
            NoteVerifier.from_vkey(vkey)
        except (NoteError, ValueError) as exc:
            raise fail(f"not a ledger verifier key: {vkey}") from exc
    base = (broker or settings_or_exit().broker_url).rstrip("/")
    try:
        response = httpx.post(
            base + "/console/challenges",
            auth=SignedRequests(keys.signing),
            timeout=15,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise fail(f"the broker at {base} is unreachable ({type(exc).__name__})") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise fail(f"the broker refused ({response.status_code}): {detail}")
    issued = response.json()
    query = urlencode(
        {
            "challenge": issued["challenge"],
            "key": keys.signing.kid,
            "signature": answer(keys.signing, issued["challenge"]),
        }
    )
    # The fragment stays in the browser (RFC 3986 §3.5): the pinned keys reach the page's
    # script, never the server.
    pin = "#pin=" + quote(" ".join(pinned), safe="") if pinned else ""
    typer.echo(f"{base}{issued['sign_in_path']}?{query}{pin}")
    typer.echo(
        f"Open this link in your browser before {issued['expires_at']}; it signs in once.",
        err=True,
    )
