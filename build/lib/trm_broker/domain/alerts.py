"""The alerts raised for the parties of a case (docs/design.md §6, §7, §9); each is open until
what it reports is resolved, and each is recorded in the ledger when raised."""

from __future__ import annotations

from enum import StrEnum


class AlertKind(StrEnum):
    #: No reception confirmation by the planned arrival plus grace (the workflow's).
    RECEPTION_OVERDUE = "reception_overdue"
    #: A monitoring report overdue within the monitoring period (the workflow's).
    MONITORING_OVERDUE = "monitoring_overdue"
    #: A message retried for its maximum age without an answer: for sender and recipient.
    DELIVERY_DEAD_LETTERED = "delivery_dead_lettered"
    #: A consent withdrawn: for each participant who received data under it.
    CONSENT_WITHDRAWN = "consent_withdrawn"
    #: A recipient's node found a signed header its sealed payload contradicts: for the
    #: sender (a finding for the auditors, who see every alert) and the recipient.
    HEADER_PAYLOAD_MISMATCH = "header_payload_mismatch"


#: The alerts the workflow's time limits raise and close (``workflow.due_alerts``).
WORKFLOW_ALERTS = frozenset({AlertKind.RECEPTION_OVERDUE, AlertKind.MONITORING_OVERDUE})
