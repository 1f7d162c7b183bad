"""The models behind `contracts/schemas/ledger/`: one per event type, told apart by `type`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import pytest
from pydantic import ValidationError

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.ledger_entries import ENTRY, ENTRY_MODELS, AlertName
from trm_broker.domain.ledger_events import EventType, LedgerEvent


def test_every_event_type_has_the_model_of_its_entry() -> None:
    assert set(ENTRY_MODELS) == set(EventType)
    for event_type, model in ENTRY_MODELS.items():
        assert model.model_json_schema()["properties"]["type"]["const"] == event_type.value


def test_the_alert_names_are_every_kind_of_alert_a_case_can_have() -> None:
    kinds = {k.value for k in AlertKind}
    assert set(get_args(AlertName)) == kinds


def _alert(**facts: object) -> dict[str, object]:
    at = datetime(2026, 11, 23, 9, 40, 27, 293000, tzinfo=UTC)
    event = LedgerEvent(EventType.ALERT_RAISED, at, ("ng.naptip",), ("NG",), "AT-2026-0042", facts)
    return event.claims()


def test_an_entry_is_read_by_its_type_and_nothing_else_passes() -> None:
    assert type(ENTRY.validate_python(_alert(alert="reception_overdue"))).__name__ == "AlertRaised"
    for wrong in [
        _alert(alert="reception_overdue", note="free text"),  # a member the type does not name
        _alert(alert="overdue"),  # not an alert kind
        {**_alert(alert="reception_overdue"), "type": "alert.lost"},
        {**_alert(alert="reception_overdue"), "at": "2026-11-23T09:40:27Z"},  # no milliseconds
    ]:
        with pytest.raises(ValidationError):
            ENTRY.validate_python(wrong)
