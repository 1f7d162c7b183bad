"""Two case transfers and every kind of caller, for the access-control matrix.

Case A goes from Austria to Nigeria and has a designated Nigerian receiving organisation;
case B goes from France to Germany. Each caller of the matrix is party to case A, to case
B, or to neither, so every endpoint is tried on an object of the caller's own and on one of
another country's. Everything is set up through the broker's signed API, as nodes and
operators would, except two shortcuts that stand for time passing: two deliveries are made
dead letters, and the alert scheduler runs once as if ten days had gone by.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.support import Broker, envelope, polling, referral
from trm_broker.background.alert_scheduler import AlertScheduler
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.delivery import outcomes
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.store import messages as message_store
from trm_broker.store.models import (
    AlertRecord,
    ConsentRecord,
    Delivery,
    LedgerEntry,
    Message,
    Participant,
    ParticipantKey,
)

#: Stands for personal data in every sealed payload: never in a response or a log line.
CANARY = "Canary-Matrix-Jane-Doe-1990-01-01"

AT = KeySet.generate("at.focal-point")  # sending focal point of case A
NG = KeySet.generate("ng.naptip")  # destination focal point of case A
SHELTER = KeySet.generate("ng.shelter")  # receiving organisation designated in case A
FR = KeySet.generate("fr.focal-point")  # sending focal point of case B
DE = KeySet.generate("de.focal-point")  # destination focal point of case B (push mode)
RAPPORTEUR = KeySet.generate("at.rapporteur")  # an auditor
SPARE = KeySet.generate("de.spare-org")  # party to nothing: target of registry changes
STRANGER = KeySet.generate("xx.stranger")  # never registered
REVOKED_KEY = SigningKey.generate()  # a signing key of AT's, revoked before the matrix runs
DE_INBOX = "https://de-node.example/inbox"  # registered, never published

# The callers: the columns of the matrix.
FOCAL_POINT = "focal_point"  # AT: party to case A
FOCAL_POINT_ABROAD = "focal_point_abroad"  # FR: another country's, party to case B
RECEIVING_ORG = "receiving_org"  # ng.shelter: designated in case A
AUDITOR = "auditor"
OPERATOR = "operator"
UNKNOWN_KEY = "unknown_key"  # signs with a key the registry does not know
REVOKED = "revoked_key"  # signs with AT's revoked key
UNSIGNED = "unsigned"
CALLERS = (
    FOCAL_POINT,
    FOCAL_POINT_ABROAD,
    RECEIVING_ORG,
    AUDITOR,
    OPERATOR,
    UNKNOWN_KEY,
    REVOKED,
    UNSIGNED,
)

#: Who is party to each case (its focal points and its designated receiving organisation).
PARTIES = {
    "A": frozenset({AT.participant, NG.participant, SHELTER.participant}),
    "B": frozenset({FR.participant, DE.participant}),
}


@dataclass(frozen=True)
class Secret:
    """A string only some participants may ever see in a response (ids, case references,
    digests), and who they are."""

    text: str
    readers: frozenset[str]


@dataclass
class World:
    broker: Broker
    case: dict[str, str] = field(default_factory=dict)  # "A" -> case reference
    messages: dict[str, str] = field(default_factory=dict)  # "A.referral" -> message id
    envelopes: dict[str, dict[str, str]] = field(default_factory=dict)
    consents: dict[str, str] = field(default_factory=dict)  # "consent A" -> consent id
    entries: dict[str, int] = field(default_factory=dict)  # "entry A.referral" -> index
    inboxes: dict[str, set[str]] = field(default_factory=dict)  # recipient -> message ids
    dead_letters: set[str] = field(default_factory=set)
    #: The signed answers given while building the world, by message id.
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: list[Secret] = field(default_factory=list)
    tree_size: int = 0

    def keyset(self, caller: str) -> KeySet:
        """Whose keys a caller's envelopes, acknowledgements and requests use."""
        return {
            FOCAL_POINT: AT,
            FOCAL_POINT_ABROAD: FR,
            RECEIVING_ORG: SHELTER,
            AUDITOR: RAPPORTEUR,
            OPERATOR: self.broker.operator,
            UNKNOWN_KEY: STRANGER,
            REVOKED: KeySet(AT.participant, REVOKED_KEY, AT.encryption),
            UNSIGNED: AT,  # what it sends is genuine; only the request is not signed
        }[caller]

    def signer(self, caller: str) -> KeySet | None:
        return None if caller == UNSIGNED else self.keyset(caller)

    def reader(self, caller: str) -> str | None:
        """The participant a caller reads as, once authenticated (None: nobody)."""
        if caller in (UNKNOWN_KEY, REVOKED, UNSIGNED):
            return None
        return self.keyset(caller).participant

    def visible_to(self, caller: str) -> set[str]:
        reader = self.reader(caller)
        return {s.text for s in self.secrets if reader is not None and reader in s.readers}

    def case_secret(self, case: str, text: str) -> None:
        """Visible to the case's parties and to auditors (the ledger names it)."""
        self.secrets.append(Secret(text, PARTIES[case] | {RAPPORTEUR.participant}))

    def message_accepted(self, name: str, case: str, signed: dict[str, str]) -> str:
        claims = jws.parse(signed, jws.TYP_ENVELOPE).claims()
        message_id: str = claims["id"]
        self.messages[name] = message_id
        self.envelopes[name] = signed
        self.inboxes.setdefault(claims["recipient"], set()).add(message_id)
        self.case_secret(case, message_id)
        # Its digest: in the status and ledger entries of its sender and recipient only.
        readers = {claims["sender"], claims["recipient"], RAPPORTEUR.participant}
        self.secrets.append(Secret(jws.digest(signed), frozenset(readers)))
        return message_id


