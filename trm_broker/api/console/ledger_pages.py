"""The console's ledger pages: the ledger browser and the checkpoints (issue 20).

The server only fetches: every entry shown comes with its exact bytes and its inclusion proof
against the latest signed checkpoint, and the page's own script (static/proofs.js) hashes
the bytes, walks the proof to the root, and checks the checkpoint's signature, so an auditor
need not trust this server for what it shows. The server checks the signature too, for
browsers without WebCrypto Ed25519, and the page says which of the two checked it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.console.visitor import (
    PAGES,
    PREFIX,
    ConsoleReader,
    LedgerReader,
    Visitor,
)
from trm_broker.api.deps import BrokerState, State
from trm_broker.api.ledger import service as ledger_api
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ledger_events import EventType
from trm_broker.ledger import merkle
from trm_broker.ledger.note import NoteError, NoteVerifier, open_checkpoint
from trm_broker.store import ledger as store
from trm_broker.store.models import LedgerCheckpoint

router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: Entries per page of the browser: each carries a proof of ~log2(n) hashes.
PAGE = 50
CHECKPOINT_PAGE = 50
#: Entries in one CSV download, as the API's search allows at most.
CSV_ROWS = 1000
CASE_REF = re.compile(CASE_REF_PATTERN)
_PARTICIPANT = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint as the pages show it, and whether the server's own check passed."""

    size: int
    root: str
    note: str
    issued_at: datetime
    server_verified: bool


def verifiers(state: BrokerState) -> list[NoteVerifier]:
    """The broker's note key and its retired ones: checkpoints signed before a rotation."""
    origin = state.settings.ledger_origin
    return [
        state.note_signer().verifier(),
        *(NoteVerifier.of(origin, load_ed25519_public(r.public_b64)) for r in state.retired_keys),
    ]


def signed_head(state: BrokerState, row: LedgerCheckpoint) -> SignedHead:
    try:
        open_checkpoint(row.note, verifiers(state), state.settings.ledger_origin)
        verified = True
    except NoteError:
        verified = False
    return SignedHead(row.size, b64(row.root), row.note, row.issued_at, verified)


def vkeys(state: BrokerState) -> str:
    """The verifier keys, space-separated, for the page's script."""
    return " ".join(v.vkey() for v in verifiers(state))


def render(request: Request, visitor: Visitor, template: str, **context: Any) -> HTMLResponse:
    return PAGES.page(request, template, language=visitor.language, visitor=visitor, **context)


@router.get("/")
async def home(visitor: ConsoleReader) -> RedirectResponse:
    target = "ledger" if visitor.reads_ledger else "checkpoints"
    return RedirectResponse(f"{PREFIX}/{target}", status_code=303)


@dataclass(frozen=True)
class Filters:
    case_ref: str = ""
    participant: str = ""
    country: str = ""
    type: str = ""
    since: str = ""
    until: str = ""

    def search(self) -> store.Search:
        return store.Search(
            case_ref=self.case_ref or None,
            participant=self.participant or None,
            country=self.country or None,
            type=EventType(self.type) if self.type else None,
            since=_day(self.since),
            until=_day(self.until, after=timedelta(days=1)),
        )

    def query(self, **more: str | int) -> str:
        values = {k: v for k, v in vars(self).items() if v}
        return urlencode({**values, **more})


def _day(text: str, after: timedelta = timedelta()) -> datetime | None:
    """The start of the day ``text`` (UTC), moved on by ``after``; ``None`` for no day."""
    return datetime.combine(date.fromisoformat(text), time(), UTC) + after if text else None


