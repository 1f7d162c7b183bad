"""`trm-broker db`: the broker's database schema."""

from __future__ import annotations

from typing import Annotated

import typer

from trm_broker.settings_explained import settings_or_exit

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations (Alembic) to TRM_DATABASE_URL."""
    from trm_broker.store.migrate import upgrade

    upgrade(settings_or_exit().database_url, revision)
    typer.echo(f"database schema upgraded to {revision}")
