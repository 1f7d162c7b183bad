"""`/v1/ledger`: checkpoints and proofs for anyone; entries for auditors and parties."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from trm_broker.api.auth import SignedCaller
from trm_broker.api.deps import Session
from trm_broker.api.ledger import service
from trm_broker.api.ledger.schemas import ConsistencyOut, EntryPage, EntryProof, SearchPage
from trm_broker.domain.countries import CountryCode
from trm_broker.domain.ledger_events import EventType
from trm_broker.store.ledger import Search
from trm_broker.web.query import MAX_CURSOR, Timestamp

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])

_NOTE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "A C2SP signed note."}
}
Index = Annotated[int, Query(ge=0, le=2**62)]


@router.get("/checkpoint", response_class=Response, responses=_NOTE)
async def checkpoint(
    session: Session,
    size: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="At least this many entries: the smallest signed checkpoint of this "
            "size or more (its note states its size, which may be larger).",
        ),
    ] = None,
) -> Response:
    """The latest signed checkpoint (C2SP tlog-checkpoint), or the first signed one covering
    ``size`` entries. 404 (with ``latest_size``) when none covers them yet."""
    note = await service.checkpoint_note(session, size)
    return Response(note, media_type="text/plain; charset=utf-8")


@router.get("/consistency", response_model=ConsistencyOut)
async def consistency(first: Index, second: Index, session: Session) -> ConsistencyOut:
    """Proof that the tree of size ``second`` extends the tree of size ``first``."""
    return await service.consistency(session, first, second)


@router.get("/entries", response_model=EntryPage)
async def entries(
    caller: SignedCaller,
    session: Session,
    start: Index = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EntryPage:
    """Integrated entries in index order (auditors: all; parties: their own)."""
    return await service.page(session, start, limit, service.reader_of(caller))


RAW_HEADERS = {
    "Trm-Ledger-Count": "How many entries the body holds.",
    "Trm-Ledger-Tree-Size": "The latest checkpoint's size; entries beyond wait.",
}


@router.get(
    "/entries/raw",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The entries' indexes (8 bytes each, big-endian), then the leaf "
            "hashes the tree holds for them (32 bytes each, zeros where it holds none), then "
            "each entry's stored bytes (its RFC 8785 JSON) followed by a line feed.",
            "headers": {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in RAW_HEADERS.items()
            },
        }
    },
)
async def raw_entries(
    caller: SignedCaller,
    session: Session,
    start: Index = 0,
    limit: Annotated[int, Query(ge=1, le=65536)] = 16384,
) -> Response:
    """Auditors: integrated entries from ``start`` in index order, as the broker stores and
    hashes them, with the tree's leaves: the whole-ledger check of `trm-broker ledger
    verify`, many thousand entries a request."""
    count, size, body = await service.raw_page(session, start, limit, service.reader_of(caller))
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Trm-Ledger-Count": str(count), "Trm-Ledger-Tree-Size": str(size)},
    )


@router.get("/entries/{index}", response_model=EntryProof)
async def entry(
    index: Annotated[int, Path(ge=0, le=MAX_CURSOR)],
    caller: SignedCaller,
    session: Session,
    tree_size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> EntryProof:
    """One entry with its inclusion proof against ``tree_size`` (default: the latest)."""
    return await service.entry_with_proof(session, index, tree_size, service.reader_of(caller))


@router.get("/search", response_model=SearchPage, responses={200: {"content": {"text/csv": {}}}})
async def search(
    caller: SignedCaller,
    session: Session,
    case_ref: Annotated[str | None, Query(max_length=64)] = None,
    participant: Annotated[str | None, Query(max_length=64)] = None,
    country: CountryCode | None = None,
    type: EventType | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    after: Annotated[int, Query(ge=-1, le=2**62)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Literal["json", "csv"] = "json",
) -> SearchPage | Response:
    """Entries by case reference, participant, country, event type and time range."""
    where = Search(
        case_ref=case_ref,
        participant=participant,
        country=country,
        type=type,
        since=since,
        until=until,
    )
    found = await service.search(session, where, service.reader_of(caller), after, limit)
    if format == "csv":
        return Response(service.as_csv(found.entries), media_type="text/csv; charset=utf-8")
    return found
