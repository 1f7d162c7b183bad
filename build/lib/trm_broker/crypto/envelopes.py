"""The one envelope verifier: the broker, the node and the test vectors all call it.

An envelope is a JWS in flattened JSON (RFC 7515 §7.2.2, EdDSA) whose payload is the RFC
8785 canonical JSON of the envelope model (docs/design.md §5). Verification is written as
numbered steps; each refusal is a :class:`~trm_broker.crypto.errors.VerificationError` whose
``code`` is one of the stable codes the published vectors name (``contracts/README.md``,
"Error codes"). The web layer answers each code with one problem (``web/refusals.py``).

Keys are looked up through a callable the caller passes: the broker reads its registry, a
node asks the broker. Both are asynchronous, so the lookups are too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.errors import Code, CryptoError, MalformedError, VerificationError
from trm_broker.crypto.jws import ParsedJws
from trm_broker.crypto.keys import AnyEncryptionKey, load_ed25519_public
from trm_broker.crypto.seal import Binding, open_sealed
from trm_broker.domain.envelope import Envelope, is_fresh
from trm_broker.domain.schema_errors import error_location

__all__ = [
    "Code",
    "KeyLookup",
    "KeyRecord",
    "ReceiptSigner",
    "ReceiptSignerLookup",
    "VerificationError",
    "VerifiedEnvelope",
    "VerifiedPush",
    "VerifiedReceipt",
    "open_payload",
    "parse",
    "require_fresh",
    "verify_envelope",
    "verify_push",
    "verify_receipt",
]


@dataclass(frozen=True)
class KeyRecord:
    """A registry key as a verifier needs it, wherever it was read from."""

    kid: str
    participant: str
    use: str
    public: str  # base64url, 32 bytes for an Ed25519 key
    valid_from: datetime
    valid_until: datetime | None = None
    revoked_at: datetime | None = None

    def valid_at(self, moment: datetime) -> bool:
        """Inside its validity and not revoked at ``moment``: a signature made then counts.

        One rule for both ends (docs/design.md §4): the broker judges a key at the time it
        accepts, a node at the broker's signed acceptance time, since delivery may come
        long after (outages, retries) and a revocation must not undo an accepted message.
        """
        if self.valid_from > moment:
            return False
        if self.revoked_at is not None and self.revoked_at <= moment:
            return False
        return self.valid_until is None or moment < self.valid_until


#: Finds a registry key by ``kid``; ``None`` when there is none.
KeyLookup = Callable[[str], Awaitable[KeyRecord | None]]


class ReceiptSigner(Protocol):
    """One of the broker's keys, as a node knows it from `GET /v1/broker`."""

    @property
    def public(self) -> Ed25519PublicKey: ...

    def vouches_for_acceptance_at(self, accepted_at: datetime) -> bool: ...


