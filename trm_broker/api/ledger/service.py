"""Reading the ledger: pages, entries with inclusion proofs, consistency proofs, search."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import Caller
from trm_broker.api.ledger.schemas import (
    ConsistencyOut,
    EntryOut,
    EntryPage,
    EntryProof,
    SearchPage,
)
from trm_broker.domain.participants import ParticipantKind
from trm_broker.ledger import merkle
from trm_broker.store import ledger as store
from trm_broker.store.models import LedgerEntry
from trm_broker.web.problems import Forbidden, InvalidRequest, NotFound, Unavailable


def reader_of(caller: Caller) -> str | None:
    """Auditors read every entry; parties the entries they are party to (docs/design.md §4)."""
    if caller.kind is ParticipantKind.AUDITOR:
        return None
    if caller.kind is ParticipantKind.OPERATOR:
        raise Forbidden("Operators read the registry and health, not the ledger's entries.")
    return caller.participant_id


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def entries_out(session: AsyncSession, rows: Sequence[LedgerEntry]) -> list[EntryOut]:
    """Entries with the leaf hashes *the tree* holds for their indexes (not a copy kept with
    the entry), so an entry altered after integration shows as not matching its leaf."""
    indexes = [row.idx for row in rows if row.idx is not None]
    leaves = await store.nodes(session, ((0, index) for index in indexes))
    return [
        EntryOut(index=index, leaf_hash=b64(leaves[(0, index)]), entry=json.loads(row.body))
        for row, index in zip(rows, indexes, strict=True)
    ]


async def tree_size(session: AsyncSession) -> int:
    latest = await store.latest_checkpoint(session)
    if latest is None:
        raise Unavailable("The ledger has no checkpoint yet; retry in a second.")
    return latest.size


async def checkpoint_note(session: AsyncSession, size: int | None) -> str:
    """The latest signed checkpoint, or with ``size`` the first one that covers ``size``
    entries: the one of exactly that size if the broker signed one, else the next larger.

    The sequencer signs one checkpoint per batch, so most sizes are never signed; an
    auditor asking for a size gets the nearest note that commits to those entries and reads
    its size in the note (a consistency proof then relates it to any other).
    """
    latest = await store.latest_checkpoint(session)
    if latest is None:
        raise Unavailable("The ledger has no checkpoint yet; retry in a second.")
    if size is None:
        return latest.note
    found = await store.checkpoint_at_least(session, size)
    if found is None:
        raise NotFound(
            f"The broker has signed no checkpoint of size {size} or more yet; the latest is "
            f"of size {latest.size}. Ask for a size up to it, or retry once the ledger grows.",
            latest_size=latest.size,
        )
    return found.note


async def page(session: AsyncSession, start: int, limit: int, reader: str | None) -> EntryPage:
    size = await tree_size(session)
    end = min(start + limit, size)
    rows = await store.entries(session, start, end, reader) if start < end else []
    return EntryPage(
        tree_size=size,
        entries=await entries_out(session, rows),
        next_start=end if end < size else None,
    )


NO_LEAF = bytes(merkle.HASH_SIZE)


async def raw_page(
    session: AsyncSession, start: int, limit: int, reader: str | None
) -> tuple[int, int, bytes]:
    """(count, tree size, body) of `GET /v1/ledger/entries/raw`: the integrated entries from
    ``start`` as the broker stores and hashes them, for an auditor's whole-ledger check.
    The body is the entries' indexes (8 bytes each, big-endian), then the leaf hashes the
    tree holds for them (32 bytes each; zeros where it holds none), then the entries' bytes,
    each followed by a line feed (RFC 8785 text has none of its own)."""
    if reader is not None:
        raise Forbidden(
            "Only auditors read the whole ledger; read the entries you are party to with "
            "GET /v1/ledger/entries."
        )
    size = await tree_size(session)
    end = min(start + limit, size)
    if start >= end:
        return 0, size, b""
    count, indexes, leaves, bodies = await store.raw_entries(session, start, end, NO_LEAF)
    return count, size, indexes + leaves + bodies


async def entry_with_proof(
    session: AsyncSession, index: int, at_size: int | None, reader: str | None
) -> EntryProof:
    size = await tree_size(session)
    wanted = size if at_size is None else at_size
    if wanted > size:
        raise InvalidRequest(f"tree_size is at most the latest checkpoint's, {size}.")
    if index >= wanted:
        raise NotFound(f"No entry {index} in a tree of {wanted} entries.")
    entry = await store.entry_at(session, index, reader)
    if entry is None:
        raise NotFound(f"No entry {index} that you are party to.")
    nodes = await store.nodes(session, merkle.inclusion_nodes(index, wanted))
    checkpoint = await store.checkpoint_at(session, wanted)
    (out,) = await entries_out(session, [entry])
    return EntryProof(
        **out.model_dump(),
        tree_size=wanted,
        inclusion_proof=[b64(h) for h in merkle.inclusion_proof(index, wanted, nodes)],
        checkpoint=checkpoint.note if checkpoint is not None else None,
    )


async def consistency(session: AsyncSession, first: int, second: int) -> ConsistencyOut:
    size = await tree_size(session)
    if not 0 <= first <= second <= size:
        raise InvalidRequest(f"Ask for 0 <= first <= second <= {size} (the latest size).")
    nodes = await store.nodes(session, merkle.consistency_nodes(first, second))
    proof = merkle.consistency_proof(first, second, nodes)
    return ConsistencyOut(first=first, second=second, proof=[b64(h) for h in proof])


async def search(
    session: AsyncSession, where: store.Search, reader: str | None, after: int, limit: int
) -> SearchPage:
    size = await tree_size(session)
    rows = await store.search(session, where, reader, after, limit, size)
    return SearchPage(
        tree_size=size,
        entries=await entries_out(session, rows),
        next_after=rows[-1].idx if len(rows) == limit else None,
    )


CSV_COLUMNS = ("index", "at", "type", "case_ref", "parties", "countries", "leaf_hash")


def as_csv(entries: Sequence[EntryOut]) -> str:
    """One row per entry; lists joined with spaces. Entries hold no free text to escape,
    but the csv module quotes anyway, and cells cannot start a spreadsheet formula."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in entries:
        row = [
            str(item.index),
            str(item.entry.get("at", "")),
            str(item.entry.get("type", "")),
            str(item.entry.get("case_ref", "")),
            " ".join(item.entry.get("parties", [])),
            " ".join(item.entry.get("countries", [])),
            item.leaf_hash,
        ]
        writer.writerow(["'" + cell if cell[:1] in ("=", "+", "-", "@") else cell for cell in row])
    return out.getvalue()
