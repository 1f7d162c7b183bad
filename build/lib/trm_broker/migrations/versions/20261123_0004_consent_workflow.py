"""consent and workflow: consents, case transfers, alerts, refusals; messages.consent_ref

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Additive only: replicas of the previous release keep serving while this runs.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("consent_ref", sa.String(128), nullable=True))
        batch.create_index("ix_messages_consent_ref", ["consent_ref"])
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("party3", sa.String(64), nullable=True))
        batch.create_index("ix_ledger_entries_party3", ["party3"])
    op.create_table(
        "consents",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("given_by", sa.String(16), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("recipient_countries", sa.Text(), nullable=False),
        sa.Column("data_categories", sa.Text(), nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=True),
        sa.Column("form_digest", sa.String(80), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
        sa.Column("proof", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["registered_by"], ["participants.id"], name="fk_consents_registered_by_participants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
    )
    op.create_index("ix_consents_case_ref", "consents", ["case_ref"])
    op.create_table(
        "case_transfers",
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("sending", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("receiving_org", sa.String(64), nullable=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("case_ref", name="pk_case_transfers"),
    )
    op.create_index("ix_case_transfers_sending", "case_transfers", ["sending"])
    op.create_index("ix_case_transfers_destination", "case_transfers", ["destination"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("party1", sa.String(64), nullable=False),
        sa.Column("party2", sa.String(64), nullable=True),
        sa.Column("party3", sa.String(64), nullable=True),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_case_ref_kind", "alerts", ["case_ref", "kind"])
    op.create_table(
        "refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(80), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("sender_country", sa.String(2), nullable=False),
        sa.Column("recipient_country", sa.String(2), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_refusals"),
    )
    op.create_index("ix_refusals_at", "refusals", ["at"])


def downgrade() -> None:
    op.drop_table("refusals")
    op.drop_table("alerts")
    op.drop_table("case_transfers")
    op.drop_table("consents")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_index("ix_ledger_entries_party3")
        batch.drop_column("party3")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_consent_ref")
        batch.drop_column("consent_ref")
