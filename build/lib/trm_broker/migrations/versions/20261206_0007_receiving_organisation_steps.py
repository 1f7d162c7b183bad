"""receiving organisation steps: two message types and an alert kind join the CHECK lists

``reception_plan_response`` (the receiving organisation answers the return plan) and
``pre_departure_contact`` (it records contact with the person before travel) become message
types; ``header_payload_mismatch`` (a recipient's node found a header that its payload
contradicts) becomes an alert kind. Each list is written out in full, as in revision 0006.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE_TYPES_0006 = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
)
_MESSAGE_TYPES = (*_MESSAGE_TYPES_0006, "reception_plan_response", "pre_departure_contact")
_ALERT_KINDS_0006 = (
    "reception_overdue",
    "monitoring_overdue",
    "delivery_dead_lettered",
    "consent_withdrawn",
)
_ALERT_KINDS = (*_ALERT_KINDS_0006, "header_payload_mismatch")

_CHECKS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("messages", "type", _MESSAGE_TYPES_0006, _MESSAGE_TYPES),
    ("refusals", "message_type", _MESSAGE_TYPES_0006, _MESSAGE_TYPES),
    ("alerts", "kind", _ALERT_KINDS_0006, _ALERT_KINDS),
)


def _condition(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _replace(use_new: bool) -> None:
    # Widening a list never fails on existing rows. On PostgreSQL the new constraint is
    # added NOT VALID and validated after (no write lock during the scan); SQLite copies
    # each table (batch mode), as in revision 0006.
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, column, old, new in _CHECKS:
        name = f"ck_{table}_{column}"
        values = new if use_new else old
        if postgresql:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {name}"
                f" CHECK ({_condition(column, values)}) NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
        else:
            with op.batch_alter_table(table) as batch:
                batch.drop_constraint(op.f(name), type_="check")
                batch.create_check_constraint(op.f(name), _condition(column, values))


def upgrade() -> None:
    _replace(use_new=True)


def downgrade() -> None:
    # Refused by the database if rows of the new types exist: delete them first.
    _replace(use_new=False)
