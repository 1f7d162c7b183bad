"""The README stays true: it starts with the two commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from trm_broker.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_quick_start_is_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip()
        for line in quick_start.split("```sh", 1)[1].split("```")[0].splitlines()
    ]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_every_setting_is_documented_with_its_default() -> None:
    for name, field in Settings.model_fields.items():
        row = next(
            (line for line in README.splitlines() if line.startswith(f"| `TRM_{name.upper()}` |")),
            None,
        )
        assert row is not None, f"TRM_{name.upper()} is missing from the README"
        default = field.default
        if isinstance(default, (str, int, float)) and not isinstance(default, bool):
            assert str(default) in row, f"the README's default of TRM_{name.upper()} is stale"
