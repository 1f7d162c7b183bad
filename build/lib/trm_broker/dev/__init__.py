"""For developers, not the runtime: a local cluster of real processes on loopback and the
demo that drives one transfer through it (`make demo`, the end-to-end tests)."""
