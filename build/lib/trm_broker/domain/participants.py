"""Who takes part in the exchange (docs/design.md §4)."""

from __future__ import annotations

from enum import StrEnum

PARTICIPANT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"


class ParticipantKind(StrEnum):
    FOCAL_POINT = "focal_point"
    RECEIVING_ORG = "receiving_org"
    AUDITOR = "auditor"
    OPERATOR = "operator"


class KeyUse(StrEnum):
    """What a participant's public key is for (RFC 7517 ``use``)."""

    SIG = "sig"  # Ed25519: signs envelopes, answers and requests
    ENC = "enc"  # HPKE: payloads are sealed to it


#: Kinds that exchange case messages; auditors and operators never send or receive them.
MESSAGING_KINDS = frozenset({ParticipantKind.FOCAL_POINT, ParticipantKind.RECEIVING_ORG})
