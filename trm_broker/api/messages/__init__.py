"""Accepting signed envelopes and reporting their delivery (DESIGN.md §5, §8)."""
