"""One family for every failed check, so callers never catch a stray ValueError.

Every verification failure is a :class:`VerificationError` carrying a stable :class:`Code`:
the codes the published test vectors name (``contracts/vectors/vectors.json``), so this
package, the vectors and any other implementation agree on why something is refused.
``contracts/README.md`` ("Error codes") lists them with the problem each is answered with.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """Why a verification refused its input. Stable: other implementations rely on them."""

    #: Not of the expected form: not a flattened JWS, bad base64url, bad JSON, a missing member.
    MALFORMED = "malformed"
    #: The JWS ``alg`` is not EdDSA, or the header asks for ``crit`` extensions.
    UNSUPPORTED_ALG = "unsupported-alg"
    #: The JWS ``typ`` names another kind of signed object (a receipt sent as an envelope).
    WRONG_TYP = "wrong-typ"
    #: The ``kid`` is not a registered signing key.
    UNKNOWN_KEY = "unknown-key"
    #: The key is registered but revoked, expired or not yet valid at the time it is judged at.
    KEY_NOT_USABLE = "key-not-usable"
    #: The signature does not verify with the key named.
    BAD_SIGNATURE = "bad-signature"
    #: The signed payload is JSON, but not in RFC 8785 canonical form.
    NOT_CANONICAL = "not-canonical"
    #: The signed payload is canonical JSON, but not an envelope of the schema.
    SCHEMA_MISMATCH = "schema-mismatch"
    #: The key that signed the envelope is not a key of the envelope's ``sender``.
    SENDER_MISMATCH = "sender-mismatch"
    #: Outside the clock-skew window: an envelope's ``created_at``, a request's ``created``.
    STALE = "stale"
    #: A digest does not match what it names: a receipt for another envelope, a request's
    #: Content-Digest that is not its body's.
    DIGEST_MISMATCH = "digest-mismatch"
    #: A receipt or push that the broker's key did not sign (or signed after retiring it).
    NOT_BROKER_KEY = "not-broker-key"
    #: The sealed payload does not open for this envelope (wrong key, moved ciphertext).
    SEAL_DOES_NOT_OPEN = "seal-does-not-open"
    #: A signed request's nonce was already spent: a replay.
    REPLAYED = "replayed"
    #: The key is in the broker's registry, but no statement signed by an operator key the
    #: node pins says it is the participant's (a key written straight into the database).
    KEY_NOT_PROVEN = "key-not-proven"


class CryptoError(Exception):
    """Base of every error raised by :mod:`trm_broker.crypto`."""


class VerificationError(CryptoError):
    """A signature, digest or structure did not verify; ``code`` says which check refused.

    The message is fixed text written by the check (safe to answer with: it never quotes
    the input), and ``kid`` is set only for a key found in the registry, so it may be named.
    ``fields`` lists, for a schema mismatch, the locations to fix (never the values).
    """

    code: Code = Code.BAD_SIGNATURE

    def __init__(
        self,
        reason: str = "",
        *,
        code: Code | None = None,
        kid: str | None = None,
        fields: tuple[str, ...] = (),
    ) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code
        self.kid = kid
        self.fields = fields


class MalformedError(VerificationError):
    """The input is not of the expected form (bad base64, bad JSON, missing member)."""

    code = Code.MALFORMED


class SealError(CryptoError):
    """A sealed payload could not be opened (wrong key, moved ciphertext, tampering)."""
