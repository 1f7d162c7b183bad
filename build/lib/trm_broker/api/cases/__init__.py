"""Case transfers as their parties see them: state, timeline and alerts (docs/design.md §6)."""
