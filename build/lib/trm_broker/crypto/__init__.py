"""Canonical JSON, envelope signatures (JWS EdDSA), HPKE sealing and key ids.

No web framework and no database here: every function works on bytes and keys.
"""
