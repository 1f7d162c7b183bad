"""`trm-broker ledger verify` and `ledger check-evidence`: the auditor's offline check of the
broker's transfer ledger over HTTP. The checks themselves are :mod:`trm_broker.ledger.audit`,
the reading :mod:`trm_broker.cli.ledger_reader`; this module reports what they found."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from trm_broker.ledger.audit import Evidence

ledger_app = typer.Typer(help="The verifiable transfer ledger.", no_args_is_help=True)


def read_vkeys(broker_key: list[str]) -> list[str]:
    return [Path(k).read_text().strip() if Path(k).is_file() else k for k in broker_key]


BrokerKeys = Annotated[
    list[str],
    typer.Option(
        help="The ledger's signed-note verifier key (`ledger.verifier_key` of "
        "GET /v1/broker, obtained out of band), or a file holding it. Repeat it for the "
        "keys the broker retired (`ledger.retired_verifier_keys`)."
    ),
]


@ledger_app.command("verify")
def verify_command(
    url: Annotated[str, typer.Option(help="The broker's base URL.")],
    broker_key: BrokerKeys,
    key: Annotated[
        Path | None, typer.Option(help="Your auditor key file (reading entries is signed).")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Keeps the verified checkpoint and leaf hashes between runs."),
    ] = None,
    evidence: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the evidence when the broker signed two histories that "
            "cannot both be true (default: beside --state, <state>.evidence-<time>.json)."
        ),
    ] = None,
) -> None:
    """Recompute the whole ledger and check it against the broker's signed checkpoint."""
    from trm_broker.cli.ledger_reader import verify
    from trm_broker.ledger.audit import AuditFailure
    from trm_broker.ledger.verifier import LedgerFailure

    try:
        checkpoint = verify(url, read_vkeys(broker_key), key, state)
    except LedgerFailure as failure:
        typer.echo(f"\nledger verification FAILED {failure}", err=True)
        if isinstance(failure, AuditFailure) and failure.evidence is not None:
            path = _write_evidence(failure.evidence, evidence, state)
            typer.echo(
                f"evidence written to {path}: the two checkpoints the broker signed and its "
                "proof between them; anyone can check it with `trm-broker ledger "
                "check-evidence`",
                err=True,
            )
        raise typer.Exit(1) from failure
    typer.echo(
        f"\nledger verified: {checkpoint.origin}, {checkpoint.size} entries, "
        f"root {base64.b64encode(checkpoint.root).decode()}"
    )


def _write_evidence(evidence: Evidence, path: Path | None, state: Path | None) -> Path:
    if path is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = state if state is not None else Path("ledger")
        path = base.with_name(f"{base.name}.evidence-{stamp}.json")
    path.write_text(json.dumps(evidence.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


@ledger_app.command("check-evidence")
def check_evidence_command(
    evidence: Annotated[Path, typer.Argument(help="An evidence file `ledger verify` wrote.")],
    broker_key: BrokerKeys,
) -> None:
    """Check an auditor's evidence of a rewritten ledger: both checkpoints signed by the
    broker's key, and not consistent with each other. Needs no access to the broker."""
    from trm_broker.ledger.audit import Evidence, check_evidence
    from trm_broker.ledger.verifier import LedgerFailure

    try:
        found = Evidence.from_json(json.loads(evidence.read_text(encoding="utf-8")))
        shown = check_evidence(found, read_vkeys(broker_key))
    except (OSError, ValueError, KeyError) as exc:
        typer.echo(f"{evidence} is not a readable evidence file ({exc})", err=True)
        raise typer.Exit(2) from exc
    except LedgerFailure as failure:
        typer.echo(f"the evidence does not hold: {failure}", err=True)
        raise typer.Exit(1) from failure
    typer.echo(f"the evidence holds: {shown}")