def _filters(request: Request) -> tuple[Filters, list[str]]:
    """The search form's fields, each checked; the names of those that are wrong."""
    given = {name: request.query_params.get(name, "").strip()[:64] for name in vars(Filters())}
    given["country"] = given["country"].upper()
    wrong = []
    checks: dict[str, Callable[[str], object]] = {
        "case_ref": CASE_REF.match,
        "participant": _PARTICIPANT.match,
        "country": _COUNTRY.match,
        "type": lambda v: v in {t.value for t in EventType},
        "since": _is_day,
        "until": _is_day,
    }
    for name, check in checks.items():
        if given[name] and not check(given[name]):
            wrong.append(name)
            given[name] = ""
    return Filters(**given), wrong


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _cursor(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 19 else -1


async def shown_entries(
    db: AsyncSession, filters: Filters, after: int, size: int, limit: int = PAGE
) -> tuple[list[dict[str, Any]], int | None]:
    rows = await store.search(db, filters.search(), None, after, limit, size)
    indexes = [row.idx for row in rows if row.idx is not None]
    wanted = [node for index in indexes for node in merkle.inclusion_nodes(index, size)]
    nodes = await store.nodes(db, wanted)
    shown = []
    for row, index in zip(rows, indexes, strict=True):
        body = json.loads(row.body)
        shown.append(
            {
                "index": index,
                "bytes": b64(row.body),
                "proof": " ".join(b64(h) for h in merkle.inclusion_proof(index, size, nodes)),
                "type": str(body.get("type", "")),
                "at": str(body.get("at", "")),
                "case_ref": str(body.get("case_ref", "")),
                "message_type": str(body.get("message_type", "")),
                "parties": " ".join(body.get("parties", [])),
                "countries": " ".join(body.get("countries", [])),
            }
        )
    more = indexes[-1] if len(rows) == limit and indexes else None
    return shown, more


@router.get("/ledger", response_class=HTMLResponse)
async def ledger_page(request: Request, visitor: LedgerReader, state: State) -> HTMLResponse:
    """Entries found by the search form, each with its proof, a page at a time."""
    filters, wrong = _filters(request)
    after = _cursor(request.query_params.get("after", ""))
    async with state.sessions() as db:
        latest = await store.latest_checkpoint(db)
        shown: list[dict[str, Any]] = []
        more = None
        if latest is not None and latest.size > 0:
            shown, more = await shown_entries(db, filters, after, latest.size)
    return render(
        request,
        visitor,
        "ledger.html",
        status=400 if wrong else 200,
        filters=filters,
        wrong=wrong,
        event_types=[t.value for t in EventType],
        entries=shown,
        timeline=False,
        checkpoint=signed_head(state, latest) if latest is not None else None,
        vkeys=vkeys(state),
        next_query=filters.query(after=more) if more is not None else None,
        csv_query=filters.query(after=after) if after >= 0 else filters.query(),
        first_query=filters.query() if after >= 0 else None,
    )


@router.get("/ledger.csv")
async def ledger_csv(request: Request, visitor: LedgerReader, state: State) -> Response:
    """The entries the search finds from ``after`` on, up to 1,000, as the API's CSV."""
    filters, _ = _filters(request)
    after = _cursor(request.query_params.get("after", ""))
    async with state.sessions() as db:
        latest = await store.latest_checkpoint(db)
        size = latest.size if latest is not None else 0
        rows = await store.search(db, filters.search(), None, after, CSV_ROWS, size)
        found = await ledger_api.entries_out(db, rows)
    return Response(
        ledger_api.as_csv(found),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="trm-ledger.csv"'},
    )


@router.get("/checkpoints", response_class=HTMLResponse)
async def checkpoints_page(request: Request, visitor: ConsoleReader, state: State) -> HTMLResponse:
    """The signed checkpoints, newest first, and a consistency check between two of them."""
    query = request.query_params
    before_text = query.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    first, second = _cursor(query.get("first", "")), _cursor(query.get("second", ""))
    problem = None
    check = None
    async with state.sessions() as db:
        rows = await store.checkpoints_before(db, before, CHECKPOINT_PAGE)
        if "first" in query or "second" in query:
            problem, check = await _consistency(db, state, first, second)
    heads = [signed_head(state, row) for row in rows]
    more = heads[-1].size if len(heads) == CHECKPOINT_PAGE else None
    return render(
        request,
        visitor,
        "checkpoints.html",
        status=400 if problem else 200,
        heads=heads,
        more=more,
        first=first if first >= 0 else "",
        second=second if second >= 0 else "",
        problem=problem,
        check=check,
        vkeys=vkeys(state),
        before=before,
    )


@router.get("/checkpoints.csv")
async def checkpoints_csv(request: Request, visitor: ConsoleReader, state: State) -> Response:
    """The checkpoints' table of the page (``before`` as there) as CSV, with the notes."""
    before_text = request.query_params.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    async with state.sessions() as db:
        rows = await store.checkpoints_before(db, before, CHECKPOINT_PAGE)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["size", "issued_at", "root", "server_verified", "note"])
    for head in (signed_head(state, row) for row in rows):
        verified = "true" if head.server_verified else "false"
        writer.writerow([head.size, head.issued_at.isoformat(), head.root, verified, head.note])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="trm-checkpoints.csv"'},
    )


async def _consistency(
    db: AsyncSession, state: BrokerState, first: int, second: int
) -> tuple[str | None, dict[str, Any] | None]:
    """The two checkpoints and the proof between them; or why there is none."""
    if first < 0 or second < 0:
        return "sizes-missing", None
    first, second = min(first, second), max(first, second)
    if first == 0:
        return "empty-first", None
    older = await store.checkpoint_at(db, first)
    newer = await store.checkpoint_at(db, second)
    if older is None or newer is None:
        return "no-such-checkpoint", None
    nodes = await store.nodes(db, merkle.consistency_nodes(first, second))
    proof = merkle.consistency_proof(first, second, nodes)
    return None, {
        "first": signed_head(state, older),
        "second": signed_head(state, newer),
        "proof": " ".join(b64(h) for h in proof),
    }
