"""`trm-broker node pins`: the values that pin a broker's and its operator's keys at a node
(TRM_NODE_BROKER_KEYS, TRM_NODE_OPERATOR_KEYS; node/trust.py), from key files or from a
running broker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm_broker.cli.signed_call import fail


@dataclass(frozen=True)
class Pin:
    """One key to pin: ``entry`` as the setting takes it, ``what`` it is, for the operator."""

    kid: str
    public: str
    what: str

    @property
    def entry(self) -> str:
        from trm_broker.node.trust import pin_entry

        return pin_entry(self.kid, self.public)


def pins_from_files(
    broker_key_file: Path | None, operator_keys: list[Path], *, retired: bool
) -> tuple[list[Pin], list[Pin]]:
    """The broker's keys from its key document (current, next, and retired if asked), and
    each operator's signing key from its key file."""
    from trm_broker.crypto import broker_keys
    from trm_broker.crypto.keys import KeySet

    broker: list[Pin] = []
    if broker_key_file is not None:
        try:
            keys = broker_keys.read(broker_key_file)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read the broker's key file {broker_key_file}") from exc
        broker.append(Pin(keys.signing.kid, keys.signing.public_b64, "broker key (current)"))
        if keys.next is not None:
            broker.append(Pin(keys.next.kid, keys.next.public_b64, "broker key (next)"))
        if retired:
            broker += [Pin(r.kid, r.public_b64, "broker key (retired)") for r in keys.retired]
    operators: list[Pin] = []
    for path in operator_keys:
        try:
            keyset = KeySet.read(path)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read the operator key file {path}") from exc
        what = f"operator key of {keyset.participant}"
        operators.append(Pin(keyset.signing.kid, keyset.signing.public_b64, what))
    return broker, operators


def pins_from_broker(url: str, *, retired: bool) -> tuple[list[Pin], list[Pin]]:
    """What a broker serves: its keys (`GET /v1/broker`) and its operators' signing keys
    that are not revoked (`GET /v1/participants`)."""
    base = url.rstrip("/")
    try:
        described = _get(base + "/v1/broker")
        registry = _get(base + "/v1/participants")
        current = described["signing_key"]
        broker = [Pin(current["kid"], current["public"], "broker key (current)")]
        following = described.get("next_key")
        if following:
            broker.append(Pin(following["kid"], following["public"], "broker key (next)"))
        if retired:
            broker += [
                Pin(r["kid"], r["public"], "broker key (retired)")
                for r in described.get("retired_keys", [])
            ]
        operators = [
            Pin(key["kid"], key["public"], f"operator key of {participant['id']}")
            for participant in registry["participants"]
            if participant["kind"] == "operator"
            for key in participant["keys"]
            if key["use"] == "sig" and key["revoked_at"] is None
        ]
    except (KeyError, TypeError) as exc:
        raise fail(f"the broker at {base} answered something else than its keys") from exc
    return broker, operators


def _get(url: str) -> dict[str, Any]:
    import httpx  # loaded only by the commands that call out

    try:
        response = httpx.get(url, timeout=15)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise fail(f"cannot read {url} ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise fail(f"{url} did not answer a JSON object")
    return data
