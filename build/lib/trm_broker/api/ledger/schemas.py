"""Wire models of the ledger. Hashes are standard base64 (as in C2SP checkpoints)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class EntryOut(BaseModel):
    index: int
    leaf_hash: str = Field(description="SHA-256(0x00 || RFC 8785 JSON of entry), base64.")
    entry: dict[str, Any] = Field(description="The event: metadata and digests only.")


class EntryPage(BaseModel):
    tree_size: int = Field(description="The latest checkpoint's size; entries beyond wait.")
    entries: list[EntryOut]
    next_start: int | None = Field(description="Where the next page starts; null at the end.")


class EntryProof(EntryOut):
    tree_size: int
    inclusion_proof: list[str] = Field(description="RFC 9162 §2.1.3 audit path, base64.")
    checkpoint: str | None = Field(
        description="The signed checkpoint of tree_size, if the broker issued one of it."
    )


class ConsistencyOut(BaseModel):
    first: int
    second: int
    proof: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, base64.")


class SearchPage(BaseModel):
    tree_size: int
    entries: list[EntryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page.")
