"""Case transfers as their parties see them: state, timeline and alerts (DESIGN.md §6)."""
