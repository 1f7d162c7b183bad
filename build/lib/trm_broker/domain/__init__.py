"""Pure rules, no I/O: message types, the envelope's shape, ids."""
