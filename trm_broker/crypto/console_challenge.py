"""What an auditor's key signs to sign in to the console, and the check of it.

The signed text names its purpose, the key and the challenge (one line each), so the
signature can serve for nothing else: not as a request signature (RFC 9421 signs another
base), not for another key's challenge.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import SigningKey, load_ed25519_public

PURPOSE = "trm-broker console sign-in v1"
#: Where the link opens, under the broker's URL.
SIGN_IN_PATH = "/console/sign-in"


def signed_text(kid: str, challenge: str) -> bytes:
    return f"{PURPOSE}\n{kid}\n{challenge}\n".encode()


def answer(key: SigningKey, challenge: str) -> str:
    """The signature over the challenge, base64url without padding (it travels in a URL)."""
    signature = key.sign(signed_text(key.kid, challenge))
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def answers(public_key_b64: str, kid: str, challenge: str, signature: str) -> bool:
    """Whether ``signature`` is the key's signature over the challenge."""
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        load_ed25519_public(public_key_b64).verify(raw, signed_text(kid, challenge))
    except (InvalidSignature, MalformedError, binascii.Error, ValueError):
        return False
    return True
