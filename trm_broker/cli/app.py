"""The `trm-broker` command."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trm_broker.cli.deliveries import deliveries_app
from trm_broker.cli.ledger import ledger_app
from trm_broker.cli.registry import operator_app, participants_app
from trm_broker.settings import Settings
from trm_broker.settings_explained import settings_or_exit
from trm_broker.web import server

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(
    help="trm-broker: signed, sealed, consent-gated case transfers.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="Participant key sets.", no_args_is_help=True)
node_app = typer.Typer(help="The reference NRM node.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
contract_app = typer.Typer(help="The published wire contract.", no_args_is_help=True)
docs_app = typer.Typer(help="The reference pages generated from the code.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(operator_app, name="operator")
app.add_typer(participants_app, name="participants")
app.add_typer(ledger_app, name="ledger")
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
    from trm_broker.store.database import create_engine
    from trm_broker.store.migrate import SchemaNotCurrentError, check_schema_current

    settings = settings_or_exit()
    configure_logging(settings.log_level)

    async def _check() -> None:
        engine = create_engine(settings.database_url)
        try:
            await check_schema_current(engine)
        finally:
            await engine.dispose()

    bind, bind_port = host or settings.host, port or settings.port
    public_url = _public_url(settings.public_url, bind, bind_port, "TRM_PUBLIC_URL")
    try:
        asyncio.run(_check())
    except SchemaNotCurrentError as exc:
        typer.echo(f"trm-broker: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    server.run(
        _broker_app(settings.model_copy(update={"public_url": public_url})),
        bind,
        bind_port,
        settings,
    )


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


def _public_url(configured: str | None, bind: str, port: int, setting: str) -> str:
    """The base URL signed requests must name (their @target-uri). On a loopback address it
    defaults to that address; elsewhere it must be set, or a request signed for another
    deployment's host name could be accepted here."""
    if configured:
        return configured
    try:
        loopback = ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = bind == "localhost"
    if not loopback:
        typer.echo(
            f"trm-broker: refusing to start: set {setting} to the base URL callers use "
            "(e.g. https://broker.example.org); signed requests are bound to it.",
            err=True,
        )
        raise typer.Exit(2)
    return f"http://{bind}:{port}"


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations (Alembic) to TRM_DATABASE_URL."""
    from trm_broker.store.migrate import upgrade

    upgrade(settings_or_exit().database_url, revision)
    typer.echo(f"database schema upgraded to {revision}")


class EncryptionAlgChoice(StrEnum):
    """The encryption key algorithms of `keys new` (crypto.keys.EncryptionAlg)."""

    X25519 = "X25519"
    MLKEM768_X25519 = "MLKEM768-X25519"


@keys_app.command("new")
def keys_new(
    participant: Annotated[str, typer.Argument(help="Participant id, e.g. ng.naptip.")],
    out: Annotated[Path, typer.Option(help="Key file to create (mode 0600, never overwritten).")],
    encryption_alg: Annotated[
        EncryptionAlgChoice,
        typer.Option(
            help="Encryption key: X25519, or the ML-KEM-768+X25519 post-quantum hybrid.",
        ),
    ] = EncryptionAlgChoice.X25519,
) -> None:
    """Create a participant's signing and encryption keys; print the public half to register."""
    from trm_broker.crypto.keys import KeySet

    if out.exists():
        typer.echo(f"{out} exists; refusing to overwrite a key file.", err=True)
        raise typer.Exit(1)
    keyset = KeySet.generate(participant, encryption_alg.value)
    keyset.write(out)
    json.dump({"participant": participant, "keys": keyset.public()}, sys.stdout, indent=2)
    sys.stdout.write("\n")


