"""What the dispatcher tells whoever watches it (the broker's metrics), without knowing who:
each attempt's outcome and each dead letter. Outcomes and error classes are a small fixed
set, so they can label a metric; ids never travel this way."""

from __future__ import annotations

from typing import Literal, Protocol

Outcome = Literal["acknowledged", "rejected", "failed"]

#: Failure codes of the dispatcher and of the acknowledgement check kept as they are; the
#: open-ended ones (``http_503``, ``transport_ConnectError``, ``internal_…``) are classed.
_KEPT = frozenset(
    {
        "timeout",
        "no_inbox_url",
        "inbox_unresolved",
        "inbox_address_refused",
        "ack_too_large",
        "ack_malformed",
        "ack_unknown_key",
        "ack_key_not_usable",
        "ack_bad_signature",
        "ack_mismatch",
    }
)


class DeliveryObserver(Protocol):
    def attempted(self, outcome: Outcome, error: str | None) -> None:
        """One push ended: ``error`` is the failure code of a failed attempt."""

    def dead_lettered(self, count: int) -> None:
        """``count`` deliveries were given up after the maximum age."""


def error_class(error: str | None) -> str:
    """A failure code reduced to a bounded class: ``timeout``, ``transport``, ``http_4xx``,
    ``http_5xx``, ``http_other``, ``internal``, an ``ack_…``/``inbox_…`` code, or ``other``."""
    if error is None:
        return "none"
    if error in _KEPT:
        return error
    if error.startswith("transport_"):
        return "transport"
    if error.startswith("internal_"):
        return "internal"
    if error.startswith("http_"):
        status = error.removeprefix("http_")
        if len(status) == 3 and status[0] in "45" and status.isdigit():
            return f"http_{status[0]}xx"
        return "http_other"
    return "other"
