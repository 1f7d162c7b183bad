"""`trm-broker contract` and `trm-broker docs`: what is generated from the code (the wire
contract, its vectors, and the configuration and metrics pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

contract_app = typer.Typer(help="The published wire contract.", no_args_is_help=True)
docs_app = typer.Typer(help="The reference pages generated from the code.", no_args_is_help=True)


@contract_app.command("write")
def contract_write() -> None:
    """Regenerate contracts/ (JSON Schemas and OpenAPI) from the code."""
    from trm_broker.contract.schemas import write
    from trm_broker.settings_explained import settings_or_exit

    settings_or_exit()  # the OpenAPI is rendered with the settings: refuse bad ones plainly

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