@keys_app.command("new-broker")
def keys_new_broker(
    key_file: Annotated[
        Path | None, typer.Option(help="Where to write it; default TRM_BROKER_KEY_FILE.")
    ] = None,
) -> None:
    """Create the broker's own key file (mode 0600) before its first start, e.g. to store it
    as a secret; refuses to overwrite one. Prints its key id and ledger verifier key."""
    from trm_broker.crypto import broker_keys
    from trm_broker.crypto.keys import load_ed25519_public
    from trm_broker.ledger.note import NoteVerifier

    settings = settings_or_exit()
    path = key_file or settings.broker_key_file
    if path.exists():
        typer.echo(f"trm-broker: {path} exists; `keys rotate-broker` replaces its key", err=True)
        raise typer.Exit(2)
    keys = broker_keys.load(path, create=True)
    public = load_ed25519_public(keys.signing.public_b64)
    typer.echo(f"wrote {path}: broker key {keys.signing.kid}")
    typer.echo(f"ledger verifier key: {NoteVerifier.of(settings.ledger_origin, public).vkey()}")


@keys_app.command("rotate-broker")
def keys_rotate_broker(
    key_file: Annotated[
        Path | None, typer.Option(help="The broker's key file; default TRM_BROKER_KEY_FILE.")
    ] = None,
) -> None:
    """Give the broker a new signing key. The old key's public half stays in the file as
    retired, so its receipts and checkpoints stay verifiable; restart every broker and
    worker that reads the file (see docs/operations.md, "Rotating the broker's key")."""
    from datetime import UTC, datetime

    from trm_broker.crypto import broker_keys
    from trm_broker.crypto.keys import load_ed25519_public
    from trm_broker.ledger.note import NoteVerifier

    settings = settings_or_exit()
    path = key_file or settings.broker_key_file
    if not path.exists():
        typer.echo(f"trm-broker: {path} does not exist (TRM_BROKER_KEY_FILE)", err=True)
        raise typer.Exit(2)
    before, after = broker_keys.rotate(path, datetime.now(UTC))
    origin = settings.ledger_origin
    typer.echo(f"retired {before.signing.kid}; the broker now signs with {after.signing.kid}")
    for label, keys in (("new", after), ("old", before)):
        public = load_ed25519_public(keys.signing.public_b64)
        typer.echo(f"{label} ledger verifier key: {NoteVerifier.of(origin, public).vkey()}")


@node_app.command("serve")
def node_serve(
    host: Annotated[str | None, typer.Option(help="Overrides TRM_NODE_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Overrides TRM_NODE_PORT.")
    ] = None,
) -> None:
    """Run the reference NRM node (inbox and local case-worker API)."""
    from trm_broker.logs import configure_logging
    from trm_broker.node.app import create_node_app, load_keyring

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    load_keyring(settings)  # fail now, with a clear message, if the key files are missing
    bind, bind_port = host or settings.node_host, port or settings.node_port
    public_url = _public_url(settings.node_public_url, bind, bind_port, "TRM_NODE_PUBLIC_URL")
    server.run(
        create_node_app(settings.model_copy(update={"node_public_url": public_url})),
        bind,
        bind_port,
        settings,
    )


@contract_app.command("write")
def contract_write() -> None:
    """Regenerate contracts/ (JSON Schemas and OpenAPI) from the code."""
    from trm_broker.contract.schemas import write

    for path in write():
        typer.echo(f"wrote {path}")


@docs_app.command("write")
def docs_write() -> None:
    """Regenerate docs/configuration.md and docs/metrics.md from settings and metrics."""
    from trm_broker.contract.reference_docs import write

    for path in write():
        typer.echo(f"wrote {path}")


@contract_app.command("vectors")
def contract_vectors(
    out: Annotated[Path, typer.Option(help="Where to write the vectors.")] = Path(
        "contracts/vectors/vectors.json"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Generate a fresh set of test vectors (keys are new each time; the committed set is
    kept unless --force)."""
    from trm_broker.contract.vectors import write

    if out.exists() and not force:
        typer.echo(f"{out} exists; pass --force to replace the published vectors.", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {write(out)}")


@app.command()
def demo() -> None:
    """Start a broker and two nodes, send a referral end to end, print what happened."""
    from trm_broker.dev import demo as demo_module

    try:
        demo_module.run(typer.echo)
    except Exception as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc


if __name__ == "__main__":
    app()
