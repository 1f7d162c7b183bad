"""What the fuzzers start from: real signed envelopes, JWS objects, notes and broker answers,
built with the project's own signing helpers, so mutation begins from valid structure.

The keys are fixed (derived from constant bytes): Ed25519 is deterministic, so a signature
made here is the same in every process, and a crash input found once reproduces later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_encode
from trm_broker.crypto.keys import EncryptionKey, HybridEncryptionKey, SigningKey
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.signed_objects import AckClaims, ReceiptClaims
from trm_broker.ledger.note import Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint
from trm_broker.node.compose import compose_envelope

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "signed-note"

SENDER, RECIPIENT = "ng.naptip", "gb.nrm"
MESSAGE_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
REFERRAL_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a50"
CASE_REF = "NG-2025-0001"
CREATED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ORIGIN = "broker.example/trm-ledger"


def _signing_key(byte: int) -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(bytes([byte]) * 32))


#: Signs every JWS seed (envelopes, receipts, acknowledgements) of the jws target.
SEED_KEY = _signing_key(1)
#: The broker's key in the problem target: `GET /v1/broker` names it.
BROKER_KEY = _signing_key(2)
#: A key that signs nothing the targets are given: nothing may ever verify under it.
STRANGER_KEY = _signing_key(3)
RECIPIENT_ENC = EncryptionKey(X25519PrivateKey.from_private_bytes(bytes([4]) * 32))
#: Signs the checkpoint seeds of the note target.
NOTE_SIGNER = NoteSigner(ORIGIN, _signing_key(5))


@dataclass(frozen=True)
class Seed:
    """One starting input, and whether the parser accepts it (False: a documented refusal)."""

    data: bytes
    accepted: bool


# -- envelopes ------------------------------------------------------------------------------


def _headers() -> list[tuple[MessageType, dict[str, Any], str | None]]:
    """One header of each shape the envelope model checks, with the reply it answers."""
    return [
        (MessageType.REFERRAL, {"destination_country": "GB", "subject_is_minor": False}, None),
        (MessageType.REFERRAL_RESPONSE, {"accepted": True}, REFERRAL_ID),
        (
            MessageType.RISK_ASSESSMENT,
            {"risk_level": "high", "return_recommended": False, "assessed_at": "2025-03-02T09:30Z"},
            REFERRAL_ID,
        ),
        (
            MessageType.RETURN_PREPARATION,
            {
                "receiving_org": "gb.nrm",
                "planned_arrival": "2025-04-01T08:00:00+01:00",
                "best_interests_ref": "bia:2025:7",
            },
            REFERRAL_ID,
        ),
        (
            MessageType.CASE_MONITORING,
            {"period_start": "2025-04-01", "period_end": "2025-06-30"},
            REFERRAL_ID,
        ),
        (MessageType.CASE_CLOSURE, {"reason": "reintegrated"}, REFERRAL_ID),
        (MessageType.CONSENT_WITHDRAWAL, {}, None),
    ]


@cache
def signed_envelopes() -> tuple[dict[str, str], ...]:
    """Real envelopes (sealed, then signed by ``SEED_KEY``): one of each message type, and a
    referral sealed with the post-quantum hybrid suite."""
    hybrid = HybridEncryptionKey.generate()
    recipients = [(RECIPIENT_ENC.kid, RECIPIENT_ENC.public_b64, RECIPIENT_ENC.alg)] * len(
        _headers()
    ) + [(hybrid.kid, hybrid.public_b64, hybrid.alg)]
    headers = [*_headers(), _headers()[0]]
    signed: list[dict[str, str]] = []
    for (type_, header, reply_to), (kid, public, alg) in zip(headers, recipients, strict=True):
        _, obj = compose_envelope(
            signing_key=SEED_KEY,
            sender=SENDER,
            recipient=RECIPIENT,
            recipient_enc_kid=kid,
            recipient_enc_public=public,
            recipient_enc_alg=alg,
            type=type_,
            case_ref=CASE_REF,
            header=header,
            payload={"form_of_exploitation": "forced_labour", "notes": ["é", 1, 2.5, None]},
            data_categories=[DataCategory.IDENTITY, DataCategory.HEALTH],
            consent_ref="consent:NG-2025-0001:1" if type_ is MessageType.REFERRAL else None,
            in_reply_to=reply_to,
            now=CREATED_AT,
            message_id=MESSAGE_ID,
        )
        signed.append(obj)
    return tuple(signed)


def envelope_seeds() -> list[Seed]:
    """The signed payloads of the envelopes: their RFC 8785 claims, as the broker reads them;
    and refusals: sent to its sender, a category twice, a header of another type."""
    payloads = [jws.parse(obj, jws.TYP_ENVELOPE).payload for obj in signed_envelopes()]
    referral = json.loads(payloads[0])
    refused = [
        {**referral, "recipient": referral["sender"]},
        {**referral, "data_categories": ["identity", "identity"]},
        {**referral, "header": {"accepted": True}},
    ]
    return [Seed(payload, accepted=True) for payload in payloads] + [
        Seed(json.dumps(claims).encode(), accepted=False) for claims in refused
    ]


# -- JWS --------------------------------------------------------------------------------------


def receipt_claims(envelope: dict[str, str], ledger_index: int | None = None) -> dict[str, Any]:
    """What the broker signs when it has stored ``envelope`` (api/messages/service.py)."""
    claims = ReceiptClaims(
        v=1,
        message_id=MESSAGE_ID,
        envelope_digest=jws.digest(envelope),
        accepted_at="2025-03-01T12:00:01.000Z",
        ledger_index=ledger_index,
        ledger_entry="sha-256:" + "A" * 43,
    )
    return claims.model_dump(mode="json")


def _ack_claims(envelope: dict[str, str], *, rejected: bool = False) -> dict[str, Any]:
    """What the recipient's node signs once it has opened ``envelope``: an acknowledgement,
    or a rejection of a header that says other than the payload."""
    claims = AckClaims(
        v=1,
        message_id=MESSAGE_ID,
        envelope_digest=jws.digest(envelope),
        recipient=RECIPIENT,
        received_at="2025-03-01T12:00:02.000Z",
        status="rejected" if rejected else "received",
        reasons=["header/risk_level: does not match the payload"] if rejected else [],
        code="header-payload-mismatch" if rejected else None,
    )
    return claims.signed_claims()


def _b64url_json(value: Any) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def jws_seeds() -> list[Seed]:
    """Signed envelopes, receipts and acknowledgements, and refusals: ``alg: none``, a
    ``crit`` header, an unprotected ``header`` member, a short signature."""
    envelope = signed_envelopes()[0]
    valid = [
        *signed_envelopes()[:3],
        jws.sign(receipt_claims(envelope), SEED_KEY, jws.TYP_RECEIPT),
        jws.sign(receipt_claims(envelope, ledger_index=7), SEED_KEY, jws.TYP_RECEIPT),
        jws.sign(_ack_claims(envelope), SEED_KEY, jws.TYP_ACK),
        jws.sign(_ack_claims(envelope, rejected=True), SEED_KEY, jws.TYP_ACK),
    ]
    none = {**envelope, "protected": _b64url_json({"alg": "none", "typ": jws.TYP_ENVELOPE})}
    crit = {
        **envelope,
        "protected": _b64url_json(
            {"alg": "EdDSA", "kid": SEED_KEY.kid, "typ": jws.TYP_ENVELOPE, "crit": ["b64"]}
        ),
    }
    refused: list[dict[str, Any]] = [
        none,
        crit,
        {**envelope, "header": {"kid": SEED_KEY.kid}},
        {**envelope, "signature": envelope["signature"][:40]},
    ]
    return [Seed(json.dumps(obj).encode(), accepted=True) for obj in valid] + [
        Seed(json.dumps(obj).encode(), accepted=False) for obj in refused
    ]


# -- signed notes and checkpoints --------------------------------------------------------------


@cache
def go_example() -> dict[str, str]:
    """The published example of the Go implementation (../shared/testdata/signed-note)."""
    path = TESTDATA / "go-example.json"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def note_verifiers() -> list[NoteVerifier]:
    return [NOTE_SIGNER.verifier(), NoteVerifier.from_vkey(go_example()["verifier_key"])]


def _checkpoints() -> list[Checkpoint]:
    return [
        Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest()),
        Checkpoint(ORIGIN, 5, hashlib.sha256(b"root").digest()),
        Checkpoint(ORIGIN, 2**64 - 1, bytes(range(32)), ("extension line", "ünïcödé")),
    ]


def signed_note_texts() -> set[str]:
    """Every note text a known key signed for the seeds: no other text may verify."""
    return {checkpoint.body() for checkpoint in _checkpoints()} | {go_example()["text"]}


def note_seeds() -> list[Seed]:
    """Checkpoints signed by ``NOTE_SIGNER``, one cosigned by an unknown witness and by the Go
    example's key, and the Go example note itself."""
    notes = [sign_checkpoint(checkpoint, NOTE_SIGNER) for checkpoint in _checkpoints()]
    go_signer = NoteSigner.from_skey(go_example()["signer_key"])
    witness = NoteSigner("witness.example", _signing_key(6))
    body = _checkpoints()[1].body()
    lines = [signer.sign(body).rpartition("\n\n")[2] for signer in (witness, go_signer)]
    cosigned = notes[1] + "".join(lines)
    return [
        *(Seed(note.encode(), accepted=True) for note in notes),
        Seed(cosigned.encode(), accepted=True),
        Seed(go_example()["note"].encode(), accepted=True),
        *(Seed(data, accepted=False) for data in _tampered(notes[1])),
    ]


