"""A Python client of the broker's API: registry, submission with receipt checks, status."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trm_broker.crypto import envelopes
from trm_broker.crypto.errors import Code, CryptoError, VerificationError
from trm_broker.crypto.keys import SigningKey, load_ed25519_public
from trm_broker.node.trust import NodeTrust
from trm_broker.web.signed_requests import SignedRequests

log = structlog.get_logger("trm_broker.node")


class BrokerError(Exception):
    """The broker refused a call or could not be reached; ``problem`` is its problem+json."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem


@dataclass(frozen=True)
class RegisteredKey:
    kid: str
    participant: str
    use: str
    alg: str
    public: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_json(cls, key: dict[str, Any], participant: str) -> RegisteredKey:
        """A key as `GET /v1/participants` lists it under its participant."""
        return cls(
            kid=key["kid"],
            participant=participant,
            use=key["use"],
            alg=key["alg"],
            public=key["public"],
            valid_from=datetime.fromisoformat(key["valid_from"]),
            valid_until=_parse_time(key.get("valid_until")),
            revoked_at=_parse_time(key.get("revoked_at")),
        )

    def valid_at(self, moment: datetime) -> bool:
        """Valid at ``moment``: already valid, neither revoked nor expired (a signature made
        then may be trusted). The broker judges the same at acceptance."""
        if self.valid_from > moment:
            return False
        if self.revoked_at is not None and self.revoked_at <= moment:
            return False
        return self.valid_until is None or self.valid_until > moment

    def usable(self, now: datetime) -> bool:
        if self.revoked_at is not None or self.valid_from > now:
            return False
        return self.valid_until is None or self.valid_until > now


@dataclass(frozen=True)
class Registry:
    """A snapshot of `GET /v1/participants`; ``unproven`` names the keys the node does not
    believe (no statement by a pinned operator key, node/trust.py), with why."""

    participants: dict[str, dict[str, Any]]
    keys: dict[str, RegisteredKey]
    unproven: dict[str, str] = field(default_factory=dict)

    def encryption_key(self, participant: str, now: datetime) -> RegisteredKey | None:
        """The participant's current encryption key: usable, believed, newest first
        (docs/design.md §4)."""
        usable = [k for k in self._usable_enc(participant, now) if k.kid not in self.unproven]
        return max(usable, key=lambda k: k.valid_from, default=None)

    def unproven_encryption_keys(self, participant: str, now: datetime) -> list[RegisteredKey]:
        """The participant's usable encryption keys the node does not believe, newest first."""
        unproven = [k for k in self._usable_enc(participant, now) if k.kid in self.unproven]
        return sorted(unproven, key=lambda k: k.valid_from, reverse=True)

    def _usable_enc(self, participant: str, now: datetime) -> list[RegisteredKey]:
        return [
            k
            for k in self.keys.values()
            if k.participant == participant and k.use == "enc" and k.usable(now)
        ]


@dataclass(frozen=True)
class Receipt:
    """A verified broker receipt."""

    message_id: str
    envelope_digest: str
    accepted_at: str
    ledger_index: int | None
    jws: dict[str, str]


@dataclass(frozen=True)
class InboxItem:
    """One message waiting in the pull inbox; ``push`` is exactly the body a push carries."""

    cursor: int
    message_id: str
    push: dict[str, Any]


@dataclass(frozen=True)
class InboxPage:
    items: list[InboxItem]
    next: int | None


#: How long after its rotation a retired broker key still signs pushes: replicas restarted
#: one by one, and pushes in flight, use it for a while.
PUSH_GRACE = timedelta(hours=1)
#: An unknown broker kid makes the node read `GET /v1/broker` again, at most this often.
_BROKER_KEYS_REFRESH = 30.0
#: With the broker's keys pinned, a pinned kid not known yet: at most this often.
_PINNED_KEYS_REFRESH = 1.0