#: Finds the broker's key (current or retired) by ``kid``; ``None`` when the broker names none.
ReceiptSignerLookup = Callable[[str], Awaitable[ReceiptSigner | None]]


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope whose signature, form and signer all check out."""

    envelope: Envelope
    kid: str
    digest: str  # what receipts and acknowledgements name (jws.digest)


@dataclass(frozen=True)
class VerifiedReceipt:
    message_id: str
    accepted_at: datetime
    #: Every signed claim (ledger index, envelope digest, …), checked as above.
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class VerifiedPush:
    """A push (`POST /inbox`, or an item of the pull inbox): the envelope the broker accepted."""

    envelope: VerifiedEnvelope
    receipt: VerifiedReceipt


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse(obj: object, typ: str) -> ParsedJws:
    """Step 1: the JWS structure and protected header (RFC 7515 §5.2 steps 1-5): EdDSA only
    (``unsupported-alg``), the expected ``typ`` (``wrong-typ``), else ``malformed``."""
    try:
        return jws.parse(obj, typ)
    except VerificationError as exc:
        what = "envelope" if typ == jws.TYP_ENVELOPE else "receipt"
        raise VerificationError(
            f"The {what} is not acceptable: {exc}; send a flattened JWS signed with EdDSA.",
            code=exc.code,
        ) from exc


async def verify_envelope(obj: object, keys: KeyLookup, *, at: datetime) -> VerifiedEnvelope:
    """Verify a signed envelope whose key must be valid ``at`` (see :meth:`KeyRecord.valid_at`).

    Freshness is separate (:func:`require_fresh`): the broker checks it only after it has
    looked for the same envelope accepted before, and a node not at all.
    """
    return await _verified(parse(obj, jws.TYP_ENVELOPE), obj, keys, at)


async def _verified(
    parsed: ParsedJws, obj: object, keys: KeyLookup, at: datetime
) -> VerifiedEnvelope:
    kid = parsed.kid
    # 2. The signing key, from the registry: known, a signing key, valid at ``at``. Until
    #    found there the kid is the caller's text, so it is not named.
    key = await keys(kid)
    if key is None or key.use != "sig":
        raise VerificationError(
            "No registered signing key has the envelope's kid; sign with your registry key.",
            code=Code.UNKNOWN_KEY,
        )
    if not key.valid_at(at):
        raise VerificationError(
            f"Signing key {kid} is revoked or outside its validity at {_rfc3339(at)}; "
            "sign with a current key.",
            code=Code.KEY_NOT_USABLE,
            kid=kid,
        )

    # 3. The signature over the signing input (RFC 7515 §5.2 step 8; RFC 8037 §3.1).
    try:
        jws.verify(parsed, load_ed25519_public(key.public))
    except VerificationError as exc:
        raise VerificationError(
            f"The envelope's signature does not verify with key {kid}; sign the exact "
            "protected header and payload sent, with the key the header names.",
            code=Code.BAD_SIGNATURE,
            kid=kid,
        ) from exc

    # 4. The payload is RFC 8785 canonical JSON (one byte string per envelope, so every
    #    party computes the same digest) of an object.
    try:
        claims = parsed.claims()
    except MalformedError as exc:
        raise VerificationError(
            f"The signed payload is not acceptable: {exc}; sign the RFC 8785 canonical JSON "
            "of the envelope.",
            code=exc.code,
        ) from exc

    # 5. The envelope model (docs/design.md §5; contracts/schemas/envelope.v1.json).
    try:
        envelope = Envelope.model_validate(claims)
    except ValidationError as exc:
        fields = tuple(sorted({error_location(e) or "envelope" for e in exc.errors()}))
        raise VerificationError(
            "The envelope does not match the schema; fix: " + ", ".join(fields) + ".",
            code=Code.SCHEMA_MISMATCH,
            fields=fields,
        ) from exc

    # 6. The signer is the sender: a registered key speaks only for its own participant.
    if envelope.sender != key.participant:
        raise VerificationError(
            f"Key {kid} belongs to {key.participant}, not to sender {envelope.sender}; "
            "a participant signs only its own messages, with its own key.",
            code=Code.SENDER_MISMATCH,
            kid=kid,
        )
    return VerifiedEnvelope(envelope=envelope, kid=kid, digest=jws.digest(_object(obj)))


def require_fresh(envelope: Envelope, now: datetime, skew: timedelta) -> None:
    """Step 7, at the broker: ``created_at`` within ``skew`` of ``now`` (the replay window)."""
    if not is_fresh(envelope.created_at, now, skew):
        raise VerificationError(
            f"created_at is more than {int(skew.total_seconds())} s from the broker's clock; "
            "check the sender's clock and send a new envelope.",
            code=Code.STALE,
        )


async def verify_receipt(
    receipt: object, envelope: object, signers: ReceiptSignerLookup
) -> VerifiedReceipt:
    """The broker's receipt, for exactly this envelope object; returns its acceptance time.

    1. A JWS of typ ``trm-receipt+jws``; 2. signed by a key the broker names
    (``not-broker-key``); 3. the signature (``bad-signature``); 4. its ``envelope_digest``
    and ``message_id`` are this envelope's (``digest-mismatch``); 5. a retired broker key
    vouches only for what was accepted before it was retired (``not-broker-key``).
    """
    parsed = parse(receipt, jws.TYP_RECEIPT)
    return await _verified_receipt(parsed, _object(envelope), signers)


async def _verified_receipt(
    parsed: ParsedJws, envelope: dict[str, Any], signers: ReceiptSignerLookup
) -> VerifiedReceipt:
    signer = await signers(parsed.kid)
    if signer is None:
        raise VerificationError(
            "The receipt is not signed by a key of the broker; only the broker's receipts "
            "are accepted.",
            code=Code.NOT_BROKER_KEY,
        )
    try:
        jws.verify(parsed, signer.public)
        claims = parsed.claims()
    except VerificationError as exc:
        raise VerificationError(
            "The broker's receipt does not verify; send the receipt exactly as the broker "
            "signed it.",
            code=exc.code,
        ) from exc
    # The digest first: once it matches, the envelope is the very object the broker
    # accepted, and its id (read before its signature is checked) is the one accepted.
    same_digest = claims.get("envelope_digest") == jws.digest(envelope)
    if not same_digest or claims.get("message_id") != _claim(envelope, "id"):
        raise VerificationError(
            "The broker's receipt is for another envelope; send each envelope with its own "
            "receipt.",
            code=Code.DIGEST_MISMATCH,
        )
    try:
        accepted_at = datetime.fromisoformat(str(claims["accepted_at"]))
    except (KeyError, ValueError) as exc:
        raise MalformedError("The broker's receipt has no valid accepted_at.") from exc
    if accepted_at.tzinfo is None:
        raise MalformedError("The broker's receipt has no valid accepted_at.")
    if not signer.vouches_for_acceptance_at(accepted_at):
        raise VerificationError(
            "The receipt is signed by a key the broker had retired before that acceptance.",
            code=Code.NOT_BROKER_KEY,
        )
    return VerifiedReceipt(
        message_id=str(claims["message_id"]), accepted_at=accepted_at, claims=dict(claims)
    )


async def verify_push(push: object, keys: KeyLookup, signers: ReceiptSignerLookup) -> VerifiedPush:
    """What a node checks of a push before opening it (contracts/README.md, "Receiving").

    1. ``{envelope, receipt}``, each a JWS of its typ. Without the receipt anyone reaching
       the inbox could skip every check the broker makes.
    2. The receipt is the broker's, for exactly this envelope (:func:`verify_receipt`).
    3. The envelope verifies with a key of its sender valid at the broker's signed
       acceptance time, not at a ``created_at`` the sender chose (:func:`verify_envelope`).
    """
    if not isinstance(push, dict) or set(push) != {"envelope", "receipt"}:
        raise MalformedError(
            "The body must be {envelope, receipt}, each a flattened JWS.", code=Code.MALFORMED
        )
    envelope = parse(push["envelope"], jws.TYP_ENVELOPE)
    receipt = parse(push["receipt"], jws.TYP_RECEIPT)
    verified_receipt = await _verified_receipt(receipt, push["envelope"], signers)
    verified = await _verified(envelope, push["envelope"], keys, verified_receipt.accepted_at)
    return VerifiedPush(envelope=verified, receipt=verified_receipt)


def open_payload(envelope: Envelope, opener: AnyEncryptionKey) -> tuple[bytes, Any]:
    """Open the sealed payload with the recipient's key (RFC 9180); the HPKE ``info`` binds
    it to this envelope's id, type, case and parties, so a ciphertext moved into another
    envelope does not open (``seal-does-not-open``). Returns the plaintext and its JSON."""
    binding = Binding(
        id=envelope.id,
        type=envelope.type.value,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
    )
    try:
        plaintext = open_sealed(envelope.sealed.model_dump(), opener, binding)
        return plaintext, json.loads(plaintext)
    except (CryptoError, ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
        raise VerificationError(
            "The sealed payload does not open for this envelope; seal it to the recipient's "
            "current key, bound to this envelope.",
            code=Code.SEAL_DOES_NOT_OPEN,
        ) from exc


def _claim(envelope: dict[str, Any], name: str) -> object:
    """A claim of an envelope not verified yet, read as plain JSON (``None`` if unreadable):
    whether its payload is canonical is the envelope check's to say, after this one."""
    try:
        claims = json.loads(b64url_decode(str(envelope.get("payload"))))
    except (ValueError, RecursionError, VerificationError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def _object(obj: object) -> dict[str, Any]:
    """The JWS object, once parsed (``jws.parse`` has checked it is a dict of strings)."""
    if not isinstance(obj, dict):
        raise MalformedError("a JWS must be an object")
    return obj
