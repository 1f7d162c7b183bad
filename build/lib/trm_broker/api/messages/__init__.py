"""Accepting signed envelopes and reporting their delivery (docs/design.md §5, §8)."""
