"""The append-only ledger: RFC 9162 Merkle tree, signed checkpoints and proofs."""
