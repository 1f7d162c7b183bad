"""outbox: the node's outbox and the answers kept for Idempotency-Key (issue 18)

``node_outbox``: every message a case worker sends, stored signed before the broker is called
(``state`` queued, receipted or refused; per case sent in ``seq`` order). ``node_idempotency``:
the first answer to a request sent with an ``Idempotency-Key``, per caller and route, until
it expires. Both are new tables: the previous release writes neither, and ``node_sent`` is
unchanged (a receipted message is written there as before).

Revision ID: n0003
Revises: n0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "n0003"
down_revision: str | None = "n0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE_TYPES = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
    "reception_plan_response",
    "pre_departure_contact",
)
_STATES = ("queued", "receipted", "refused")


def _one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    # ``op.f``: the name is final; the models' naming convention would prefix it again.
    listed = ", ".join(repr(value) for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_node_outbox_{column}"))


def upgrade() -> None:
    op.create_table(
        "node_outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("earlier_envelopes", sa.Text(), nullable=True),
        sa.Column("after_id", sa.String(36), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(64), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_node_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_node_outbox_id")),
        _one_of("type", _MESSAGE_TYPES),
        _one_of("state", _STATES),
    )
    op.create_index(op.f("ix_node_outbox_case_ref"), "node_outbox", ["case_ref"])
    op.create_index(op.f("ix_node_outbox_state"), "node_outbox", ["state"])
    op.create_table(
        "node_idempotency",
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("caller", "route", "key", name=op.f("pk_node_idempotency")),
    )
    op.create_index(op.f("ix_node_idempotency_expires_at"), "node_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_node_idempotency_expires_at"), table_name="node_idempotency")
    op.drop_table("node_idempotency")
    op.drop_index(op.f("ix_node_outbox_state"), table_name="node_outbox")
    op.drop_index(op.f("ix_node_outbox_case_ref"), table_name="node_outbox")
    op.drop_table("node_outbox")
