"""The registry of participants and their keys (docs/design.md §4)."""
