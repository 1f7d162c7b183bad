"""`trm-broker keys`: participants' key sets and the broker's own key."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trm_broker.settings_explained import settings_or_exit

keys_app = typer.Typer(help="Participant key sets.", no_args_is_help=True)


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
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="Only prepare the next key (published at GET /v1/broker, signing nothing "
            "yet), for the nodes that pin the broker's keys to pin before the rotation.",
        ),
    ] = False,
) -> None:
    """Give the broker a new signing key: the one prepared with `--prepare`, if any. The old
    key's public half stays in the file as retired, so its receipts and checkpoints stay
    verifiable; restart every broker and worker that reads the file (see
    docs/operations.md, "Rotating the broker's key")."""
    from datetime import UTC, datetime

    from trm_broker.crypto import broker_keys
    from trm_broker.crypto.keys import load_ed25519_public
    from trm_broker.ledger.note import NoteVerifier

    settings = settings_or_exit()
    path = key_file or settings.broker_key_file
    if not path.exists():
        typer.echo(f"trm-broker: {path} does not exist (TRM_BROKER_KEY_FILE)", err=True)
        raise typer.Exit(2)
    origin = settings.ledger_origin
    if prepare:
        prepared = broker_keys.prepare(path)
        following = prepared.next or prepared.signing  # prepare() always leaves one
        public = load_ed25519_public(following.public_b64)
        typer.echo(f"prepared {following.kid}; the broker still signs with {prepared.signing.kid}")
        typer.echo(f"pin it at the nodes: {following.kid}={following.public_b64}")
        typer.echo(f"next ledger verifier key: {NoteVerifier.of(origin, public).vkey()}")
        return
    before, after = broker_keys.rotate(path, datetime.now(UTC))
    typer.echo(f"retired {before.signing.kid}; the broker now signs with {after.signing.kid}")
    for label, keys in (("new", after), ("old", before)):
        public = load_ed25519_public(keys.signing.public_b64)
        typer.echo(f"{label} ledger verifier key: {NoteVerifier.of(origin, public).vkey()}")
