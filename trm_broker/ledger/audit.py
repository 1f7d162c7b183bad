"""The auditor's whole check of the transfer ledger (docs/design.md §9), for any tool.

It trusts nothing the broker says but what the broker's key signed: it takes the latest
signed checkpoint, streams every entry, recomputes every leaf and the root
(:class:`~trm_broker.ledger.verifier.LedgerVerifier`), and, given what this auditor verified
before, checks that history was only ever appended to (RFC 9162 §2.1.4).

Where the ledger came from is the caller's (:class:`LedgerSource`: HTTP in the CLI, a
database in a test). A failure that shows the broker signed two histories that cannot both
be true carries its :class:`Evidence`: the two signed checkpoints and the broker's own
consistency proof, which anyone holding the broker's verifier key can check for themselves
(:func:`check_evidence`) without trusting the auditor.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from trm_broker.crypto.errors import VerificationError
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from trm_broker.ledger.verifier import Earlier, LedgerFailure, LedgerVerifier, entry_leaf

EVIDENCE_VERSION = 1


class LedgerSource(Protocol):
    """Where the ledger is read from. Every method raises :class:`LedgerFailure` when it
    cannot answer (e.g. the broker is unreachable)."""

    def checkpoint(self) -> str:
        """The latest signed checkpoint, as the signed note's text."""

    def entries(self, size: int) -> Iterator[tuple[int, dict[str, Any], bytes | None]]:
        """Entries 0 .. size-1 in index order: (index, entry, the stored leaf hash if any)."""

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof between two tree sizes."""

    def inclusion(self, index: int, size: int) -> tuple[dict[str, Any], list[bytes]]:
        """Entry ``index`` and its RFC 9162 inclusion proof in the tree of ``size`` entries."""


class PagedLedgerSource(LedgerSource, Protocol):
    """A source that also reads the entries as the broker stores them, a page at a time:
    what :func:`audit` uses when it can (the same checks, much faster)."""

    def pages(self, size: int) -> Iterator[tuple[int, list[bytes], bytes | None]]:
        """Entries 0 .. size-1 in index order, a page at a time: (the page's first index,
        the entries' bytes, the leaf hashes the broker's tree holds for them, concatenated,
        if known)."""


@dataclass(frozen=True)
class Evidence:
    """What an auditor shows a third party: two checkpoints signed by the broker that cannot
    both be true. Either they are of the same size with different roots, or leaf ``index``
    differs between them, each leaf with its inclusion proof (RFC 9162 §2.1.3) to the root
    its checkpoint signed. Nothing here needs trusting the auditor: every claim is checked
    against the broker's signatures (:func:`check_evidence`). Checkpoints are the signed
    notes exactly as served; hashes are standard base64."""

    reason: str
    earlier_checkpoint: str
    latest_checkpoint: str
    index: int | None = None
    earlier_leaf: str | None = None
    earlier_inclusion_proof: list[str] | None = None
    latest_leaf: str | None = None
    latest_inclusion_proof: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"v": EVIDENCE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        if not isinstance(data, dict) or data.get("v") != EVIDENCE_VERSION:
            raise ValueError("not a ledger evidence file (v 1)")
        fields = {k: v for k, v in data.items() if k != "v"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ValueError(f"not a ledger evidence file ({exc})") from exc


class AuditFailure(LedgerFailure):
    """The ledger does not verify; ``evidence`` is set when two signed checkpoints disagree."""

    def __init__(self, failure: LedgerFailure, evidence: Evidence | None) -> None:
        super().__init__(failure.index, failure.reason)
        self.evidence = evidence


def _verifiers(vkeys: Sequence[str]) -> tuple[list[NoteVerifier], str]:
    try:
        verifiers = [NoteVerifier.from_vkey(v) for v in vkeys]
    except NoteError as exc:
        raise LedgerFailure(None, f"--broker-key is not a signed-note verifier key: {exc}") from exc
    origins = {v.name for v in verifiers}
    if len(origins) != 1:
        raise LedgerFailure(None, "every --broker-key must name the same ledger origin")
    return verifiers, origins.pop()


@dataclass
class StateFile:
    """What this auditor verified before: the signed checkpoint (JSON file) and, beside it
    (``<name>.leaves``), its leaf hashes, 32 bytes each, in index order. Replaced only after
    a successful run, so a failed run leaves the last good state in place."""

    path: Path

    @property
    def leaves_path(self) -> Path:
        return self.path.with_name(self.path.name + ".leaves")

    def read(self, verifiers: Sequence[NoteVerifier]) -> tuple[str, Earlier] | None:
        if not self.path.exists():
            return None
        try:
            note = json.loads(self.path.read_text(encoding="utf-8"))["checkpoint"]
            checkpoint = open_checkpoint(note, verifiers)
        except (ValueError, KeyError, TypeError, NoteError) as exc:
            raise LedgerFailure(
                None, f"the state file {self.path} is not a verified checkpoint"
            ) from exc
        return note, Earlier(checkpoint, self.leaves())

    def leaves(self) -> Iterator[bytes]:
        if not self.leaves_path.exists():
            return
        size = merkle.HASH_SIZE
        with self.leaves_path.open("rb") as handle:
            while block := handle.read(size * 4096):
                yield from (block[i : i + size] for i in range(0, len(block), size))

    def new_leaves(self) -> tuple[Path, IO[bytes]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.leaves.")
        return Path(name), os.fdopen(fd, "wb")

    def replace(self, note: str, leaves_tmp: Path) -> None:
        leaves_tmp.replace(self.leaves_path)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"checkpoint": note}, handle)
        os.replace(tmp, self.path)


Progress = Callable[[int, int], None]


def audit(
    source: LedgerSource,
    vkeys: Sequence[str],
    state: Path | None = None,
    progress: Progress | None = None,
    every: int = 1000,
) -> Checkpoint:
    """Run every check; return the verified checkpoint or raise :class:`LedgerFailure`
    (an :class:`AuditFailure` with evidence once two signed checkpoints disagree).

    ``vkeys``: the broker's verifier key, or several (its current one and those it retired,
    whose earlier checkpoints a ``state`` file may hold); all must name the same origin."""
    verifiers, origin = _verifiers(vkeys)
    # 1. The latest checkpoint, signed by the broker's key for this origin.
    note = source.checkpoint()
    try:
        checkpoint = open_checkpoint(note, verifiers, origin=origin)
    except NoteError as exc:
        raise LedgerFailure(None, f"the checkpoint's signature does not verify: {exc}") from exc
    # 2. What this auditor verified before, if anything.
    files = StateFile(state) if state is not None else None
    earlier_read = files.read(verifiers) if files is not None else None
    earlier_note, earlier = earlier_read if earlier_read is not None else (None, None)
    leaves_tmp: Path | None = None
    leaves_out: IO[bytes] | None = None
    if files is not None:
        leaves_tmp, leaves_out = files.new_leaves()
    try:
        try:
            ledger = LedgerVerifier(checkpoint, earlier)
            # 3. Every entry, in order: leaves, earlier leaves, and the root.
            pages = getattr(source, "pages", None)
            if pages is not None:
                for start, bodies, stored in pages(checkpoint.size):
                    page_leaves = ledger.add_bodies(start, bodies, stored)
                    if leaves_out is not None:
                        leaves_out.write(b"".join(page_leaves))
                    if progress is not None:
                        progress(ledger.size, checkpoint.size)
            else:
                for index, entry, stored_leaf in source.entries(checkpoint.size):
                    leaf = ledger.add(index, entry, stored_leaf)
                    if leaves_out is not None:
                        leaves_out.write(leaf)
                    if progress is not None and (
                        ledger.size % every == 0 or ledger.size == checkpoint.size
                    ):
                        progress(ledger.size, checkpoint.size)
            ledger.finish()
            # 4. The broker's own consistency proof must agree with what we recomputed.
            if earlier is not None and 0 < earlier.checkpoint.size < checkpoint.size:
                _check_consistency(
                    earlier.checkpoint,
                    checkpoint,
                    source.consistency(earlier.checkpoint.size, checkpoint.size),
                )
        except VerificationError as exc:
            failure = (
                exc
                if isinstance(exc, LedgerFailure)
                else LedgerFailure(None, f"the broker's consistency proof fails: {exc}")
            )
            evidence = None
            if files is not None and earlier_note is not None and earlier is not None:
                evidence = _fork_evidence(
                    source, failure, files, earlier_note, earlier.checkpoint, note, checkpoint
                )
            raise AuditFailure(failure, evidence) from exc
    except BaseException:
        if leaves_out is not None:
            leaves_out.close()
        if leaves_tmp is not None:
            leaves_tmp.unlink(missing_ok=True)
        raise
    if files is not None and leaves_out is not None and leaves_tmp is not None:
        leaves_out.close()
        files.replace(note, leaves_tmp)
    return checkpoint


def _check_consistency(first: Checkpoint, second: Checkpoint, proof: list[bytes]) -> None:
    if first.size == second.size:
        if first.root != second.root:
            raise merkle.ProofError("two checkpoints of the same size have different roots")
        return
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _fork_evidence(
    source: LedgerSource,
    failure: LedgerFailure,
    state: StateFile,
    earlier_note: str,
    earlier: Checkpoint,
    latest_note: str,
    latest: Checkpoint,
) -> Evidence | None:
    """Evidence exists only where the two signed checkpoints cannot both be true: same size,
    other root; or a leaf verified earlier that the latest signed tree holds otherwise
    (proved by an inclusion proof in each). A tree that shrank, or entries served that do
    not match a consistent pair of checkpoints, are located but prove nothing to a third
    party (an old checkpoint may be replayed; entries are not signed)."""
    if earlier.size == latest.size and earlier.root != latest.root:
        return Evidence(
            "the broker signed two trees of the same size with different roots",
            earlier_note,
            latest_note,
        )
    index = failure.index
    if index is None or not index < min(earlier.size, latest.size):
        return None
    try:
        entry, latest_proof = source.inclusion(index, latest.size)
        latest_leaf = entry_leaf(entry)
        merkle.verify_inclusion(latest_leaf, index, latest.size, latest_proof, latest.root)
    except (VerificationError, ValueError, TypeError):
        return None
    earlier_leaf, earlier_proof = _inclusion_from_leaves(state, index, earlier.size)
    if earlier_leaf == latest_leaf:
        return None
    merkle.verify_inclusion(earlier_leaf, index, earlier.size, earlier_proof, earlier.root)
    return Evidence(
        f"leaf {index} differs between two trees the broker signed: history was rewritten",
        earlier_note,
        latest_note,
        index=index,
        earlier_leaf=_b64(earlier_leaf),
        earlier_inclusion_proof=[_b64(h) for h in earlier_proof],
        latest_leaf=_b64(latest_leaf),
        latest_inclusion_proof=[_b64(h) for h in latest_proof],
    )


def _inclusion_from_leaves(state: StateFile, index: int, size: int) -> tuple[bytes, list[bytes]]:
    """Leaf ``index`` and its inclusion proof, rebuilt from the leaf hashes verified earlier
    (one pass; only the O(log n) nodes the proof needs are kept)."""
    wanted = set(merkle.inclusion_nodes(index, size))
    nodes: dict[merkle.Node, bytes] = {}
    tree = merkle.CompactRange()
    leaf = b""
    for position, hashed in enumerate(state.leaves()):
        if position >= size:
            break
        if position == index:
            leaf = hashed
        nodes.update((node, h) for node, h in tree.append(hashed) if node in wanted)
    return leaf, merkle.inclusion_proof(index, size, nodes)


def check_evidence(evidence: Evidence, vkeys: Sequence[str]) -> str:
    """A third party's check of an auditor's evidence. Returns what it shows, or raises
    :class:`LedgerFailure` if it shows nothing (a signature or a proof fails, or the two
    leaves are the same)."""
    verifiers, origin = _verifiers(vkeys)
    try:
        earlier = open_checkpoint(evidence.earlier_checkpoint, verifiers, origin=origin)
        latest = open_checkpoint(evidence.latest_checkpoint, verifiers, origin=origin)
    except NoteError as exc:
        raise LedgerFailure(None, f"a checkpoint's signature does not verify: {exc}") from exc
    if earlier.size == latest.size and earlier.root != latest.root:
        return (
            f"the broker signed two trees of {earlier.size} entries with different roots: "
            "history was rewritten"
        )
    index = evidence.index
    if index is None:
        raise LedgerFailure(
            None, "the two checkpoints do not conflict: this evidence shows no fork"
        )
    try:
        earlier_leaf = base64.b64decode(evidence.earlier_leaf or "", validate=True)
        latest_leaf = base64.b64decode(evidence.latest_leaf or "", validate=True)
        earlier_proof = [
            base64.b64decode(h, validate=True) for h in evidence.earlier_inclusion_proof or []
        ]
        latest_proof = [
            base64.b64decode(h, validate=True) for h in evidence.latest_inclusion_proof or []
        ]
        merkle.verify_inclusion(earlier_leaf, index, earlier.size, earlier_proof, earlier.root)
        merkle.verify_inclusion(latest_leaf, index, latest.size, latest_proof, latest.root)
    except (ValueError, TypeError, VerificationError) as exc:
        raise LedgerFailure(index, f"the evidence's proofs do not verify: {exc}") from exc
    if earlier_leaf == latest_leaf:
        raise LedgerFailure(index, "the two leaves are the same: this evidence shows no fork")
    return (
        f"leaf {index} is one hash in the tree of {earlier.size} entries and another in the "
        f"tree of {latest.size}, both signed by the broker: history was rewritten"
    )
