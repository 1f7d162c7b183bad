"""`trm-broker node db`: the node's database schema (TRM_NODE_DATABASE_URL)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from trm_broker.settings_explained import settings_or_exit

node_db_app = typer.Typer(help="The node's database schema.", no_args_is_help=True)


@node_db_app.command("upgrade")
def node_db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the node's schema migrations (Alembic) to TRM_NODE_DATABASE_URL. A database
    made by a release before the node had migrations is recognised and adopted first."""
    from trm_broker.logs import configure_logging
    from trm_broker.node.migrate import UnknownNodeSchemaError, upgrade

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    try:
        now = upgrade(settings.node_database_url, revision)
    except UnknownNodeSchemaError as exc:
        typer.echo(f"trm-broker: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"node database schema upgraded to {now or revision}")


@node_db_app.command("current")
def node_db_current() -> None:
    """Print the revision the node's database is at, and this version's head."""
    from trm_broker.node.migrate import UnknownNodeSchemaError, current_state, head_revision

    settings = settings_or_exit()
    try:
        current, unversioned = asyncio.run(current_state(settings.node_database_url))
    except UnknownNodeSchemaError as exc:
        typer.echo(f"trm-broker: {exc}", err=True)
        raise typer.Exit(2) from None
    head = head_revision()
    if current is not None:
        state = "current" if current == head else "behind: run `trm-broker node db upgrade`"
        typer.echo(f"{current} ({state}; head {head})")
    elif unversioned is not None:
        typer.echo(
            f"none: unversioned, made by an earlier release at {unversioned}'s schema "
            f"(`trm-broker node db upgrade` adopts it; head {head})"
        )
    else:
        typer.echo(f"none: empty (`trm-broker node db upgrade` creates it; head {head})")
