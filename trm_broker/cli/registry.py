"""`trm-broker operator init` and `trm-broker participants add|list|rotate|revoke`.

The first operator is written straight into the broker's database (nobody can sign for it
yet); every later registry change goes through the API, signed with an operator's key.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from trm_broker.cli.signed_call import (
    BrokerUrl,
    OperatorKey,
    fail,
    operator_keys,
    print_json,
    signed_call,
)
from trm_broker.settings_explained import settings_or_exit

operator_app = typer.Typer(help="The broker's operator.", no_args_is_help=True)
participants_app = typer.Typer(
    help="The registry of participants (changes signed with an operator key).",
    no_args_is_help=True,
)


@operator_app.command("init")
def operator_init(
    participant: Annotated[
        str, typer.Option("--id", help="The operator's participant id.")
    ] = "operator",
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 country of the operator.")] = "",
    key_file: OperatorKey = None,
) -> None:
    """Create the first operator's key file and register it in TRM_DATABASE_URL.

    Refused once any operator exists: further operators are added with
    `participants add --kind operator`, signed by an existing one.
    """
    from trm_broker.api.participants.service import OperatorExists, bootstrap_operator
    from trm_broker.crypto.keys import KeySet
    from trm_broker.store.database import create_engine, session_factory
    from trm_broker.store.migrate import SchemaNotCurrentError, check_schema_current

    settings = settings_or_exit()
    path = key_file or settings.operator_key_file
    if not country:
        raise fail("give the operator's country, e.g. --country AT")
    created = not path.exists()
    keyset = KeySet.generate(participant) if created else KeySet.read(path)
    if keyset.participant != participant:
        raise fail(f"{path} holds keys of {keyset.participant}, not {participant}")

    async def _register() -> None:
        engine = create_engine(settings.database_url)
        try:
            await check_schema_current(engine)
            async with session_factory(engine)() as session:
                await bootstrap_operator(
                    session, participant, country, keyset.public(), datetime.now(UTC)
                )
                await session.commit()
        finally:
            await engine.dispose()

    if created:
        keyset.write(path)  # first, so a registered operator never lacks its key file
    try:
        asyncio.run(_register())
    except (OperatorExists, SchemaNotCurrentError, ValueError) as exc:
        if created:
            path.unlink()
        raise fail(str(exc).splitlines()[0]) from exc
    typer.echo(f"operator {participant} registered; its key is in {path} (keep it secret)")


def _read_public(source: Path) -> dict[str, Any]:
    """The output of `trm-broker keys new` (``-`` reads it from standard input)."""
    text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return {"participant": str(data["participant"]), "keys": data["keys"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise fail(f"{source} is not the output of `trm-broker keys new`") from exc


@participants_app.command("add")
def participants_add(
    public_keys: Annotated[
        Path, typer.Argument(help="Public keys printed by `trm-broker keys new` (- for stdin).")
    ],
    kind: Annotated[str, typer.Option(help="focal_point, receiving_org, auditor or operator.")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 country.")],
    inbox_url: Annotated[
        str | None, typer.Option(help="The node's inbox URL; omit for pull mode.")
    ] = None,
    operator_key: OperatorKey = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Register a participant (a registry change signed with the operator key, with the
    operator's statement of each key, which nodes that pin the operator's keys check)."""
    from trm_broker.crypto import key_statements

    public = _read_public(public_keys)
    operator = operator_keys(operator_key)
    body: dict[str, Any] = {
        "id": public["participant"],
        "kind": kind,
        "country": country,
        "keys": public["keys"],
    }
    try:
        body["statements"] = key_statements.for_key_set(
            operator.signing, public["participant"], public["keys"], datetime.now(UTC)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"{public_keys} is not the output of `trm-broker keys new`") from exc
    if inbox_url:
        body["inbox_url"] = inbox_url
    print_json(
        asyncio.run(signed_call("POST", "/v1/participants", operator_key, broker_url, json=body))
    )


@participants_app.command("list")
def participants_list(
    broker_url: BrokerUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
) -> None:
    """Print the public registry: participants and their keys."""
    import httpx  # loaded only by the commands that call out

    base = (broker_url or settings_or_exit().broker_url).rstrip("/")
    try:
        response = httpx.get(base + "/v1/participants", timeout=15)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise fail(f"cannot read the registry at {base} ({type(exc).__name__})") from exc
    data = response.json()
    if as_json:
        print_json(data)
        return
    for entry in data["participants"]:
        typer.echo(f"{entry['id']}  {entry['kind']}  {entry['country']}  {entry['delivery']}")
        for key in entry["keys"]:
            state = (
                "revoked"
                if key["revoked_at"]
                else (f"until {key['valid_until']}" if key["valid_until"] else "current")
            )
            typer.echo(f"    {key['use']} {key['alg']:<16} {key['kid']}  {state}")


@participants_app.command("rotate")
def participants_rotate(
    participant: Annotated[str, typer.Argument(help="Participant id.")],
    public_keys: Annotated[
        Path, typer.Argument(help="New public keys from `trm-broker keys new` (- for stdin).")
    ],
    use: Annotated[str, typer.Option(help="sig or enc: which key to rotate.")] = "sig",
    overlap_seconds: Annotated[int, typer.Option(help="How long the previous key stays valid.")] = 7
    * 24
    * 3600,
    operator_key: OperatorKey = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Add a participant's new signing or encryption key; the old one ends after the overlap."""
    if use not in ("sig", "enc"):
        raise fail("--use is sig or enc")
    from trm_broker.crypto import key_statements

    public = _read_public(public_keys)
    operator = operator_keys(operator_key)
    new = public["keys"]["signing" if use == "sig" else "encryption"]
    body: dict[str, Any] = {
        "use": use,
        "alg": new["alg"],
        "public": new["public"],
        "kid": new["kid"],
    }
    body["overlap_seconds"] = overlap_seconds
    try:
        body["statement"] = key_statements.sign(
            operator.signing, participant, body, datetime.now(UTC)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"{public_keys} is not the output of `trm-broker keys new`") from exc
    path = f"/v1/participants/{participant}/keys"
    print_json(asyncio.run(signed_call("POST", path, operator_key, broker_url, json=body)))


# A key id is base64url, so one in 64 starts with "-": read it as the key id, not an option.
@participants_app.command("revoke", context_settings={"ignore_unknown_options": True})
def participants_revoke(
    participant: Annotated[str, typer.Argument(help="Participant id.")],
    kid: Annotated[str, typer.Argument(help="The key id to revoke now.")],
    operator_key: OperatorKey = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Revoke a key at once (after a compromise): later signatures by it are refused."""
    path = f"/v1/participants/{participant}/keys/{kid}/revoke"
    print_json(asyncio.run(signed_call("POST", path, operator_key, broker_url)))
