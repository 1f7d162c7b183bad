"""The layout's rule (docs/design.md §3): dependencies point downward only. Every import of
the project inside a package must be of a layer below it (or its own); nothing in the
runtime imports the entry points and tools (`cli`, `dev`, `contract`)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trm_broker"
PLUMBING = {"settings", "settings_explained", "logs", "__version__"}

#: What each part may import of the project, besides itself.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "crypto": {"domain"},
    "ledger": {"crypto"},
    "store": {"domain", "crypto"} | PLUMBING,
    "web": {"domain", "crypto"} | PLUMBING,
    "delivery": {"domain", "crypto", "ledger", "store", "web"} | PLUMBING,
    "background": {"domain", "crypto", "ledger", "store", "web", "delivery"} | PLUMBING,
    "api": {"domain", "crypto", "ledger", "store", "web", "delivery", "background"} | PLUMBING,
    "node": {"domain", "crypto", "ledger", "store", "web"} | PLUMBING,
    "settings": PLUMBING,
    "settings_explained": PLUMBING,
    "logs": PLUMBING,
}
TOOLS = {"cli", "dev", "contract"}


def _imports() -> dict[str, set[tuple[str, str]]]:
    """For each part, the (part it imports, file) pairs."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "trm_broker":
                    names = [f"trm_broker.{alias.name}" for alias in node.names]
                else:
                    names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "trm_broker" and len(pieces) > 1 and pieces[1] != part:
                    found[part].add((pieces[1], str(path.relative_to(PACKAGE))))
    return found


def test_every_part_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{where} ({part}) imports trm_broker.{target}"
        for part, targets in _imports().items()
        if part not in TOOLS
        for target, where in targets
        if target not in ALLOWED[part]
    ]
    assert wrong == [], "dependencies must point downward (docs/design.md §3)"


def test_every_part_of_the_runtime_has_its_rule() -> None:
    parts = {
        p.name.removesuffix(".py")
        for p in PACKAGE.iterdir()
        if not p.name.startswith("_") and (p.is_dir() or p.suffix == ".py")
    }
    assert parts - TOOLS <= set(ALLOWED), "give a new part its place in ALLOWED"
