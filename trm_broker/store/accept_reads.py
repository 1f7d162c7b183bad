"""What the accept path reads of one envelope, in one statement (issue 21).

An envelope's acceptance reads three rows by their keys: an earlier message with its id
(idempotency), its case (the workflow's state) and the consent it cites. They were three
round trips to the database; they are one SELECT of three outer joins on a one-row base, so
each row is there or its columns are NULL. The statement only reads: the checks that use
the rows, and their order, are the accept path's own (api/messages/service.py).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.store.cases import StoredCase
from trm_broker.store.direct import Query
from trm_broker.store.messages import Accepted
from trm_broker.store.models import CaseTransferRow, ConsentRecord, Message, table_of

_MESSAGE = ("id", "sender_id", "envelope_digest", "receipt")
_CASE = ("case_ref", "sending", "state", "version")
#: What ``store.consents.to_domain`` reads of a consent.
_CONSENT = (
    "id",
    "case_ref",
    "registered_by",
    "given_by",
    "purposes",
    "recipients",
    "recipient_countries",
    "data_categories",
    "valid_from",
    "valid_until",
    "withdrawn_at",
)
ConsentRow = namedtuple("ConsentRow", _CONSENT)  # type: ignore[misc]


@dataclass(frozen=True)
class AcceptReads:
    """The rows as read (``None``: not stored)."""

    message: Accepted | None
    case: StoredCase | None
    consent: Any | None  # a ConsentRow


def _statement() -> Select[Any]:
    messages, cases, consents = (table_of(m) for m in (Message, CaseTransferRow, ConsentRecord))
    base = select(literal(1).label("one")).subquery("base")
    joined = (
        base.outerjoin(messages, messages.c.id == bindparam("message_id", type_=messages.c.id.type))
        .outerjoin(cases, cases.c.case_ref == bindparam("case_ref", type_=cases.c.case_ref.type))
        .outerjoin(consents, consents.c.id == bindparam("consent_ref", type_=consents.c.id.type))
    )
    return select(
        *(messages.c[name].label(f"m_{name}") for name in _MESSAGE),
        *(cases.c[name].label(f"c_{name}") for name in _CASE),
        *(consents.c[name].label(f"k_{name}") for name in _CONSENT),
    ).select_from(joined)


_READ = Query(_statement())


async def read(
    session: AsyncSession, message_id: str, case_ref: str, consent_ref: str | None
) -> AcceptReads:
    """The message stored with ``message_id``, the case ``case_ref`` and the consent
    ``consent_ref``, each if stored, in one statement."""
    row = await _READ.one(
        session, {"message_id": message_id, "case_ref": case_ref, "consent_ref": consent_ref}
    )
    message = row[: len(_MESSAGE)]
    case = row[len(_MESSAGE) : len(_MESSAGE) + len(_CASE)]
    consent = row[len(_MESSAGE) + len(_CASE) :]
    return AcceptReads(
        message=None if message[0] is None else Accepted(*message),
        case=None if case[0] is None else StoredCase(*case),
        consent=None if consent[0] is None else ConsentRow(*consent),
    )
