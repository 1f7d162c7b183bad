"""Single sign-on: bearer JWTs issued by the ministry's OpenID Connect provider.

The node is a resource server here: it never sees a password or runs a login flow. It takes
an access (or ID) token the provider signed, checks it, and reads from two claims which
organisation the person acts for and in which role. The provider's keys come from its
discovery document (OpenID Connect Discovery 1.0 §4) and JWKS (RFC 7517), fetched on first
use and cached; the token is checked with joserfc, the JOSE library of Authlib's author that
``authlib.jose`` now defers to.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import ClaimsOption

from trm_broker.settings import Settings
from trm_broker.web.problems import Forbidden, Unauthenticated, Unavailable

log = structlog.get_logger("trm_broker.node.oidc")

#: Asymmetric signatures only: ``none`` and the HMAC family (a public key used as a shared
#: secret) are never accepted (RFC 8725 §3.1, §3.2).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
#: An unknown ``kid`` refetches the JWKS (the provider rotated), at most this often (or
#: as often as the cache expires, if that is sooner): a stream of made-up key ids cannot
#: make the node hammer the provider.
_REFETCH_SECONDS = 10.0
_FETCH_TIMEOUT = 10.0


@dataclass(frozen=True)
class Identity:
    """What a verified token says: who, for which organisation, in which role (as
    written in the token; the caller maps them)."""

    subject: str
    organisation: str
    #: The role claim's values: one string, or a list (an identity provider's groups).
    roles: tuple[str, ...]


class OidcVerifier:
    """Checks the provider's tokens; one per node app."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        if settings.node_oidc_issuer is None or settings.node_oidc_audience is None:
            raise ValueError("TRM_NODE_OIDC_ISSUER and TRM_NODE_OIDC_AUDIENCE are both needed")
        self.issuer = settings.node_oidc_issuer
        self.audience = settings.node_oidc_audience
        self.org_claim = settings.node_oidc_org_claim
        self.role_claim = settings.node_oidc_role_claim
        self.user_claim = settings.node_oidc_user_claim
        self.cache_seconds = settings.node_oidc_cache_seconds
        self.leeway = int(settings.clock_skew_seconds)
        self._transport = transport
        self._keys: KeySet | None = None
        self._fetched = float("-inf")  # monotonic time of the last JWKS fetch
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Identity:
        """The token's identity, once every check of RFC 7519 §7.2 and RFC 8725 holds;
        else 401 (not a token of the provider for this node, or no longer valid) or 403
        (a valid token whose organisation or role this node does not know)."""
        # 1. The signature, with one of the provider's current keys and an allowed algorithm.
        keys = await self._key_set(refresh=False)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
        except JoseError as exc:
            if not _unknown_key(exc) or not self._may_refetch():
                raise _refused(exc) from None
            keys = await self._key_set(refresh=True)  # the provider may have rotated
            try:
                decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            except JoseError as again:
                raise _refused(again) from None
        # 2. Issuer, audience, expiry, not-before (RFC 7519 §4.1), with the node's skew.
        options: dict[str, ClaimsOption] = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": self.audience},
            "exp": {"essential": True},
            self.user_claim: {"essential": True},
        }
        registry = jwt.JWTClaimsRegistry(None, self.leeway, **options)
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise _refused(exc) from None
        # 3. Whom for, and as what: the node's own claims.
        claims = decoded.claims
        return Identity(
            subject=str(claims[self.user_claim]),
            organisation=_one_string(claims.get(self.org_claim), self.org_claim),
            roles=_strings(claims.get(self.role_claim), self.role_claim),
        )

    def _may_refetch(self) -> bool:
        return time.monotonic() - self._fetched >= min(_REFETCH_SECONDS, self.cache_seconds)

    async def _key_set(self, *, refresh: bool) -> KeySet:
        async with self._lock:
            fresh = time.monotonic() - self._fetched < self.cache_seconds
            if self._keys is not None and fresh and not (refresh and self._may_refetch()):
                return self._keys
            try:
                self._keys = await self._fetch()
            except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
                log.warning("oidc_keys_unavailable", error_type=type(exc).__name__)
                if self._keys is None:
                    raise Unavailable(
                        "The identity provider's keys cannot be fetched; retry later, or use "
                        "a node API token."
                    ) from None
                return self._keys  # the provider is down: the keys known stay good
            self._fetched = time.monotonic()
            return self._keys

    async def _fetch(self) -> KeySet:
        """The discovery document, then the JWKS it names (OpenID Connect Discovery §4)."""
        async with httpx.AsyncClient(
            transport=self._transport, timeout=_FETCH_TIMEOUT, follow_redirects=False
        ) as http:
            where = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = _json_object(await http.get(where))
            # §4.3: the document's issuer is exactly the one configured.
            if document.get("issuer") != self.issuer:
                raise ValueError("the discovery document is for another issuer")
            jwks_uri = document["jwks_uri"]
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(
                "https://" if self.issuer.startswith("https://") else ("https://", "http://")
            ):
                raise ValueError("the jwks_uri is not a URL of the issuer's scheme")
            jwks = _json_object(await http.get(jwks_uri))
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        log.info("oidc_keys_fetched", keys=len(keys.keys))
        return keys


def _json_object(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    return body


def _unknown_key(exc: JoseError) -> bool:
    """A token signed with a key the cached JWKS lacks (joserfc says so by the missing
    key, not by a bad signature)."""
    return type(exc).__name__ in ("MissingKeyError", "InvalidKeyIdError")


def _refused(exc: JoseError) -> Unauthenticated:
    # The error's name only: its text may quote the token's claims.
    log.info("oidc_token_refused", error=getattr(exc, "error", type(exc).__name__))
    return Unauthenticated(
        "The sign-on token is not valid for this node (signature, issuer, audience or "
        "expiry): sign in again."
    )


def _unmapped(claim: str) -> Forbidden:
    return Forbidden(
        f"The sign-on token has no usable `{claim}` claim: ask the identity provider's "
        "administrator to map you to an organisation and a role of this node."
    )


def _one_string(value: object, claim: str) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise _unmapped(claim)
    return value


def _strings(value: object, claim: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _unmapped(claim)
    return tuple(values)
