"""Signed consent forms kept at the node (issue 19, docs/design.md §7): the file a focal
point's case worker uploads, the consent it registers under it, and the form's digest.

"The signed form stays at the node, and only its digest travels": the broker keeps
``form_digest`` (``sha-256:<base64url>``, as :func:`~trm_broker.crypto.encoding.sha256_digest`
writes every digest), this table keeps the bytes. A row is a draft until its consent is
registered at the broker (``registered_at``); drafts never confirmed are dropped after a day.
Each row belongs to one organisation: only its people may read it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from trm_broker.crypto.encoding import sha256_digest
from trm_broker.node.store import NodeBase
from trm_broker.store.models import UTCDateTime

#: The largest form kept (a scanned page or two): larger ones are refused in words.
MAX_BYTES = 5 * 1024 * 1024
#: A draft never confirmed is dropped this long after its upload.
DRAFT_LIFETIME = timedelta(days=1)
#: What a form may be, told by its first bytes (never by the name or type a browser gives).
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}


class ConsentForm(NodeBase):
    __tablename__ = "node_consent_forms"

    #: A random id (32 hex digits): also the Idempotency-Key of its registration.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(64))
    case_ref: Mapped[str] = mapped_column(String(64), index=True)
    consent_id: Mapped[str] = mapped_column(String(128), unique=True)
    #: The consent as registered at the broker (its `POST /v1/consents` body), JSON.
    consent: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def body(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.consent)
        return found

    @property
    def file_name(self) -> str:
        """A name for the download that names no one: the case and the consent."""
        return f"consent-{self.case_ref}-{self.id[:8]}.{EXTENSIONS.get(self.media_type, 'bin')}"


def media_type_of(data: bytes) -> str | None:
    """``application/pdf``, ``image/png`` or ``image/jpeg`` by the file's own first bytes;
    None for anything else."""
    return next((media for magic, media in _SIGNATURES if data.startswith(magic)), None)


def digest_of(data: bytes) -> str:
    """The form's digest as the broker's ``form_digest`` takes it: ``sha-256:<base64url>``."""
    return sha256_digest(data)


async def get(
    session: AsyncSession, form_id: str, organisations: Collection[str]
) -> ConsentForm | None:
    """The form, if it is one of ``organisations``' (else None, as if it did not exist)."""
    row = await session.get(ConsentForm, form_id)
    return row if row is not None and row.organisation in organisations else None


async def registered(
    session: AsyncSession, organisations: Collection[str], case_ref: str | None = None
) -> Sequence[ConsentForm]:
    """The organisations' forms whose consent is registered (of one case, or all)."""
    query = select(ConsentForm).where(
        ConsentForm.organisation.in_(list(organisations)), ConsentForm.registered_at.is_not(None)
    )
    if case_ref is not None:
        query = query.where(ConsentForm.case_ref == case_ref)
    return (await session.scalars(query.order_by(ConsentForm.registered_at))).all()


async def drop_stale_drafts(session: AsyncSession, now: datetime) -> None:
    await session.execute(
        delete(ConsentForm)
        .where(
            ConsentForm.registered_at.is_(None),
            ConsentForm.uploaded_at < now - DRAFT_LIFETIME,
        )
        .execution_options(synchronize_session=False)
    )
