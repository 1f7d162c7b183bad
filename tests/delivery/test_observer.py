"""Failure codes become a small fixed set of classes, fit to label a metric."""

from __future__ import annotations

import pytest

from trm_broker.delivery.observer import error_class


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (None, "none"),
        ("timeout", "timeout"),
        ("transport_ConnectError", "transport"),
        ("transport_RemoteProtocolError", "transport"),
        ("http_503", "http_5xx"),
        ("http_404", "http_4xx"),
        ("http_302", "http_other"),
        ("http_5000", "http_other"),
        ("ack_mismatch", "ack_mismatch"),
        ("ack_bad_signature", "ack_bad_signature"),
        ("ack_something_new", "other"),
        ("inbox_address_refused", "inbox_address_refused"),
        ("no_inbox_url", "no_inbox_url"),
        ("internal_LookupError", "internal"),
        ("Jane Doe", "other"),
    ],
)
def test_error_classes_are_bounded(code: str | None, expected: str) -> None:
    assert error_class(code) == expected
