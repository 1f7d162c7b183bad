"""The transfer ledger over HTTP, and its sequencer (DESIGN.md §9)."""
