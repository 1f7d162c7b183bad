"""What the broker's and the node's servers share at start."""

from __future__ import annotations

import ipaddress

import typer


def public_url_for(configured: str | None, bind: str, port: int, setting: str) -> str:
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
