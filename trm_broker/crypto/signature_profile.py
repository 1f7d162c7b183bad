"""The ``trm`` request signature in its one written form, built and checked directly.

Our profile of RFC 9421 (``crypto/http_signatures.py``) fixes what a signature covers and
its parameters; every signer we ship writes them in one order::

    Signature-Input: trm=("@method" "@target-uri" "content-digest");created=<n>;
        keyid="<kid>";alg="ed25519";nonce="<nonce>";tag="trm-broker/v1"
    Signature: trm=:<64 bytes, base64>:
    Content-Digest: sha-256=:<32 bytes, base64>:

For a request in exactly that form, with a plain absolute URL, the signature base (RFC 9421
§2.5) is four lines whose values are the request's own strings, so it is built here with one
format instead of the general library's structured-field parsing and serialising (issue 21:
about 11 % of the broker's CPU per accepted message). Anything else (another order, more
field lines, another label, percent signs in the host, a time beyond the allowed skew)
returns ``None`` here, and the caller asks the library, so what is accepted or refused, and
why, is the same either way: tests/crypto/test_signature_profile.py checks that both agree
on valid and altered requests, and that both write the same headers.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

LABEL = "trm"
TAG = "trm-broker/v1"
COVERED = ("@method", "@target-uri", "content-digest")

_COMPONENTS = '("@method" "@target-uri" "content-digest")'
_INPUT = re.compile(
    rf"{LABEL}=(\({re.escape(_COMPONENTS[1:-1])}\);created=(0|[1-9][0-9]{{0,14}})"
    r';keyid="([A-Za-z0-9_-]{1,256})";alg="ed25519"'
    rf';nonce="([A-Za-z0-9_-]{{1,256}})";tag="{re.escape(TAG)}")'
)
_SIGNATURE = re.compile(rf"{LABEL}=:([A-Za-z0-9+/]{{86}}==):")
_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")
_METHOD = re.compile(r"[A-Z]{1,20}")
# An absolute http(s) URL whose pieces the library (http_message_signatures._url) takes
# apart and puts together again unchanged: no user information, no fragment, a plain host
# name or IPv4 address, a path.
_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/\-]|%[0-9A-Fa-f]{2})"
_URL = re.compile(rf"https?://[A-Za-z0-9.\-]+(?::[0-9]{{1,5}})?/{_CHAR}*(?:\?(?:{_CHAR}|\?)*)?")
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class WrittenSignature:
    """A request's signature fields in the one written form, read but not yet verified."""

    params: str  # the inner list and its parameters: the "@signature-params" value
    created: int
    keyid: str
    nonce: str
    signature: bytes
    content_digest: str


def read(lines: Iterable[tuple[str, str]]) -> WrittenSignature | None:
    """The ``trm`` signature if the request carries it in the one written form: exactly one
    Signature-Input, one Signature and one Content-Digest line, each in that form."""
    inputs: list[str] = []
    signatures: list[str] = []
    digests: list[str] = []
    for name, value in lines:
        lowered = name.lower()
        if lowered == "signature-input":
            inputs.append(value)
        elif lowered == "signature":
            signatures.append(value)
        elif lowered == "content-digest":
            digests.append(value)
    if len(inputs) != 1 or len(signatures) != 1 or len(digests) != 1:
        return None
    written = _INPUT.fullmatch(inputs[0])
    signature = _SIGNATURE.fullmatch(signatures[0])
    if written is None or signature is None or _DIGEST.fullmatch(digests[0]) is None:
        return None
    return WrittenSignature(
        params=written.group(1),
        created=int(written.group(2)),
        keyid=written.group(3),
        nonce=written.group(4),
        signature=base64.b64decode(signature.group(1)),
        content_digest=digests[0],
    )


def base(method: str, url: str, content_digest: str, params: str) -> bytes | None:
    """The signature base of a request in the written form; ``None`` if ``method`` or
    ``url`` is not one the library would take exactly as it is."""
    if _METHOD.fullmatch(method) is None or _URL.fullmatch(url) is None:
        return None
    return (
        f'"@method": {method}\n"@target-uri": {url}\n'
        f'"content-digest": {content_digest}\n"@signature-params": {params}'
    ).encode("ascii")


def content_digest(body: bytes) -> str:
    """RFC 9530's ``Content-Digest`` of ``body`` with SHA-256, as our signers write it."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def params_for(created: int, keyid: str, nonce: str) -> str | None:
    """The ``@signature-params`` value a signer writes; ``None`` for a key id or nonce
    outside the written form's characters (the library then signs)."""
    if _SAFE.fullmatch(keyid) is None or _SAFE.fullmatch(nonce) is None or created < 0:
        return None
    return (
        f'{_COMPONENTS};created={created};keyid="{keyid}";alg="ed25519";nonce="{nonce}";tag="{TAG}"'
    )


def fields(params: str, signature: bytes, digest: str) -> dict[str, str]:
    """The three header fields of a signed request, in the order the library writes them."""
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={params}",
        "Signature": f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
    }
