"""`trm-broker ledger verify`: the auditor's offline check of the broker's transfer ledger.

It trusts nothing the broker says but what the broker's key signed: it fetches the latest
checkpoint, checks its signature, streams every entry, recomputes every leaf and the root,
and, given a state file from an earlier run, checks that history was only ever appended to.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer

from trm_broker.crypto.errors import VerificationError
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from trm_broker.ledger.verifier import Earlier, LedgerFailure, LedgerVerifier

ledger_app = typer.Typer(help="The verifiable transfer ledger.", no_args_is_help=True)

PAGE = 1000


class _Fetch:
    def __init__(self, url: str, http: httpx.Client) -> None:
        self.base = url.rstrip("/")
        self.http = http

    def get(self, path: str, **params: Any) -> httpx.Response:
        try:
            response = self.http.get(self.base + path, params=params)
        except httpx.HTTPError as exc:
            raise LedgerFailure(None, f"the broker is unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise LedgerFailure(None, f"GET {path} answered {response.status_code}")
        return response

    def entries(self, size: int) -> Iterator[tuple[int, dict[str, Any], bytes]]:
        start = 0
        while start < size:
            page = self.get("/v1/ledger/entries", start=start, limit=min(PAGE, size - start))
            items = page.json()["entries"]
            if not items:
                return
            for item in items:
                if item["index"] >= size:
                    return
                yield item["index"], item["entry"], base64.b64decode(item["leaf_hash"])
            start = items[-1]["index"] + 1


def _leaves(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        while chunk := handle.read(merkle.HASH_SIZE):
            yield chunk


def _read_state(state: Path, verifier: Sequence[NoteVerifier]) -> Earlier | None:
    if not state.exists():
        return None
    try:
        note = json.loads(state.read_text(encoding="utf-8"))["checkpoint"]
        checkpoint = open_checkpoint(note, verifier)
    except (ValueError, KeyError, NoteError) as exc:
        raise LedgerFailure(None, f"the state file {state} is not a verified checkpoint") from exc
    return Earlier(checkpoint, _leaves(state.with_name(state.name + ".leaves")))


def _write_state(state: Path, note: str, leaves_tmp: Path) -> None:
    """Replace the state file and its leaf file only after a successful run."""
    leaves_tmp.replace(state.with_name(state.name + ".leaves"))
    fd, tmp = tempfile.mkstemp(dir=state.parent, prefix=f".{state.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"checkpoint": note}, handle)
    os.replace(tmp, state)


def _progress(out: IO[str], done: int, total: int) -> None:
    if out.isatty():
        out.write(f"\r  {done}/{total} entries verified")
        out.flush()
    elif done == total or done % 100_000 == 0:
        out.write(f"  {done}/{total} entries verified\n")


def verify(
    url: str, vkey: str | Sequence[str], key_file: Path | None, state: Path | None
) -> Checkpoint:
    """Run every check; return the verified checkpoint or raise :class:`LedgerFailure`.

    ``vkey``: the broker's verifier key, or several (its current one and those it retired,
    whose earlier checkpoints a ``state`` file may hold); all must name the same origin."""
    from trm_broker.crypto.keys import KeySet
    from trm_broker.web.signed_requests import SignedRequests

    try:
        verifier = [NoteVerifier.from_vkey(v) for v in ([vkey] if isinstance(vkey, str) else vkey)]
    except NoteError as exc:
        raise LedgerFailure(None, f"--broker-key is not a signed-note verifier key: {exc}") from exc
    origins = {v.name for v in verifier}
    if len(origins) != 1:
        raise LedgerFailure(None, "every --broker-key must name the same ledger origin")
    origin = origins.pop()
    auth = SignedRequests(KeySet.read(key_file).signing) if key_file else None
    with ExitStack() as stack:
        http = stack.enter_context(httpx.Client(timeout=30, follow_redirects=False, auth=auth))
        fetch = _Fetch(url, http)
        # 1. The latest checkpoint, signed by the broker's key for this origin.
        note = fetch.get("/v1/ledger/checkpoint").text
        try:
            checkpoint = open_checkpoint(note, verifier, origin=origin)
        except NoteError as exc:
            raise LedgerFailure(None, f"the checkpoint's signature does not verify: {exc}") from exc
        # 2. What this auditor verified before, if anything.
        earlier = _read_state(state, verifier) if state else None
        ledger = LedgerVerifier(checkpoint, earlier)
        # 3. Every entry, in order: leaves, earlier leaves, and the root.
        leaves_out: IO[bytes] | None = None
        leaves_tmp: Path | None = None
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=state.parent, prefix=f".{state.name}.leaves.")
            leaves_tmp = Path(name)
            leaves_out = stack.enter_context(os.fdopen(fd, "wb"))
        try:
            for index, entry, stored in fetch.entries(checkpoint.size):
                leaf = ledger.add(index, entry, stored)
                if leaves_out is not None:
                    leaves_out.write(leaf)
                if ledger.size % PAGE == 0 or ledger.size == checkpoint.size:
                    _progress(sys.stderr, ledger.size, checkpoint.size)
            ledger.finish()
            # 4. The broker's own consistency proof must agree with what we recomputed.
            if earlier is not None and 0 < earlier.checkpoint.size < checkpoint.size:
                proof = fetch.get(
                    "/v1/ledger/consistency",
                    first=earlier.checkpoint.size,
                    second=checkpoint.size,
                ).json()["proof"]
                merkle.verify_consistency(
                    earlier.checkpoint.size,
                    checkpoint.size,
                    earlier.checkpoint.root,
                    checkpoint.root,
                    [base64.b64decode(h) for h in proof],
                )
        except VerificationError as exc:
            if leaves_tmp is not None:
                leaves_tmp.unlink(missing_ok=True)
            if isinstance(exc, LedgerFailure):
                raise
            raise LedgerFailure(None, f"the broker's consistency proof fails: {exc}") from exc
        if state is not None and leaves_out is not None and leaves_tmp is not None:
            leaves_out.close()
            _write_state(state, note, leaves_tmp)
    return checkpoint


@ledger_app.command("verify")
def verify_command(
    url: Annotated[str, typer.Option(help="The broker's base URL.")],
    broker_key: Annotated[
        list[str],
        typer.Option(
            help="The ledger's signed-note verifier key (`ledger.verifier_key` of "
            "GET /v1/broker, obtained out of band), or a file holding it. Repeat it for the "
            "keys the broker retired (`ledger.retired_verifier_keys`)."
        ),
    ],
    key: Annotated[
        Path | None, typer.Option(help="Your auditor key file (reading entries is signed).")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Keeps the verified checkpoint and leaf hashes between runs."),
    ] = None,
) -> None:
    """Recompute the whole ledger and check it against the broker's signed checkpoint."""
    vkeys = [Path(k).read_text().strip() if Path(k).is_file() else k for k in broker_key]
    try:
        checkpoint = verify(url, vkeys, key, state)
    except LedgerFailure as failure:
        typer.echo(f"\nledger verification FAILED {failure}", err=True)
        raise typer.Exit(1) from failure
    typer.echo(
        f"\nledger verified: {checkpoint.origin}, {checkpoint.size} entries, "
        f"root {base64.b64encode(checkpoint.root).decode()}"
    )
