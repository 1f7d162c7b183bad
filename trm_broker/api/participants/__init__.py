"""The registry of participants and their keys (DESIGN.md §4)."""
