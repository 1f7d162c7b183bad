"""What a node trusts a broker key for: the current key for everything; a retired one for
receipts of messages accepted before its retirement, and for pushes during an hour. And
where the node's own keys come from: files, then the environment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import KeySet, SigningKey, load_ed25519_public
from trm_broker.node.broker_client import PUSH_GRACE, BrokerKey
from trm_broker.node.keyring import Keyring

RETIRED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PUBLIC = load_ed25519_public(SigningKey.generate().public_b64)


def test_the_current_key_vouches_for_every_acceptance_and_push() -> None:
    current = BrokerKey("kid", PUBLIC)
    assert current.vouches_for_acceptance_at(RETIRED_AT + timedelta(days=900))
    assert current.signs_pushes_at(RETIRED_AT + timedelta(days=900))


def test_a_retired_key_vouches_only_for_acceptances_before_its_retirement() -> None:
    retired = BrokerKey("kid", PUBLIC, RETIRED_AT)
    assert retired.vouches_for_acceptance_at(RETIRED_AT - timedelta(microseconds=1))
    assert not retired.vouches_for_acceptance_at(RETIRED_AT)
    assert not retired.vouches_for_acceptance_at(RETIRED_AT + timedelta(days=1))


def test_a_retired_key_signs_pushes_only_during_the_grace_after_its_retirement() -> None:
    retired = BrokerKey("kid", PUBLIC, RETIRED_AT)
    assert retired.signs_pushes_at(RETIRED_AT + PUSH_GRACE - timedelta(seconds=1))
    assert not retired.signs_pushes_at(RETIRED_AT + PUSH_GRACE)


def test_a_node_reads_its_keys_from_the_environment_after_its_files(tmp_path: Path) -> None:
    old, new = KeySet.generate("ng.naptip"), KeySet.generate("ng.naptip")
    old.write(tmp_path / "old.json")
    keyring = Keyring.read([tmp_path / "old.json"], json.dumps([new.to_json()]))
    assert keyring.current["ng.naptip"].signing.kid == new.signing.kid  # later wins
    assert keyring.opener("ng.naptip", old.encryption.kid) is not None  # still opens


def test_a_malformed_key_environment_is_refused_without_echoing_it() -> None:
    secretish = '{"participant": "ng.naptip", "private": "SECRET-SEED"}'
    with pytest.raises(MalformedError) as refused:
        Keyring.read([], secretish)
    assert "SECRET-SEED" not in str(refused.value)
