"""What a node believes of what the broker serves (docs/node.md, "Pinning the broker's and
the operator's keys"; docs/security.md).

Two pins, each optional, each a list of Ed25519 keys as ``<kid>=<public key>``:

- ``TRM_NODE_BROKER_KEYS``: the broker's signing keys. A receipt or a push is believed only
  if signed by one of them, whatever `GET /v1/broker` serves: a broker whose key was swapped
  is refused. `GET /v1/broker` still says which pinned key is current and when one was
  retired, which only ever restricts. Unset: the keys the broker serves, on first use.
- ``TRM_NODE_OPERATOR_KEYS``: the operator's signing keys. A registry key (to seal to, or to
  verify an envelope with) is believed only if a key statement signed by one of them says it
  is that participant's (``crypto/key_statements.py``): a key written straight into the
  broker's database has none. Unset: the registry as the broker serves it.

The trust chain: the node's operator checks the pins out of band (the kids and keys the
broker's operator publishes, e.g. as `trm-broker node pins` prints them); the broker's key
vouches for acceptances (receipts) and pushes; the operator's key vouches for each
participant's keys; each participant's key vouches for its envelopes and acknowledgements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trm_broker.crypto import key_statements
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.errors import CryptoError, MalformedError, VerificationError
from trm_broker.crypto.keys import check_ed25519_public, key_id
from trm_broker.settings import Settings
from trm_broker.web.problems import InvalidRequest, KeyNotProven

if TYPE_CHECKING:
    from trm_broker.node.broker_client import RegisteredKey, Registry

log = structlog.get_logger("trm_broker.node")

#: Why a registry key is not believed (the ``reason`` of the log line).
NO_STATEMENT = "no_operator_statement"
NOT_BY_PINNED_OPERATOR = "statement_not_by_a_pinned_operator_key"
STATEMENT_MISMATCH = "statement_does_not_match_the_registry"


def read_pins(value: str | None, variable: str) -> dict[str, bytes] | None:
    """``<kid>=<public key>, …`` as raw Ed25519 public keys by kid; ``None`` when unset.

    Each kid must be its key's RFC 7638 thumbprint, so a key copied wrong is refused at
    start, not found missing at the first receipt."""
    if value is None:
        return None
    pins: dict[str, bytes] = {}
    for entry in value.split(","):
        kid, _, public = entry.strip().partition("=")
        try:
            raw = b64url_decode(public)
            if len(raw) != 32:
                raise MalformedError("not 32 bytes")
            check_ed25519_public(raw)
        except CryptoError as exc:
            raise MalformedError(
                f"{variable}: the key pinned as {kid} is not an Ed25519 public key"
            ) from exc
        if key_id("Ed25519", raw) != kid:
            raise MalformedError(
                f"{variable}: {kid} is not the key id of the key pinned with it; copy the "
                "value `trm-broker node pins` prints"
            )
        pins[kid] = raw
    return pins


def load_trust(settings: Settings) -> NodeTrust:
    """The node's pins, or exit naming the setting whose key is wrong (at start)."""
    try:
        return NodeTrust.from_settings(settings)
    except MalformedError as exc:
        raise SystemExit(str(exc)) from None


def pin_entry(kid: str, public_b64: str) -> str:
    """One pinned key as the settings take it."""
    return f"{kid}={public_b64}"


