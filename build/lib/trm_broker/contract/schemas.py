"""The published wire contract (`contracts/`), generated from the code.

`trm-broker contract write` regenerates it; a test fails when the committed files drift
from what the code would write, so the contract another country builds against is the one
this code speaks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from trm_broker.domain.envelope import Envelope
from trm_broker.domain.ledger_entries import ENTRY, ENTRY_MODELS
from trm_broker.domain.messages import HEADER_MODELS
from trm_broker.domain.payloads import PAYLOAD_MODELS, PAYLOAD_VERSION
from trm_broker.domain.signed_objects import AckClaims, KeyStatementClaims, ReceiptClaims
from trm_broker.settings import Settings

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
SCHEMA_ID = "urn:trm-broker:contract:v1:"


def _schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    return _with_id(model.model_json_schema(), name)


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID + name,
        **schema,
    }


def render() -> dict[str, str]:
    """Every contract file, by path relative to `contracts/`, with its exact text."""
    from trm_broker.api.app import create_app
    from trm_broker.node.app import create_node_app

    documents: dict[str, Any] = {
        "schemas/envelope.v1.json": _schema(Envelope, "envelope"),
        "schemas/receipt.v1.json": _schema(ReceiptClaims, "receipt"),
        "schemas/acknowledgement.v1.json": _schema(AckClaims, "acknowledgement"),
        "schemas/key-statement.v1.json": _schema(KeyStatementClaims, "key-statement"),
    }
    for message_type, model in HEADER_MODELS.items():
        name = f"header-{message_type.value}"
        documents[f"schemas/headers/{message_type.value}.v1.json"] = _schema(model, name)
    for message_type, payload in PAYLOAD_MODELS.items():
        name = f"payload-{message_type.value}"
        path = f"schemas/payloads/{message_type.value}.v{PAYLOAD_VERSION}.json"
        documents[path] = _schema(payload, name)
    for event_type, entry in ENTRY_MODELS.items():
        documents[f"schemas/ledger/{event_type.value}.v1.json"] = _schema(
            entry, f"ledger-{event_type.value}"
        )
    documents["schemas/ledger/entry.v1.json"] = _with_id(
        {"title": "Ledger entry", **ENTRY.json_schema()}, "ledger-entry"
    )
    settings = Settings()
    documents["openapi/broker.json"] = create_app(settings).openapi()
    documents["openapi/node.json"] = create_node_app(settings).openapi()
    return {
        path: json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for path, document in documents.items()
    }


def write(target: Path = CONTRACTS_DIR) -> list[Path]:
    return write_files(render(), target)


def write_files(files: dict[str, str], target: Path) -> list[Path]:
    """Write each rendered file (path relative to ``target``: its text); return the paths."""
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
