"""signed requests: nonces against replay, and the signed record of registry changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("keyid", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("keyid", "nonce", name="pk_request_nonces"),
    )
    op.create_index("ix_request_nonces_expires_at", "request_nonces", ["expires_at"])
    op.create_table(
        "registry_changes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("participant_id", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(64), nullable=True),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("operator_kid", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=True),
        sa.Column("target_uri", sa.String(2048), nullable=True),
        sa.Column("content_digest", sa.String(200), nullable=True),
        sa.Column("signature_input", sa.String(1024), nullable=True),
        sa.Column("signature", sa.String(200), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name="fk_registry_changes_participant_id_participants",
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["participants.id"],
            name="fk_registry_changes_operator_id_participants",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_registry_changes"),
    )
    op.create_index("ix_registry_changes_participant_id", "registry_changes", ["participant_id"])


def downgrade() -> None:
    op.drop_index("ix_registry_changes_participant_id", table_name="registry_changes")
    op.drop_table("registry_changes")
    op.drop_index("ix_request_nonces_expires_at", table_name="request_nonces")
    op.drop_table("request_nonces")
