"""The transfer ledger over HTTP (docs/design.md §9).

Its sequencer is a background loop: :mod:`trm_broker.background.sequencer`."""
