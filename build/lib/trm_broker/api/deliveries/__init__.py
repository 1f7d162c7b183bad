"""Operators' view of dead letters, and their re-queueing."""