@dataclass
class NodeTrust:
    """The node's pins; ``None`` for a pin that is not set (trust on first use)."""

    broker_keys: Mapping[str, bytes] | None = None
    operator_keys: Mapping[str, bytes] | None = None
    #: Statements already checked, by their signature: the registry is read every minute
    #: and before every send, and its statements rarely change.
    _checked: dict[str, key_statements.KeyStatement | None] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeTrust:
        """The pins of TRM_NODE_BROKER_KEYS and TRM_NODE_OPERATOR_KEYS (MalformedError names
        the setting whose key is wrong)."""
        return cls(
            read_pins(settings.node_broker_keys, "TRM_NODE_BROKER_KEYS"),
            read_pins(settings.node_operator_keys, "TRM_NODE_OPERATOR_KEYS"),
        )

    def status(self) -> dict[str, str]:
        """What the node trusts, for `GET /healthz`."""
        return {
            "broker_keys": "first-use" if self.broker_keys is None else "pinned",
            "registry_keys": "as-served" if self.operator_keys is None else "operator-signed",
        }

    def log_at_start(self) -> None:
        """Warn of what is trusted on first use: the node's operator should pin it
        (`trm-broker node pins` prints the values)."""
        if self.broker_keys is None:
            log.warning("broker_keys_not_pinned", setting="TRM_NODE_BROKER_KEYS")
        if self.operator_keys is None:
            log.warning("operator_keys_not_pinned", setting="TRM_NODE_OPERATOR_KEYS")

    # --- the broker's keys -----------------------------------------------------------------

    def may_be_broker_key(self, kid: str) -> bool:
        """Whether a key named ``kid`` could be believed at all (not pinned: never)."""
        return self.broker_keys is None or kid in self.broker_keys

    def believes_broker_key(self, kid: str, public_b64: str) -> bool:
        """Whether the key the broker serves as ``kid`` is one the node believes."""
        if self.broker_keys is None:
            return True
        pinned = self.broker_keys.get(kid)
        try:
            return pinned is not None and b64url_decode(public_b64) == pinned
        except MalformedError:
            return False

    # --- the registry's keys ---------------------------------------------------------------

    def unproven_keys(self, participants: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Each registry key no statement by a pinned operator key backs, with why; empty
        when the operator's keys are not pinned (every key is believed as served).

        ``participants`` is `GET /v1/participants`' list: each participant's ``keys``, and
        its ``changes`` with their ``statements``."""
        if self.operator_keys is None:
            return {}
        listed = list(participants)
        signers = {
            kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in self.operator_keys.items()
        }
        statements = [
            checked
            for participant in listed
            for change in participant.get("changes") or ()
            for obj in change.get("statements") or ()
            if (checked := self._checked_statement(obj, signers)) is not None
        ]
        trusted: dict[str, list[key_statements.KeyStatement]] = {}
        untrusted: set[str] = set()
        for statement in statements:
            if statement.signer in signers:
                trusted.setdefault(statement.claims.kid, []).append(statement)
            else:
                untrusted.add(statement.claims.kid)
        unproven: dict[str, str] = {}
        for participant in listed:
            for key in participant.get("keys") or ():
                kid = str(key.get("kid"))
                stating = trusted.get(kid, [])
                if self._is_pinned_operator_key(key) or any(
                    s.states(str(participant.get("id")), key) for s in stating
                ):
                    continue
                if stating:
                    unproven[kid] = STATEMENT_MISMATCH
                elif kid in untrusted:
                    unproven[kid] = NOT_BY_PINNED_OPERATOR
                else:
                    unproven[kid] = NO_STATEMENT
        return unproven

    def _is_pinned_operator_key(self, key: Mapping[str, Any]) -> bool:
        pinned = (self.operator_keys or {}).get(str(key.get("kid")))
        try:
            return pinned is not None and b64url_decode(str(key.get("public"))) == pinned
        except MalformedError:
            return False

    def _checked_statement(
        self, obj: object, signers: Mapping[str, Ed25519PublicKey]
    ) -> key_statements.KeyStatement | None:
        """A statement whose structure is valid and, if its signer is pinned, whose signature
        verifies; ``None`` otherwise (a forged one is as good as none)."""
        memo = (
            ".".join(str(obj.get(name)) for name in ("protected", "payload", "signature"))
            if isinstance(obj, dict)
            else None
        )
        if memo is not None and memo in self._checked:
            return self._checked[memo]
        try:
            statement = key_statements.read(obj)
            if statement.signer in signers:
                statement = key_statements.verify(obj, signers)
        except VerificationError:
            statement = None
        if memo is not None:
            if len(self._checked) > 10_000:  # a registry that big is not expected; stay bounded
                self._checked.clear()
            self._checked[memo] = statement
        return statement


def sealing_key(registry: Registry, recipient: str, now: datetime) -> RegisteredKey:
    """The recipient's encryption key to seal to: its newest usable key the node believes.

    A newer key that no operator's statement backs is passed over (and logged): sealing to it
    could hand the payload to whoever wrote it into the broker's database. With no believed
    key left, the message is refused (502 `key-not-proven`)."""
    chosen = registry.encryption_key(recipient, now)
    unproven = registry.unproven_encryption_keys(recipient, now)
    for key in unproven:
        if chosen is None or key.valid_from > chosen.valid_from:
            log.warning(
                "registry_key_not_proven",
                participant=recipient,
                kid=key.kid,
                use="enc",
                reason=registry.unproven.get(key.kid),
                action="not sealed to",
            )
    if chosen is not None:
        return chosen
    if unproven:
        refusal = KeyNotProven(
            f"{recipient}'s encryption key in the broker's registry is not backed by a "
            "statement of the operator's key this node pins, so nothing is sealed to it. "
            "Nothing was sent: ask the broker's operator to check the registry (it may have "
            "been tampered with) and to re-register the key with `trm-broker participants`.",
            kid=unproven[0].kid,
            rule="registry_key_not_proven",
        )
        refusal.status = 502  # the broker's registry is at fault, not the case worker
        raise refusal
    raise InvalidRequest(f"{recipient} has no current encryption key in the registry.")
