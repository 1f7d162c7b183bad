"""What the command groups that talk to a running broker share: the operator key and broker
URL options, one signed call (RFC 9421, the operator's key) that turns every failure into a
one-line message, and JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trm_broker.settings_explained import settings_or_exit

if TYPE_CHECKING:
    from trm_broker.crypto.keys import KeySet

OperatorKey = Annotated[
    Path | None,
    typer.Option("--operator-key", help="Operator key file; default TRM_OPERATOR_KEY_FILE."),
]
BrokerUrl = Annotated[
    str | None, typer.Option("--broker-url", help="Broker base URL; default TRM_BROKER_URL.")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"trm-broker: {message}", err=True)
    return typer.Exit(code)


def operator_keys(operator_key: Path | None) -> KeySet:
    """The operator's key set: ``--operator-key``, or TRM_OPERATOR_KEY_FILE."""
    from trm_broker.crypto.keys import KeySet

    key_path = operator_key or settings_or_exit().operator_key_file
    try:
        return KeySet.read(key_path)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the operator key file {key_path}") from exc


async def signed_call(
    method: str, path: str, operator_key: Path | None, broker_url: str | None, **kwargs: Any
) -> Any:
    import httpx  # loaded only by the commands that call out

    from trm_broker.web.signed_requests import SignedRequests

    settings = settings_or_exit()
    operator = operator_keys(operator_key)
    base = (broker_url or settings.broker_url).rstrip("/")
    async with httpx.AsyncClient(timeout=15, follow_redirects=False) as http:
        try:
            response = await http.request(
                method, base + path, auth=SignedRequests(operator.signing), **kwargs
            )
        except httpx.HTTPError as exc:
            raise fail(f"the broker at {base} is unreachable ({type(exc).__name__})") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise fail(f"the broker refused ({response.status_code}): {detail}")
    return response.json()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
