"""What a node trusts a broker key for: the current key for everything; a retired one for
receipts of messages accepted before its retirement, and for pushes during an hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trm_broker.crypto.keys import SigningKey, load_ed25519_public
from trm_broker.node.broker_client import PUSH_GRACE, BrokerKey

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
