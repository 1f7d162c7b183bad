"""One family for every failed check, so callers never catch a stray ValueError."""


class CryptoError(Exception):
    """Base of every error raised by :mod:`trm_broker.crypto`."""


class VerificationError(CryptoError):
    """A signature, digest or structure did not verify."""


class MalformedError(VerificationError):
    """The input is not of the expected form (bad base64, bad JSON, missing member)."""


class SealError(CryptoError):
    """A sealed payload could not be opened (wrong key, moved ciphertext, tampering)."""