def _created(response: httpx.Response, status: int = 201) -> None:
    assert response.status_code == status, response.text


def consent_body(consent_id: str, case_ref: str, recipients: list[str]) -> dict[str, Any]:
    return {
        "id": consent_id,
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": recipients,
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "C" * 43,
    }


async def _consent(
    world: World, name: str, case: str, registrant: KeySet, recipients: list[KeySet]
) -> None:
    consent_id = f"cns-{case.lower()}-{name.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
    body = consent_body(consent_id, world.case[case], [r.participant for r in recipients])
    _created(await world.broker.call("POST", "/v1/consents", registrant, json=body))
    world.consents[f"{name} {case}".strip()] = consent_id
    world.case_secret(case, consent_id)


async def _send(world: World, name: str, case: str, signed: dict[str, str]) -> None:
    _created(await world.broker.submit(signed), 202)
    world.message_accepted(name, case, signed)


def _message(
    sender: KeySet,
    recipient: KeySet,
    kind: MessageType,
    header: dict[str, Any],
    case_ref: str,
    consent_ref: str,
) -> dict[str, str]:
    return envelope(
        sender,
        recipient,
        kind,
        header,
        case_ref=case_ref,
        consent_ref=consent_ref,
        payload={"note": CANARY},
    )


async def build_world(broker: Broker) -> World:
    world = World(broker)
    broker.auto_consent = False  # every consent below is registered by hand
    for keyset, country, kind, inbox in [
        (AT, "AT", "focal_point", None),
        (NG, "NG", "focal_point", None),
        (SHELTER, "NG", "receiving_org", None),
        (FR, "FR", "focal_point", None),
        (DE, "DE", "focal_point", DE_INBOX),
        (RAPPORTEUR, "AT", "auditor", None),
        (SPARE, "DE", "receiving_org", None),
    ]:
        _created(await broker.register(keyset, country, kind=kind, inbox_url=inbox))
    # AT gets a second signing key, then it is revoked (as after a compromise).
    rotation = {"use": "sig", "alg": "Ed25519", "public": REVOKED_KEY.public_b64}
    path = f"/v1/participants/{AT.participant}"
    _created(await broker.call("POST", f"{path}/keys", broker.operator, json=rotation))
    revoke = f"{path}/keys/{REVOKED_KEY.kid}/revoke"
    _created(await broker.call("POST", revoke, broker.operator), 200)

    now = datetime.now(UTC)
    world.case = {"A": f"MX-A-{uuid.uuid4().hex[:10]}", "B": f"MX-B-{uuid.uuid4().hex[:10]}"}
    for case in ("A", "B"):
        world.case_secret(case, world.case[case])

    # Case A: referred, accepted, assessed, return prepared to ng.shelter; a second consent
    # withdrawn by a message to ng.shelter (the one message addressed to it).
    case_a = world.case["A"]
    await _consent(world, "consent", "A", AT, [NG, SHELTER, AT])
    await _consent(world, "spare consent", "A", AT, [NG])
    await _consent(world, "withdrawn consent", "A", AT, [SHELTER])
    consent_a = world.consents["consent A"]
    signed = referral(
        AT, NG, case_ref=case_a, consent_ref=consent_a, payload={"identification": CANARY}
    )
    await _send(world, "A.referral", "A", signed)
    accepted = {"accepted": True}
    T = MessageType
    await _send(
        world,
        "A.response",
        "A",
        _message(NG, AT, T.REFERRAL_RESPONSE, accepted, case_a, consent_a),
    )
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": now.isoformat()}
    await _send(
        world,
        "A.assessment",
        "A",
        _message(NG, AT, T.RISK_ASSESSMENT, assessment, case_a, consent_a),
    )
    # AT's node acknowledges the assessment: only then does it count for the return.
    ack = broker.signed_answer(world.envelopes["A.assessment"])
    path = f"/v1/inbox/{world.messages['A.assessment']}/ack"
    _created(await broker.call("POST", path, AT, json={"ack": ack}), 200)
    world.answers[world.messages["A.assessment"]] = ack
    world.inboxes[AT.participant].discard(world.messages["A.assessment"])
    plan = {
        "receiving_org": SHELTER.participant,
        "planned_arrival": (now + timedelta(days=5)).isoformat(),
    }
    await _send(
        world,
        "A.preparation",
        "A",
        _message(AT, NG, T.RETURN_PREPARATION, plan, case_a, consent_a),
    )
    withdrawn = world.consents["withdrawn consent A"]
    await _send(
        world,
        "A.withdrawal",
        "A",
        _message(AT, SHELTER, T.CONSENT_WITHDRAWAL, {}, case_a, withdrawn),
    )

    # Case B: referred and accepted.
    case_b = world.case["B"]
    await _consent(world, "consent", "B", FR, [DE, FR])
    await _consent(world, "spare consent", "B", FR, [DE])
    consent_b = world.consents["consent B"]
    signed = referral(
        FR,
        DE,
        case_ref=case_b,
        consent_ref=consent_b,
        destination_country="DE",
        payload={"identification": CANARY},
    )
    await _send(world, "B.referral", "B", signed)
    await _send(
        world,
        "B.response",
        "B",
        _message(DE, FR, T.REFERRAL_RESPONSE, accepted, case_b, consent_b),
    )

    # Time passes: both referrals become dead letters (with their alerts), and case A's
    # reception is overdue.
    state = broker.app.state.broker
    async with state.sessions() as session:
        for name in ("A.referral", "B.referral"):
            delivery = await message_store.delivery_of(session, world.messages[name])
            assert delivery is not None
            assert await outcomes.dead_letter(session, delivery, now)
            world.dead_letters.add(world.messages[name])
        await session.commit()
    # Operators see a dead letter's id (never its case reference).
    world.secrets = [
        Secret(s.text, s.readers | {broker.operator.participant})
        if s.text in world.dead_letters
        else s
        for s in world.secrets
    ]
    scheduler = AlertScheduler(state.sessions, state.rules())
    assert await scheduler.run_once(now + timedelta(days=10)) == (1, 0)

    world.tree_size = await integrated(broker)
    for name, reader in [("A.referral", AT), ("A.withdrawal", AT), ("B.referral", FR)]:
        status = await broker.status(world.messages[name], reader)
        world.entries[f"entry {name}"] = status.json()["ledger_index"]
    return world


