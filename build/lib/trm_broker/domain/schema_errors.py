"""Where a pydantic schema error is, said without echoing what was sent."""

from __future__ import annotations

from typing import Any


def error_location(error: Any) -> str:
    """Where a schema error is, without echoing what was sent: an unknown member's name is
    caller-chosen text, so it is reported as its parent's ``(unknown member)``."""
    location = [str(part) for part in error.get("loc", ())]
    if error.get("type") == "extra_forbidden" and location:
        location[-1] = "(unknown member)"
    return "/".join(location)
