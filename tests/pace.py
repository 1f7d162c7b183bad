"""How many examples the long property tests run: all of them in `make test`, a quarter in
the inner loop (`make test-fast` sets TRM_TEST_FAST=1). Never a time limit: see the
hypothesis profile in tests/conftest.py."""

from __future__ import annotations

import os


def examples(full: int) -> int:
    """``full``, or a quarter of it (at least 10) when TRM_TEST_FAST=1."""
    return max(10, full // 4) if os.environ.get("TRM_TEST_FAST") == "1" else full