def _tampered(note: str) -> list[bytes]:
    """Refusals: the text changed; invalid UTF-8 in it; a surrogate encoded in it (CESU-8)."""
    data = note.encode()
    return [
        data.replace(b"\n5\n", b"\n6\n", 1),
        data.replace(b"\n5\n", b"\n5\xff\n", 1),
        data.replace(ORIGIN.encode(), ORIGIN.encode() + b"\xed\xa0\x80", 1),
    ]


# -- the broker's answers, as the node's client reads them ------------------------------------

#: Which client call the problem target makes, from its input's first byte.
OP_CALL, OP_SUBMIT, OP_INBOX = 0, 1, 2
#: How the submit call's answer is built, from the input's fourth byte: the body as it is;
#: a receipt the broker signs over the body's JSON; the same with the right envelope digest;
#: that signed by a key that is not the broker's; or by the broker as an acknowledgement.
MODE_RAW, MODE_SIGNED, MODE_SIGNED_DIGEST, MODE_STRANGER, MODE_ACK = range(5)


def problem_input(
    op: int, status: int, body: bytes | dict[str, Any] | list[Any], mode: int = MODE_RAW
) -> bytes:
    """The problem target's input: call, status (two bytes, from 100), mode, body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return bytes([op]) + (status - 100).to_bytes(2, "big") + bytes([mode]) + raw


def submitted_envelope() -> dict[str, str]:
    """The envelope the problem target submits."""
    return signed_envelopes()[0]


def broker_document() -> dict[str, Any]:
    """`GET /v1/broker`, naming ``BROKER_KEY`` (what the node trusts on first use)."""
    return {
        "version": "0.1.0",
        "signing_key": {"kid": BROKER_KEY.kid, "alg": "Ed25519", "public": BROKER_KEY.public_b64},
        "retired_keys": [],
    }


def problem_seeds() -> list[Seed]:
    envelope = submitted_envelope()
    receipt = jws.sign(receipt_claims(envelope), BROKER_KEY, jws.TYP_RECEIPT)
    problem = {
        "type": "https://trm.example/problems/invalid-envelope",
        "title": "Invalid envelope",
        "status": 422,
        "detail": "The envelope does not match the schema; fix: header.",
        "fields": ["header"],
    }
    item = {"cursor": 3, "message_id": MESSAGE_ID, "envelope": envelope, "receipt": receipt}
    return [
        Seed(problem_input(OP_CALL, 200, {"state": "delivered"}), accepted=True),
        Seed(problem_input(OP_CALL, 422, problem), accepted=False),
        Seed(problem_input(OP_CALL, 502, b"<html>Bad gateway</html>"), accepted=False),
        Seed(problem_input(OP_CALL, 409, [problem]), accepted=False),
        Seed(problem_input(OP_SUBMIT, 201, {"receipt": receipt}), accepted=True),
        Seed(problem_input(OP_SUBMIT, 200, receipt_claims(envelope), MODE_SIGNED), accepted=True),
        Seed(
            problem_input(OP_SUBMIT, 200, {"message_id": MESSAGE_ID}, MODE_SIGNED_DIGEST),
            accepted=False,
        ),
        Seed(
            problem_input(OP_SUBMIT, 200, receipt_claims(envelope), MODE_STRANGER),
            accepted=False,
        ),
        Seed(problem_input(OP_SUBMIT, 200, receipt_claims(envelope), MODE_ACK), accepted=False),
        Seed(problem_input(OP_SUBMIT, 403, {**problem, "rule": "R1"}), accepted=False),
        Seed(problem_input(OP_INBOX, 200, {"items": [item], "next": 3}), accepted=True),
        Seed(problem_input(OP_INBOX, 200, {"items": [], "next": None}), accepted=True),
        Seed(problem_input(OP_INBOX, 200, {"items": [{"cursor": "x"}]}), accepted=False),
        Seed(problem_input(OP_INBOX, 401, {"title": "Unauthorized"}), accepted=False),
        # Crashes found here once (tests/node/test_broker_client.py): answers that raised
        # RecursionError, OverflowError, ValueError or KeyError instead of BrokerError.
        Seed(problem_input(OP_CALL, 400, b"[" * 5000), accepted=False),
        Seed(problem_input(OP_SUBMIT, 201, b"<html>Created</html>"), accepted=False),
        Seed(problem_input(OP_SUBMIT, 201, [receipt]), accepted=False),
        Seed(problem_input(OP_INBOX, 200, b"[" * 5000), accepted=False),
        Seed(problem_input(OP_INBOX, 200, b'{"items": [], "next": Infinity}'), accepted=False),
        Seed(
            problem_input(OP_INBOX, 200, b'{"items": [{"cursor": -Infinity}], "next": 1}'),
            accepted=False,
        ),
    ]
