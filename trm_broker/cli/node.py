"""`trm-broker node`: the reference NRM node."""

from __future__ import annotations

from typing import Annotated

import typer

from trm_broker.cli.node_users import users_app
from trm_broker.cli.serving import public_url_for
from trm_broker.settings_explained import settings_or_exit
from trm_broker.web import server

node_app = typer.Typer(help="The reference NRM node.", no_args_is_help=True)
node_app.add_typer(users_app, name="users")


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
    public_url = public_url_for(settings.node_public_url, bind, bind_port, "TRM_NODE_PUBLIC_URL")
    server.run(
        create_node_app(settings.model_copy(update={"node_public_url": public_url})),
        bind,
        bind_port,
        settings,
    )
