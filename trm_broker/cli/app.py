"""The `trm-broker` command: the broker's own servers (`serve`, `worker`), the demo, and
every command group, each in its own module."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trm_broker.cli.console import console_app
from trm_broker.cli.contract import contract_app, docs_app
from trm_broker.cli.database import db_app
from trm_broker.cli.deliveries import deliveries_app
from trm_broker.cli.keys import keys_app
from trm_broker.cli.ledger import ledger_app
from trm_broker.cli.node import node_app
from trm_broker.cli.registry import operator_app, participants_app
from trm_broker.cli.serving import public_url_for
from trm_broker.settings import Settings
from trm_broker.settings_explained import settings_or_exit

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(
    help="trm-broker: signed, sealed, consent-gated case transfers.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(node_app, name="node")
app.add_typer(operator_app, name="operator")
app.add_typer(participants_app, name="participants")
app.add_typer(ledger_app, name="ledger")
app.add_typer(console_app, name="console")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(contract_app, name="contract")
app.add_typer(docs_app, name="docs")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides TRM_HOST.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Overrides TRM_PORT.")] = None,
) -> None:
    """Run the broker (API and delivery dispatcher)."""
    from trm_broker.logs import configure_logging
    from trm_broker.store.database import create_engine, is_sqlite
    from trm_broker.store.migrate import SchemaNotCurrentError, check_schema_current
    from trm_broker.web import server  # the servers' modules load only for the servers

    settings = settings_or_exit()
    configure_logging(settings.log_level)

    async def _check() -> None:
        engine = create_engine(settings.database_url)
        try:
            await check_schema_current(engine)
        finally:
            await engine.dispose()

    bind, bind_port = host or settings.host, port or settings.port
    public_url = public_url_for(settings.public_url, bind, bind_port, "TRM_PUBLIC_URL")
    if settings.processes > 1 and is_sqlite(settings.database_url):
        typer.echo(
            "trm-broker: TRM_PROCESSES above 1 needs PostgreSQL: SQLite has one writer, and "
            "one process serves it. Set TRM_PROCESSES=1 or TRM_DATABASE_URL to PostgreSQL.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        asyncio.run(_check())
    except SchemaNotCurrentError as exc:
        typer.echo(f"trm-broker: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    serving = settings.model_copy(update={"public_url": public_url})
    if settings.processes > 1:
        server.run_processes(
            lambda: _broker_app(serving), bind, bind_port, settings, settings.processes
        )
        return
    server.run(_broker_app(serving), bind, bind_port, settings)


@app.command()
def worker(
    host: Annotated[str | None, typer.Option(help="Overrides TRM_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Overrides TRM_WORKER_PORT.")
    ] = None,
) -> None:
    """Run a delivery worker: the dispatcher alone, beside brokers started with
    TRM_RUN_DISPATCHER=false (PostgreSQL). It answers /healthz and /readyz; SIGTERM stops
    claiming and lets the pushes in flight finish."""
    from sqlalchemy.engine import make_url

    from trm_broker.logs import configure_logging
    from trm_broker.web import server

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        typer.echo(
            "trm-broker: a worker needs PostgreSQL; with SQLite the dispatcher runs inside "
            "`trm-broker serve` (TRM_RUN_DISPATCHER=true).",
            err=True,
        )
        raise typer.Exit(2)
    if settings.broker_key is None and not settings.broker_key_file.exists():
        typer.echo(
            f"trm-broker: {settings.broker_key_file} does not exist: set TRM_BROKER_KEY_FILE "
            "(or TRM_BROKER_KEY) to the broker's key (the worker signs pushes with it).",
            err=True,
        )
        raise typer.Exit(2)
    server.run(
        _broker_app(settings, worker=True),
        host or settings.host,
        port or settings.worker_port,
        settings,
    )


def _broker_app(settings: Settings, **options: Any) -> FastAPI:
    """The broker's (or worker's) app; tracing enabled without its packages stops here."""
    from trm_broker.api.app import create_app
    from trm_broker.web.tracing import TracingUnavailable

    try:
        return create_app(settings, **options)
    except TracingUnavailable as exc:
        typer.echo(f"trm-broker: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def demo(
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Keep the broker and nodes running afterwards, and print how to sign in to"
            " the nodes' web apps; Ctrl-C stops them.",
        ),
    ] = False,
) -> None:
    """Start a broker and two nodes, send a referral end to end, print what happened."""
    from trm_broker.dev import demo as demo_module

    try:
        demo_module.run(typer.echo, serve=serve)
    except Exception as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc


if __name__ == "__main__":
    app()
