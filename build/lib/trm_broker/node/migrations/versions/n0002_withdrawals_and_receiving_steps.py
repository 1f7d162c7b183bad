"""withdrawals and receiving steps: what issue 17 added to the node's schema

- ``node_received`` gains ``consent_ref`` (the consent a message came under, indexed),
  ``restricted_at`` (indexed), ``restriction`` and ``purged_at`` (a withdrawn consent's
  messages are kept unread, then their payload deleted), all nullable; ``payload`` becomes
  nullable (NULL once deleted). Rows of the previous release keep NULL in the new columns:
  the node reads them as unrestricted, with no consent on record.
- ``node_withdrawn_consents`` (the consents the node learned were withdrawn) and
  ``node_alerts_handled`` (the ``consent_withdrawn`` alerts it acted on): new tables.
- ``reception_plan_response`` and ``pre_departure_contact`` join the message types of the
  CHECK constraints of ``node_received`` and ``node_sent`` (widened: no row fails it).

Revision ID: n0002
Revises: n0001
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "n0002"
down_revision: str | None = "n0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE_TYPES_N0001 = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
)
_MESSAGE_TYPES = (*_MESSAGE_TYPES_N0001, "reception_plan_response", "pre_departure_contact")
_TYPED_TABLES = ("node_received", "node_sent")


def _condition(values: tuple[str, ...]) -> str:
    return f"type IN ({', '.join(repr(value) for value in values)})"


def _replace_type_checks(values: tuple[str, ...]) -> None:
    # As the broker's revision 0007: on PostgreSQL the new constraint is added NOT VALID and
    # validated after (no write lock during the scan); SQLite copies the table (batch mode).
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in _TYPED_TABLES:
        name = f"ck_{table}_type"
        if postgresql:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({_condition(values)}) NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
        else:
            with op.batch_alter_table(table) as batch:
                batch.drop_constraint(op.f(name), type_="check")
                batch.create_check_constraint(op.f(name), _condition(values))


def upgrade() -> None:
    with op.batch_alter_table("node_received") as batch:
        batch.add_column(sa.Column("consent_ref", sa.String(128), nullable=True))
        batch.add_column(sa.Column("restricted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("restriction", sa.String(32), nullable=True))
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("payload", existing_type=sa.Text(), nullable=True)
    op.create_index(op.f("ix_node_received_consent_ref"), "node_received", ["consent_ref"])
    op.create_index(op.f("ix_node_received_restricted_at"), "node_received", ["restricted_at"])
    _replace_type_checks(_MESSAGE_TYPES)
    op.create_table(
        "node_withdrawn_consents",
        sa.Column("consent_ref", sa.String(128), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("learned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("learned_from", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("consent_ref", name=op.f("pk_node_withdrawn_consents")),
    )
    op.create_table(
        "node_alerts_handled",
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_node_alerts_handled")),
    )


def downgrade() -> None:
    # Refused by the database while rows hold a deleted payload or a new message type.
    op.drop_table("node_alerts_handled")
    op.drop_table("node_withdrawn_consents")
    _replace_type_checks(_MESSAGE_TYPES_N0001)
    op.drop_index(op.f("ix_node_received_restricted_at"), table_name="node_received")
    op.drop_index(op.f("ix_node_received_consent_ref"), table_name="node_received")
    with op.batch_alter_table("node_received") as batch:
        batch.alter_column("payload", existing_type=sa.Text(), nullable=False)
        batch.drop_column("purged_at")
        batch.drop_column("restriction")
        batch.drop_column("restricted_at")
        batch.drop_column("consent_ref")
