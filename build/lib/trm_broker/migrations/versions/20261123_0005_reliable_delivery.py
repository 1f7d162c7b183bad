"""reliable delivery: per-case order, maximum age, pull fetches, dead letters

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Additive only (nullable columns, then a backfill): replicas of the previous release
    # keep serving while this runs; rows they add meanwhile are ordered by id alone.
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("case_ref", sa.String(64), nullable=True))
        batch.add_column(sa.Column("queued_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("fetched_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("dead_lettered_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_deliveries_recipient_case", ["recipient_id", "case_ref", "id"])
    op.execute(
        "UPDATE deliveries SET case_ref = (SELECT m.case_ref FROM messages m"
        " WHERE m.id = deliveries.message_id),"
        " queued_at = (SELECT m.accepted_at FROM messages m WHERE m.id = deliveries.message_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_recipient_case")
        batch.drop_column("dead_lettered_at")
        batch.drop_column("fetched_at")
        batch.drop_column("queued_at")
        batch.drop_column("case_ref")
