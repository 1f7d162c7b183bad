"""`trm-broker node`: the reference NRM node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from trm_broker.cli.node_database import node_db_app
from trm_broker.cli.node_users import users_app
from trm_broker.cli.serving import public_url_for
from trm_broker.settings_explained import settings_or_exit

node_app = typer.Typer(help="The reference NRM node.", no_args_is_help=True)
node_app.add_typer(users_app, name="users")
node_app.add_typer(node_db_app, name="db")


@node_app.command("serve")
def node_serve(
    host: Annotated[str | None, typer.Option(help="Overrides TRM_NODE_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Overrides TRM_NODE_PORT.")
    ] = None,
) -> None:
    """Run the reference NRM node (inbox and local case-worker API). On SQLite it upgrades
    its database at start; on PostgreSQL it refuses a schema that is behind (exit 2): run
    `trm-broker node db upgrade` first."""
    from trm_broker.logs import configure_logging
    from trm_broker.node.app import create_node_app
    from trm_broker.node.keyring import load_keyring
    from trm_broker.node.migrate import NodeSchemaNotCurrentError, UnknownNodeSchemaError
    from trm_broker.node.trust import load_trust
    from trm_broker.web import server  # the server's modules load only for the server

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    load_keyring(settings)  # fail now, with a clear message, if the key files are missing
    load_trust(settings)  # and if a pinned key is copied wrong
    bind, bind_port = host or settings.node_host, port or settings.node_port
    public_url = public_url_for(settings.node_public_url, bind, bind_port, "TRM_NODE_PUBLIC_URL")
    try:
        asyncio.run(_schema_ready(settings.node_database_url))
    except (NodeSchemaNotCurrentError, UnknownNodeSchemaError) as exc:
        typer.echo(f"trm-broker: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    server.run(
        create_node_app(settings.model_copy(update={"node_public_url": public_url})),
        bind,
        bind_port,
        settings,
    )


async def _schema_ready(database_url: str) -> None:
    """Before serving, so a refusal is one line and exit code 2, not a failed start-up."""
    from trm_broker.node.migrate import ready_schema
    from trm_broker.store.database import create_engine

    engine = create_engine(database_url)
    try:
        await ready_schema(database_url, engine)
    finally:
        await engine.dispose()


@node_app.command("pins")
def node_pins(
    broker_url: Annotated[
        str | None,
        typer.Option(
            "--broker-url",
            help="Read the keys from this broker (GET /v1/broker, GET /v1/participants); "
            "default TRM_NODE_BROKER_URL, unless key files are given.",
        ),
    ] = None,
    broker_key_file: Annotated[
        Path | None,
        typer.Option(help="Read the broker's keys from its key file (the broker's operator)."),
    ] = None,
    operator_key: Annotated[
        list[Path] | None,
        typer.Option(help="Read an operator's key from its key file (repeat for several)."),
    ] = None,
    retired: Annotated[
        bool, typer.Option("--retired", help="Pin the broker's retired keys too.")
    ] = False,
) -> None:
    """Print the TRM_NODE_BROKER_KEYS and TRM_NODE_OPERATOR_KEYS that pin a broker's and its
    operator's keys. Read from a broker, the values are what that broker serves: check each
    key id with the broker's operator out of band before pinning it (docs/node.md)."""
    from trm_broker.cli.pins import pins_from_broker, pins_from_files

    if broker_key_file is not None or operator_key:
        broker, operators = pins_from_files(broker_key_file, operator_key or [], retired=retired)
    else:
        url = broker_url or settings_or_exit().node_broker_url
        broker, operators = pins_from_broker(url, retired=retired)
        typer.echo(
            f"# read from {url}: check every key id with the broker's operator before pinning",
            err=True,
        )
    for pin in [*broker, *operators]:
        typer.echo(f"# {pin.what} {pin.kid}")
    if broker:
        typer.echo("TRM_NODE_BROKER_KEYS=" + ",".join(pin.entry for pin in broker))
    if operators:
        typer.echo("TRM_NODE_OPERATOR_KEYS=" + ",".join(pin.entry for pin in operators))
