"""The events the transfer ledger records (docs/design.md §9): metadata and digests only.

An entry never holds a payload, a person's name or free text from a message: only ids of
organisations and messages, the pseudonymous case reference, types, times and digests.
Its leaf in the Merkle tree is the hash of the RFC 8785 JSON of :meth:`LedgerEvent.claims`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from trm_broker.domain.times import rfc3339


class EventType(StrEnum):
    OPERATOR_BOOTSTRAPPED = "operator.bootstrapped"
    PARTICIPANT_REGISTERED = "participant.registered"
    KEY_ADDED = "key.added"
    KEY_REVOKED = "key.revoked"
    MESSAGE_ACCEPTED = "message.accepted"
    MESSAGE_ACKNOWLEDGED = "message.acknowledged"
    MESSAGE_REJECTED = "message.rejected"  # the recipient's signed refusal of its payload
    PAYLOAD_PURGED = "payload.purged"
    # Recorded by the features that raise them (consent, dead letters, alerts):
    CONSENT_REGISTERED = "consent.registered"
    CONSENT_WITHDRAWN = "consent.withdrawn"
    MESSAGE_DEAD_LETTERED = "message.dead_lettered"
    MESSAGE_REQUEUED = "message.requeued"  # an operator put a dead letter back in the queue
    ALERT_RAISED = "alert.raised"
    ALERT_CLOSED = "alert.closed"


@dataclass(frozen=True)
class LedgerEvent:
    """One event. ``parties`` (participant ids) and ``countries`` say who may read it and
    what it is found by; ``facts`` are the event's own metadata (ids, kinds, digests)."""

    type: EventType
    at: datetime
    parties: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    case_ref: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "v": 1,
            "type": self.type.value,
            "at": rfc3339(self.at),
            "parties": list(self.parties),
            "countries": sorted(set(self.countries)),
        }
        if self.case_ref is not None:
            claims["case_ref"] = self.case_ref
        for name, value in self.facts.items():
            if name in claims:
                raise ValueError(f"fact {name!r} would overwrite an entry member")
            claims[name] = value
        return claims