async def integrated(broker: Broker) -> int:
    """Wait until the sequencer has integrated every entry; the tree's size."""
    state = broker.app.state.broker
    async for _ in polling():
        async with state.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(LedgerEntry).where(LedgerEntry.idx.is_(None))
            )
            size = await session.scalar(select(func.count()).select_from(LedgerEntry))
        if pending == 0:
            checkpoint = await broker.client.get("/v1/ledger/checkpoint")
            if f"\n{size}\n" in checkpoint.text:
                return int(size or 0)
        state.wake_sequencer()
    raise AssertionError("the ledger sequencer did not integrate the entries")


async def fingerprint(broker: Broker) -> dict[str, Any]:
    """What a refused write must leave as it was: counts of every kind of stored change."""
    counts: dict[str, Any] = {}
    async with broker.app.state.broker.sessions() as session:

        async def count(name: str, model: Any, *where: Any) -> None:
            query = select(func.count()).select_from(model)
            counts[name] = await session.scalar(query.where(*where) if where else query)

        await count("messages", Message)
        await count("consents", ConsentRecord)
        await count("consents withdrawn", ConsentRecord, ConsentRecord.withdrawn_at.is_not(None))
        await count("participants", Participant)
        await count("keys", ParticipantKey)
        await count("keys revoked", ParticipantKey, ParticipantKey.revoked_at.is_not(None))
        await count("keys ending", ParticipantKey, ParticipantKey.valid_until.is_not(None))
        await count("ledger entries", LedgerEntry)
        await count("alerts", AlertRecord)
        statuses = await session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
        counts["deliveries"] = sorted((status, n) for status, n in statuses.all())
    return counts