@dataclass(frozen=True)
class BrokerKey:
    """One of the broker's signing keys: its current one (``retired_at`` None) or one it
    retired, which still vouches for what it signed before."""

    kid: str
    public: Ed25519PublicKey
    retired_at: datetime | None = None

    def vouches_for_acceptance_at(self, accepted_at: datetime) -> bool:
        """A receipt by this key is good for a message accepted at ``accepted_at``."""
        return self.retired_at is None or accepted_at < self.retired_at

    def signs_pushes_at(self, now: datetime) -> bool:
        return self.retired_at is None or now < self.retired_at + PUSH_GRACE


class BrokerClient:
    """``trust``: the node's pins of the broker's and the operator's keys (node/trust.py);
    without, both are trusted on first use."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient | None = None,
        registry_ttl: float = 60.0,
        trust: NodeTrust | None = None,
    ) -> None:
        self._trust = trust or NodeTrust()
        self._base = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=15.0, follow_redirects=False)
        self._owns_http = http is None
        self._ttl = registry_ttl
        self._registry: Registry | None = None
        self._registry_at = 0.0
        self._broker_keys: dict[str, BrokerKey] | None = None
        self._broker_keys_at = 0.0

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(
        self, method: str, path: str, signer: SigningKey | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call the broker; with ``signer``, the request is signed with that key (RFC 9421)."""
        auth = SignedRequests(signer) if signer is not None else None
        try:
            response = await self._http.request(
                method, self._base + path, auth=auth or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
        except httpx.HTTPError as exc:
            raise BrokerError(
                503, {"title": "Broker unreachable", "detail": type(exc).__name__}
            ) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except (ValueError, RecursionError):  # not JSON, or nested deeper than json reads
                problem = {"title": f"HTTP {response.status_code}"}
            raise BrokerError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    async def broker_key(self, kid: str) -> BrokerKey | None:
        """The broker's signing key ``kid``, current or retired; ``None`` if the broker does
        not name it, or the node pins the broker's keys and not this one. Read from
        `GET /v1/broker` on first use, and again when a kid is unknown, at most every 30 s:
        after a rotation, the new key (if pinned)."""
        if not self._trust.may_be_broker_key(kid):
            log.warning("broker_key_not_pinned", kid=kid)
            return None
        known = self._broker_keys or {}
        # A pinned kid not served yet is the next key, after a rotation: read again soon.
        # (Pinned, the kids that can cause a read are few; unpinned, any kid can.)
        every = (
            _PINNED_KEYS_REFRESH if self._trust.broker_keys is not None else _BROKER_KEYS_REFRESH
        )
        stale = time.monotonic() - self._broker_keys_at > every
        if kid not in known and (self._broker_keys is None or stale):
            data = _object(await self._call("GET", "/v1/broker"))
            try:
                keys = _broker_keys(data, self._trust)
            except (KeyError, TypeError, ValueError, CryptoError) as exc:
                raise BrokerError(502, {"title": "Malformed broker description"}) from exc
            self._broker_keys, self._broker_keys_at = keys, time.monotonic()
            known = keys
        return known.get(kid)

    async def registry(self, *, refresh: bool = False) -> Registry:
        fresh = time.monotonic() - self._registry_at < self._ttl
        if self._registry is None or refresh or not fresh:
            data = _object(await self._call("GET", "/v1/participants"))
            try:
                participants = {p["id"]: p for p in data["participants"]}
                keys = {
                    k["kid"]: RegisteredKey.from_json(k, p["id"])
                    for p in data["participants"]
                    for k in p["keys"]
                }
                unproven = self._trust.unproven_keys(data["participants"])
            except (KeyError, TypeError, ValueError, AttributeError, CryptoError) as exc:
                raise BrokerError(502, {"title": "Malformed registry"}) from exc
            self._registry = Registry(participants, keys, unproven)
            self._registry_at = time.monotonic()
        return self._registry

    def last_registry(self) -> Registry | None:
        """The registry read last, however old; ``None`` before the first read."""
        return self._registry

    async def registered_key(self, kid: str) -> RegisteredKey | None:
        """A key by kid, whatever its state; the registry is refreshed once if it is unknown.

        A key the node does not believe (no statement by a pinned operator key) is refused
        here, for every use (a sender's envelope, a recipient's acknowledgement): a
        VerificationError with code ``key-not-proven``, logged by ids."""
        registry = await self.registry()
        key = registry.keys.get(kid)
        if key is None:
            registry = await self.registry(refresh=True)
            key = registry.keys.get(kid)
        if key is not None and kid in registry.unproven:
            log.warning(
                "registry_key_not_proven",
                participant=key.participant,
                kid=kid,
                use=key.use,
                reason=registry.unproven[kid],
                action="signature not believed",
            )
            raise VerificationError(
                "The signing key is in the broker's registry, but no statement of the "
                "operator's key this node pins backs it: the registry may have been tampered "
                "with. Ask the broker's operator to check it.",
                code=Code.KEY_NOT_PROVEN,
                kid=kid,
            )
        return key

    async def submit(
        self, envelope: dict[str, str], signer: SigningKey, *, content: bytes | None = None
    ) -> Receipt:
        """Send a signed envelope; return the receipt once its signature and claims check out.

        ``signer`` is the sender's signing key: the request is signed by the sender too.
        ``content`` is the envelope's bytes as stored, sent as they are (the node's outbox
        resubmits the very same bytes); by default, the envelope's JSON.
        """
        response = await self._call(
            "POST",
            "/v1/messages",
            signer,
            content=content if content is not None else _json_bytes(envelope),
            headers={"content-type": "application/jose+json"},
        )
        try:
            receipt_jws = response.json()["receipt"]
        except (ValueError, RecursionError, KeyError, TypeError) as exc:  # not JSON; no receipt
            raise BrokerError(502, {"title": "Invalid receipt", "detail": "no receipt"}) from exc
        # The same check a receiving node makes (crypto.envelopes.verify_receipt): the
        # broker's key, this very envelope; a retired key vouches only for what it accepted
        # before retiring (a resubmission is answered with its original receipt).
        try:
            verified = await envelopes.verify_receipt(receipt_jws, envelope, self.broker_key)
            claims = verified.claims
        except VerificationError as exc:
            raise BrokerError(
                502, {"title": "Invalid receipt", "detail": f"{exc} ({exc.code.value})"}
            ) from exc
        try:
            return Receipt(
                message_id=str(claims["message_id"]),
                envelope_digest=str(claims["envelope_digest"]),
                accepted_at=str(claims["accepted_at"]),
                ledger_index=claims.get("ledger_index"),
                jws=receipt_jws,
            )
        except KeyError as exc:  # signed by the broker, yet without a claim every receipt has
            raise BrokerError(502, {"title": "Invalid receipt", "detail": "missing claim"}) from exc

    async def message_status(self, message_id: str, signer: SigningKey) -> dict[str, Any]:
        """A message's state, asked by its sender or recipient (signed with ``signer``)."""
        return _object(await self._call("GET", f"/v1/messages/{message_id}", signer))

    async def fetch_inbox(
        self, signer: SigningKey, *, after: int | None, wait: float, limit: int = 20
    ) -> InboxPage:
        """The signer's unacknowledged messages after ``after`` (``GET /v1/inbox``), waiting
        up to ``wait`` seconds for one to arrive (a long poll)."""
        params: dict[str, str | int] = {"wait": f"{wait:g}", "limit": limit}
        if after is not None:
            params["after"] = after
        # The read may take the whole wait: give the request that much more time.
        timeout = httpx.Timeout(15.0, read=wait + 15.0)
        response = await self._call("GET", "/v1/inbox", signer, params=params, timeout=timeout)
        try:
            data = response.json()
            items = [
                InboxItem(
                    cursor=int(item["cursor"]),
                    message_id=str(item["message_id"]),
                    push={"envelope": item["envelope"], "receipt": item["receipt"]},
                )
                for item in data["items"]
            ]
            following = data.get("next")
            return InboxPage(items, None if following is None else int(following))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # OverflowError: int() of Infinity, which json reads; RecursionError: deep nesting.
            raise BrokerError(502, {"title": "Malformed inbox page"}) from exc

    async def ack_inbox(
        self, signer: SigningKey, message_id: str, ack: dict[str, str]
    ) -> dict[str, Any]:
        """Hand the broker the node's signed answer to a pulled message (idempotent)."""
        path = f"/v1/inbox/{message_id}/ack"
        return _object(await self._call("POST", path, signer, json={"ack": ack}))

    async def register_consent(self, signer: SigningKey, body: dict[str, Any]) -> dict[str, Any]:
        """Register a consent record, signed by the sending focal point (docs/design.md §7)."""
        return _object(await self._call("POST", "/v1/consents", signer, json=body))

    async def withdraw_consent(self, signer: SigningKey, consent_id: str) -> dict[str, Any]:
        path = f"/v1/consents/{consent_id}/withdraw"
        return _object(await self._call("POST", path, signer))

    async def case(self, signer: SigningKey, case_ref: str) -> dict[str, Any]:
        """A case's state and timeline, as one of its parties sees it."""
        return _object(await self._call("GET", f"/v1/cases/{case_ref}", signer))

    async def open_alerts(
        self, signer: SigningKey, *, case_ref: str | None = None
    ) -> list[dict[str, Any]]:
        """The open alerts of the signer's cases (`GET /v1/alerts`), or of one case:
        metadata only."""
        params = {"case_ref": case_ref} if case_ref is not None else None
        data = _object(await self._call("GET", "/v1/alerts", signer, params=params))
        alerts = data.get("alerts")
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
            raise BrokerError(502, {"title": "Malformed answer from the broker"})
        return alerts

    # --- registry changes, signed by an operator's key --------------------------------

    async def register_participant(
        self, operator_key: SigningKey, body: dict[str, Any]
    ) -> dict[str, Any]:
        return _object(await self._call("POST", "/v1/participants", operator_key, json=body))

    async def add_key(
        self, operator_key: SigningKey, participant_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        path = f"/v1/participants/{participant_id}/keys"
        return _object(await self._call("POST", path, operator_key, json=body))

    async def revoke_key(
        self, operator_key: SigningKey, participant_id: str, kid: str
    ) -> dict[str, Any]:
        path = f"/v1/participants/{participant_id}/keys/{kid}/revoke"
        return _object(await self._call("POST", path, operator_key))


def _object(response: httpx.Response) -> dict[str, Any]:
    """A broker answer's JSON object; anything else is the broker failing (502)."""
    try:
        data = response.json()
    except (ValueError, RecursionError) as exc:  # not JSON, or nested deeper than json reads
        raise BrokerError(502, {"title": "Malformed answer from the broker"}) from exc
    if not isinstance(data, dict):
        raise BrokerError(502, {"title": "Malformed answer from the broker"})
    return data


def _broker_keys(data: dict[str, Any], trust: NodeTrust) -> dict[str, BrokerKey]:
    """The keys `GET /v1/broker` serves that the node believes: every one, or the pinned
    ones only. A current key served but not pinned is logged, by its kid, and never
    believed: the broker's key was swapped, or rotated to a key not pinned yet."""
    current = data["signing_key"]
    served = [(current["kid"], current["public"], None)] + [
        (item["kid"], item["public"], datetime.fromisoformat(item["retired_at"]))
        for item in data.get("retired_keys", [])
    ]
    keys: dict[str, BrokerKey] = {}
    for kid, public, retired_at in served:
        key = BrokerKey(kid, load_ed25519_public(public), retired_at)  # checks every one
        if kid in keys:
            continue
        if trust.believes_broker_key(kid, public):
            keys[kid] = key
        elif retired_at is None:
            log.warning("broker_key_not_pinned", kid=kid, current=True)
    return keys


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _json_bytes(obj: dict[str, str]) -> bytes:
    return json.dumps(obj).encode()
