"""`trm-broker deliveries dead-letters|requeue`: the operator's view of what was not
delivered within the maximum age, and putting it back in the queue (signed requests)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from trm_broker.cli.signed_call import BrokerUrl, OperatorKey, print_json, signed_call

deliveries_app = typer.Typer(
    help="Dead letters (operator, signed with the operator key).", no_args_is_help=True
)


async def _all_dead_letters(
    operator_key: Any, broker_url: str | None, recipient: str | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"status": "dead_lettered", "limit": 500}
        if after is not None:
            params["after"] = after
        if recipient:
            params["recipient"] = recipient
        page = await signed_call("GET", "/v1/deliveries", operator_key, broker_url, params=params)
        rows.extend(page["dead_letters"])
        after = page["next"]
        if after is None:
            return rows


@deliveries_app.command("dead-letters")
def dead_letters(
    recipient: Annotated[str | None, typer.Option(help="Only those to this participant.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    operator_key: OperatorKey = None,
    broker_url: BrokerUrl = None,
) -> None:
    """List dead letters, oldest first (metadata only)."""
    rows = asyncio.run(_all_dead_letters(operator_key, broker_url, recipient))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        typer.echo(
            f"{row['message_id']}  {row['type']}  {row['sender']} -> {row['recipient']}  "
            f"attempts={row['attempts']}  last_error={row['last_error']}"
        )
    typer.echo(f"{len(rows)} dead letter(s)", err=True)


@deliveries_app.command("requeue")
def requeue(
    message_ids: Annotated[
        list[str] | None, typer.Argument(help="Message ids, in the order to re-queue them.")
    ] = None,
    recipient: Annotated[
        str | None,
        typer.Option(help="Re-queue every dead letter to this participant, oldest first."),
    ] = None,
    operator_key: OperatorKey = None,
    broker_url: BrokerUrl = None,
) -> None:
    """Put dead letters back in the queue, each with a new maximum age."""

    async def run() -> int:
        ids = list(message_ids or [])
        if recipient:
            ids += [
                r["message_id"]
                for r in await _all_dead_letters(operator_key, broker_url, recipient)
            ]
        if not ids:
            typer.echo("trm-broker: name message ids or --recipient", err=True)
            raise typer.Exit(1)
        for message_id in ids:
            await signed_call(
                "POST", f"/v1/deliveries/{message_id}/requeue", operator_key, broker_url
            )
            typer.echo(f"{message_id} re-queued")
        return len(ids)

    asyncio.run(run())
