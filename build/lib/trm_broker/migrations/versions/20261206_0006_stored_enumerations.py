"""stored enumerations: a CHECK constraint on every column that holds an enumeration's value

The values stay the strings stored so far; the constraints make the database refuse any
other (the models read them back as the domain's enumerations). The lists are written out
here, not read from the code, so this revision means the same whatever a later release adds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTICIPANT_KINDS = ("focal_point", "receiving_org", "auditor", "operator")
_KEY_USES = ("sig", "enc")
_MESSAGE_TYPES = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
)
_DELIVERY_STATUSES = ("pending", "acknowledged", "rejected", "dead_lettered", "dropped")
_EVENT_TYPES = (
    "operator.bootstrapped",
    "participant.registered",
    "key.added",
    "key.revoked",
    "message.accepted",
    "message.acknowledged",
    "message.rejected",
    "payload.purged",
    "consent.registered",
    "consent.withdrawn",
    "message.dead_lettered",
    "message.requeued",
    "alert.raised",
    "alert.closed",
)
_GIVEN_BY = ("person", "guardian")
_STAGES = (
    "referred",
    "accepted",
    "declined",
    "return_prepared",
    "received",
    "not_received",
    "closed",
)
_ALERT_KINDS = (
    "reception_overdue",
    "monitoring_overdue",
    "delivery_dead_lettered",
    "consent_withdrawn",
)

#: (table, column, allowed values); each constraint is named ``ck_<table>_<column>``, as the
#: models' naming convention names it (``op.f``: the name is final, not to be convened again).
_CHECKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("participants", "kind", _PARTICIPANT_KINDS),
    ("participant_keys", "use", _KEY_USES),
    ("messages", "type", _MESSAGE_TYPES),
    ("deliveries", "status", _DELIVERY_STATUSES),
    ("registry_changes", "action", _EVENT_TYPES),
    ("ledger_entries", "type", _EVENT_TYPES),
    ("consents", "given_by", _GIVEN_BY),
    ("case_transfers", "stage", _STAGES),
    ("alerts", "kind", _ALERT_KINDS),
    ("refusals", "message_type", _MESSAGE_TYPES),
)


def _condition(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    # Additive: the previous release writes only these values. On PostgreSQL each
    # constraint is added NOT VALID (a brief lock, no scan) and then validated, which scans
    # the rows without blocking writes. SQLite cannot add a constraint in place: the batch
    # copies each table into a new one (foreign keys are off while migrations run).
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, column, values in _CHECKS:
        name = f"ck_{table}_{column}"
        if postgresql:
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {name}"
                f" CHECK ({_condition(column, values)}) NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
        else:
            with op.batch_alter_table(table) as batch:
                batch.create_check_constraint(op.f(name), _condition(column, values))


def downgrade() -> None:
    for table, column, _ in reversed(_CHECKS):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check")
