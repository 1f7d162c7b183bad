"""Which registry keys a node that pins the operator's keys believes: those a statement by a
pinned operator key states, exactly as the registry lists them; and how pins are read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from trm_broker.crypto import key_statements
from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.node.trust import (
    NO_STATEMENT,
    NOT_BY_PINNED_OPERATOR,
    STATEMENT_MISMATCH,
    NodeTrust,
    pin_entry,
    read_pins,
)
from trm_broker.settings import Settings

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OPERATOR = KeySet.generate("operator.trm")
NG = KeySet.generate("ng.naptip")
AT = KeySet.generate("at.focal-point")


def keys_of(keyset: KeySet) -> list[dict[str, Any]]:
    public = keyset.public()
    return [
        {**public["signing"], "use": "sig"},
        {**public["encryption"], "use": "enc"},
    ]


def entry(
    keyset: KeySet, statements: list[dict[str, str]], kind: str = "focal_point"
) -> dict[str, Any]:
    """A participant as `GET /v1/participants` lists it."""
    return {
        "id": keyset.participant,
        "kind": kind,
        "keys": keys_of(keyset),
        "changes": [{"action": "participant.registered", "statements": statements}],
    }


def stated(keyset: KeySet, by: SigningKey = OPERATOR.signing) -> list[dict[str, str]]:
    return key_statements.for_key_set(by, keyset.participant, keyset.public(), NOW)


def trust() -> NodeTrust:
    pinned = read_pins(pin_entry(OPERATOR.signing.kid, OPERATOR.signing.public_b64), "X")
    return NodeTrust(operator_keys=pinned)


def test_keys_stated_by_a_pinned_operator_key_are_believed() -> None:
    registry = [entry(OPERATOR, [], kind="operator"), entry(NG, stated(NG))]
    # The operator's own signing key is believed as pinned; its encryption key, which
    # nobody stated, is not (no node seals to an operator).
    assert trust().unproven_keys(registry) == {OPERATOR.encryption.kid: NO_STATEMENT}


def test_a_key_with_no_statement_is_not_believed() -> None:
    assert trust().unproven_keys([entry(NG, [])]) == {
        NG.signing.kid: NO_STATEMENT,
        NG.encryption.kid: NO_STATEMENT,
    }


def test_a_statement_signed_by_a_key_the_node_does_not_pin_is_not_believed() -> None:
    # Someone holding the broker's database added an operator key of their own, and signed
    # statements with it.
    intruder = SigningKey.generate()
    assert trust().unproven_keys([entry(NG, stated(NG, by=intruder))]) == {
        NG.signing.kid: NOT_BY_PINNED_OPERATOR,
        NG.encryption.kid: NOT_BY_PINNED_OPERATOR,
    }


def test_a_statement_moved_to_another_key_or_participant_is_not_believed() -> None:
    # AT's real statements under NG, whose keys were swapped for AT's: the kid is stated,
    # but for another participant.
    moved = entry(NG, stated(AT))
    moved["keys"] = keys_of(AT)
    assert trust().unproven_keys([moved]) == {
        AT.signing.kid: STATEMENT_MISMATCH,
        AT.encryption.kid: STATEMENT_MISMATCH,
    }
    # NG's stated kid, but another public key under it.
    swapped = entry(NG, stated(NG))
    swapped["keys"][1]["public"] = AT.encryption.public_b64
    assert trust().unproven_keys([swapped]) == {NG.encryption.kid: STATEMENT_MISMATCH}


def test_a_statement_whose_signature_does_not_verify_is_as_good_as_none() -> None:
    statements = stated(NG)
    forged = {**statements[0], "signature": statements[1]["signature"]}
    assert trust().unproven_keys([entry(NG, [forged, statements[1]])]) == {
        NG.signing.kid: NO_STATEMENT
    }


def test_a_node_that_pins_no_operator_key_believes_the_registry_as_served() -> None:
    assert NodeTrust().unproven_keys([entry(NG, [])]) == {}


def test_pins_are_read_and_a_kid_copied_wrong_is_refused_naming_the_setting() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    value = f" {pin_entry(key.kid, key.public_b64)} ,{pin_entry(other.kid, other.public_b64)}"
    assert set(read_pins(value, "TRM_NODE_BROKER_KEYS") or {}) == {key.kid, other.kid}
    assert read_pins(None, "TRM_NODE_BROKER_KEYS") is None
    with pytest.raises(MalformedError, match=r"^TRM_NODE_BROKER_KEYS: .* is not the key id"):
        read_pins(pin_entry(key.kid, other.public_b64), "TRM_NODE_BROKER_KEYS")
    with pytest.raises(MalformedError, match=r"^TRM_NODE_OPERATOR_KEYS: .* not an Ed25519"):
        read_pins(pin_entry(key.kid, "A" * 43), "TRM_NODE_OPERATOR_KEYS")


@pytest.mark.parametrize(
    "value",
    ["kid", "a" * 43, "a" * 43 + "=" + "b" * 42, ",".join(["a" * 43 + "=" + "b" * 43] * 17)],
)
def test_a_pin_setting_of_another_form_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="node_broker_keys"):
        Settings(node_broker_keys=value)


def test_an_empty_pin_setting_is_no_pin() -> None:
    assert Settings(node_broker_keys=" ", node_operator_keys="").node_broker_keys is None
