"""An operator's key statement: "key ``kid`` is participant ``participant``'s", signed with the
operator's own signing key (docs/design.md §4).

The operator's tools sign one statement for each key they register or add, and send it in
the same signed request (``statements`` of `POST /v1/participants`, ``statement`` of
`POST /v1/participants/{id}/keys`). The broker checks it against the request and publishes it
with the change (``changes[].statements`` in `GET /v1/participants`). A node that pins the
operator's keys believes a registry key only with such a statement
(``trm_broker/node/trust.py``), so a key written straight into the broker's database, with no
operator's signature behind it, is not believed.

A statement says nothing of a key's validity in time (``valid_from``, ``valid_until``,
``revoked_at``): the registry says that, and a revocation only ever restricts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from trm_broker.crypto import jws
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.signed_objects import KeyStatementClaims
from trm_broker.domain.times import rfc3339

#: The members of a registry key a statement binds, as `GET /v1/participants` lists them.
BOUND = ("kid", "use", "alg", "public")


@dataclass(frozen=True)
class KeyStatement:
    """A statement whose structure is valid; ``signer`` is the operator key id that signed
    it (not yet checked)."""

    signer: str
    claims: KeyStatementClaims
    parsed: jws.ParsedJws

    def states(self, participant: str, key: Mapping[str, Any]) -> bool:
        """Whether it says that ``key`` (kid, use, alg, public) is ``participant``'s."""
        return self.claims.participant == participant and all(
            getattr(self.claims, name) == key.get(name) for name in BOUND
        )


def sign(
    operator: SigningKey, participant: str, key: Mapping[str, Any], now: datetime
) -> dict[str, str]:
    """The operator's statement that ``key`` (``kid``, ``use``, ``alg``, ``public``) is
    ``participant``'s."""
    claims = KeyStatementClaims(
        v=1,
        participant=participant,
        kid=str(key["kid"]),
        use=key["use"],
        alg=key["alg"],
        public=str(key["public"]),
        stated_at=rfc3339(now),
    )
    return jws.sign(claims.model_dump(mode="json"), operator, jws.TYP_KEY_STATEMENT)


def for_key_set(
    operator: SigningKey, participant: str, public: Mapping[str, Any], now: datetime
) -> list[dict[str, str]]:
    """The two statements of a registration: ``public`` is a key set's public half as
    `trm-broker keys new` prints it under ``keys`` (``signing``, ``encryption``)."""
    return [
        sign(operator, participant, {**public[name], "use": use}, now)
        for name, use in (("signing", "sig"), ("encryption", "enc"))
    ]


def read(obj: object) -> KeyStatement:
    """A statement's structure and claims, its signature not yet checked."""
    parsed = jws.parse(obj, jws.TYP_KEY_STATEMENT)
    try:
        claims = KeyStatementClaims.model_validate(parsed.claims())
    except ValidationError as exc:
        raise VerificationError(
            "The key statement's claims are not those of schemas/key-statement.v1.json.",
            code=Code.SCHEMA_MISMATCH,
        ) from exc
    return KeyStatement(parsed.kid, claims, parsed)


def verify(obj: object, signers: Mapping[str, Ed25519PublicKey]) -> KeyStatement:
    """A statement signed by one of ``signers`` (operator key id: public key)."""
    statement = read(obj)
    public = signers.get(statement.signer)
    if public is None:
        raise VerificationError(
            "The key statement is not signed by a trusted operator key.", code=Code.UNKNOWN_KEY
        )
    jws.verify(statement.parsed, public)
    return statement


__all__ = ["BOUND", "KeyStatement", "for_key_set", "read", "sign", "verify"]
