"""ledger: entries, subtree hashes and checkpoints; purgeable envelopes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Additive, so replicas of the previous release keep serving while this runs.
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("purged_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("ledger_seq", _BIGINT, nullable=True))
    op.create_table(
        "ledger_entries",
        sa.Column("seq", _BIGINT, autoincrement=True, nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=True),
        sa.Column("party1", sa.String(64), nullable=True),
        sa.Column("party2", sa.String(64), nullable=True),
        sa.Column("country1", sa.String(2), nullable=True),
        sa.Column("country2", sa.String(2), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger_entries"),
        sa.UniqueConstraint("idx", name="uq_ledger_entries_idx"),
    )
    op.create_index("ix_ledger_entries_pending", "ledger_entries", ["idx", "seq"])
    op.create_index("ix_ledger_entries_case_ref", "ledger_entries", ["case_ref"])
    op.create_index("ix_ledger_entries_party1", "ledger_entries", ["party1"])
    op.create_index("ix_ledger_entries_party2", "ledger_entries", ["party2"])
    op.create_index("ix_ledger_entries_type_at", "ledger_entries", ["type", "at"])
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_ledger_nodes"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_ledger_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_nodes")
    op.drop_table("ledger_entries")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("ledger_seq")
        batch.drop_column("purged_at")
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=False)
