"""Reading the broker's ledger over HTTP for the auditor's check (`trm-broker ledger
verify`): the pages of entries, the checkpoint, the proofs. The checks themselves are
:mod:`trm_broker.ledger.audit`. Apart from the commands (cli/ledger.py), so that no other
command loads httpx and the auditor's checks at start."""

from __future__ import annotations

import base64
import struct
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from trm_broker.crypto.canonical import canonical_json
from trm_broker.ledger import merkle
from trm_broker.ledger.audit import audit
from trm_broker.ledger.note import Checkpoint
from trm_broker.ledger.verifier import LedgerFailure

PAGE = 1000
#: Entries per request of the whole-ledger read (`GET /v1/ledger/entries/raw`): a power of
#: two, so pages are whole subtrees of the Merkle tree.
RAW_PAGE = 16384
Page = tuple[int, list[bytes], bytes | None]


class HttpLedgerSource:
    """The broker's ledger API (docs/design.md §9), read with the auditor's signed requests."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.base = url.rstrip("/")
        self.http = http

    def _get(self, path: str, **params: Any) -> httpx.Response:
        try:
            response = self.http.get(self.base + path, params=params)
        except httpx.HTTPError as exc:
            raise LedgerFailure(None, f"the broker is unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise LedgerFailure(None, f"GET {path} answered {response.status_code}")
        return response

    def checkpoint(self) -> str:
        return self._get("/v1/ledger/checkpoint").text

    def entries(
        self, size: int, start: int = 0
    ) -> Iterator[tuple[int, dict[str, Any], bytes | None]]:
        while start < size:
            page = self._get("/v1/ledger/entries", start=start, limit=min(PAGE, size - start))
            items = page.json()["entries"]
            if not items:
                return
            for item in items:
                if item["index"] >= size:
                    return
                yield item["index"], item["entry"], base64.b64decode(item["leaf_hash"])
            start = items[-1]["index"] + 1

    def pages(self, size: int) -> Iterator[Page]:
        """Entries 0 .. size-1 as the broker stores them, ``RAW_PAGE`` a request; the next
        page is fetched while the caller checks this one. A broker without
        `/v1/ledger/entries/raw` is read through `/v1/ledger/entries` instead."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-read") as pool:
            start = 0
            fetching: Future[tuple[int, bytes] | None] = pool.submit(self._raw, 0, size)
            while start < size:
                fetched = fetching.result()
                if fetched is None:  # an older broker: the JSON pages
                    yield from self._json_pages(start, size)
                    return
                count, data = fetched
                if count == 0:
                    return
                fetching = pool.submit(self._raw, start + count, size)
                yield from self._split(start, count, data)
                start += count

    def _raw(self, start: int, size: int) -> tuple[int, bytes] | None:
        if start >= size:
            return 0, b""
        params = {"start": start, "limit": min(RAW_PAGE, size - start)}
        try:
            response = self.http.get(self.base + "/v1/ledger/entries/raw", params=params)
        except httpx.HTTPError as exc:
            raise LedgerFailure(None, f"the broker is unreachable ({type(exc).__name__})") from exc
        if response.status_code in (404, 405):
            return None
        if response.status_code != 200:
            raise LedgerFailure(None, f"GET /v1/ledger/entries/raw answered {response.status_code}")
        try:
            count = int(response.headers["Trm-Ledger-Count"])
        except (KeyError, ValueError) as exc:
            raise LedgerFailure(start, "the broker's page of entries has no valid count") from exc
        return count, response.content

    def _split(self, start: int, count: int, data: bytes) -> Iterator[Page]:
        """A page's (start, bodies, stored leaves); where its indexes skip or repeat one,
        the entries before it, then a page starting at the index served instead (which the
        verifier names)."""
        size = merkle.HASH_SIZE
        head = count * (8 + size)
        bodies = data[head:].split(b"\n")
        if count < 0 or len(data) < head or len(bodies) != count + 1 or bodies.pop() != b"":
            raise LedgerFailure(start, "the broker's page of entries is malformed")
        stored = data[8 * count : head]
        indexes = data[: 8 * count]
        if indexes != struct.pack(f">{count}Q", *range(start, start + count)):
            served = struct.unpack(f">{count}Q", indexes)
            cut = next(i for i, index in enumerate(served) if index != start + i)
            if cut:
                yield start, bodies[:cut], stored[: cut * size]
            yield served[cut], bodies[cut:], stored[cut * size :]
            return
        yield start, bodies, stored

    def _json_pages(self, start: int, size: int) -> Iterator[Page]:
        for index, entry, leaf in self.entries(size, start):
            yield index, [canonical_json(entry)], leaf

    def consistency(self, first: int, second: int) -> list[bytes]:
        proof = self._get("/v1/ledger/consistency", first=first, second=second).json()["proof"]
        return [base64.b64decode(h) for h in proof]

    def inclusion(self, index: int, size: int) -> tuple[dict[str, Any], list[bytes]]:
        found = self._get(f"/v1/ledger/entries/{index}", tree_size=size).json()
        return found["entry"], [base64.b64decode(h) for h in found["inclusion_proof"]]


def _progress(done: int, total: int) -> None:
    out = sys.stderr
    if out.isatty():
        out.write(f"\r  {done}/{total} entries verified")
        out.flush()
    elif done == total or done % 100_000 == 0:
        out.write(f"  {done}/{total} entries verified\n")


def verify(
    url: str, vkey: str | Sequence[str], key_file: Path | None, state: Path | None
) -> Checkpoint:
    """Verify the ledger of the broker at ``url`` (see :func:`~trm_broker.ledger.audit.audit`);
    ``key_file``: the auditor's keys, to sign the reads."""
    from trm_broker.crypto.keys import KeySet
    from trm_broker.web.signed_requests import SignedRequests

    auth = SignedRequests(KeySet.read(key_file).signing) if key_file else None
    vkeys = [vkey] if isinstance(vkey, str) else list(vkey)
    with httpx.Client(timeout=30, follow_redirects=False, auth=auth) as http:
        return audit(HttpLedgerSource(url, http), vkeys, state, progress=_progress, every=PAGE)
