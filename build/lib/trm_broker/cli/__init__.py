"""The `trm-broker` command: the Typer app (:mod:`.app`) and one module per command group,
with the signed-call helper they share (:mod:`.signed_call`)."""

from trm_broker.cli.app import app

__all__ = ["app"]
