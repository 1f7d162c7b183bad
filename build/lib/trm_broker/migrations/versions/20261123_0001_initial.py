"""initial: participants, their keys, messages and deliveries

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("inbox_url", sa.String(2048), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_participants"),
    )
    op.create_table(
        "participant_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("participant_id", sa.String(64), nullable=False),
        sa.Column("use", sa.String(3), nullable=False),
        sa.Column("alg", sa.String(32), nullable=False),
        sa.Column("public_key", sa.String(4096), nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name="fk_participant_keys_participant_id_participants",
        ),
        sa.PrimaryKeyConstraint("kid", name="pk_participant_keys"),
    )
    op.create_index(
        "ix_participant_keys_participant_use", "participant_keys", ["participant_id", "use"]
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("recipient_id", sa.String(64), nullable=False),
        sa.Column("sender_kid", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("accepted_at", UTCDateTime(), nullable=False),
        sa.Column("envelope_digest", sa.String(80), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("receipt", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["participants.id"], name="fk_messages_sender_id_participants"
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["participants.id"], name="fk_messages_recipient_id_participants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_case_ref", "messages", ["case_ref"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("recipient_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_deliveries_message_id_messages"
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["participants.id"], name="fk_deliveries_recipient_id_participants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("message_id", name="uq_deliveries_message_id"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    # Forward-only in production: restore from backup instead of downgrading.
    op.drop_table("deliveries")
    op.drop_table("messages")
    op.drop_table("participant_keys")
    op.drop_table("participants")
