"""The documentation keeps its promises: the README is a short front door that starts with the
two commands and maps every page of docs/; every `make` target and `trm-broker` command the
documents show is one the Makefile and the CLI accept as written; every `TRM_` name and
repository path they name exists; and every relative link resolves to a file (and a
heading) inside the repository."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [
    README,
    ROOT / "SECURITY.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "contracts" / "README.md",
    ROOT / "deploy" / "README.md",
]

_FENCE = re.compile(r"^```([A-Za-z]*)\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_SHELL_BREAKS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "(", ")", "2>&1"}


@dataclass(frozen=True)
class Block:
    path: Path
    language: str
    lines: list[str]


def blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file."""
    language: str | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line.strip())
        if fence and language is None:
            language, lines = fence.group(1), []
        elif line.strip() == "```" and language is not None:
            yield Block(path, language, lines)
            language = None
        elif language is not None:
            lines.append(line)


def prose(path: Path) -> Iterator[str]:
    """The lines of a Markdown file outside code blocks, with code spans removed."""
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            yield _CODE_SPAN.sub("", line)


def shell_commands(block: Block) -> Iterator[list[str]]:
    """Each command of a shell block, as the shell splits it (continuations joined, comments
    dropped), cut at the first pipe, redirection or separator."""
    text = "\n".join(block.lines).replace("\\\n", " ")
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for word in lexer:
            if word in _SHELL_BREAKS or set(word) <= set("|&;<>()"):
                if words:
                    yield words
                words = []
            else:
                words.append(word)
        if words:
            yield words


def shell_blocks() -> Iterator[Block]:
    for path in DOCUMENTS:
        yield from (b for b in blocks(path) if b.language in ("sh", "bash", "shell"))


def documented(program: str) -> list[tuple[Path, list[str]]]:
    """Every invocation of ``program`` in the shell blocks (after any ``NAME=value``
    assignments; also as ``.venv/bin/<program>``), with its arguments."""
    found = []
    for block in shell_blocks():
        for words in shell_commands(block):
            at = 0
            while at < len(words) and re.match(r"^[A-Za-z_]\w*=", words[at]):
                at += 1
            if at < len(words) and (words[at] == program or words[at].endswith("/" + program)):
                found.append((block.path, words[at + 1 :]))
    return found


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.MULTILINE))


def trm_broker_command() -> Any:
    """The click command behind the `trm-broker` script (typer may vendor its own click, so
    it is used through its own methods only)."""
    (script,) = entry_points(group="console_scripts", name="trm-broker")
    return typer.main.get_command(script.load())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside and line.startswith("#"):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


# --- the front door ----------------------------------------------------------------------


def test_the_readme_is_a_front_door_under_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_quick_start_is_the_two_commands() -> None:
    quick_start = README.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    first_block = next(b for b in blocks(README) if "\n".join(b.lines) in quick_start)
    commands = [" ".join(words) for words in shell_commands(first_block)]
    assert commands == ["make demo", "make test"]


def test_the_readme_maps_every_document_in_docs() -> None:
    linked = {
        (README.parent / target.split("#")[0]).resolve()
        for line in prose(README)
        for target in _LINK.findall(line)
    }
    for document in sorted((ROOT / "docs").glob("*.md")):
        assert document.resolve() in linked, f"README.md does not link {document.name}"


# --- commands ----------------------------------------------------------------------------


def test_every_make_target_shown_exists() -> None:
    targets = make_targets()
    shown = {(path, words[0]) for path, words in documented("make") if words}
    for path in DOCUMENTS:
        for line in path.read_text(encoding="utf-8").splitlines():
            shown.update((path, t) for t in re.findall(r"`make ([a-z][\w-]*)", line))
    assert {target for _, target in shown} >= {"demo", "test", "test-fast", "lint"}
    for path, target in sorted(shown):
        assert target in targets, f"{path.relative_to(ROOT)} shows `make {target}`"


def test_every_trm_broker_command_shown_parses_as_written() -> None:
    """Each documented invocation names a real command and passes the CLI's own parsing
    (required arguments, option names, values), without running it."""
    root = trm_broker_command()
    invocations = documented("trm-broker")
    assert len(invocations) > 20
    for path, words in invocations:
        where = f"{path.relative_to(ROOT)}: trm-broker {' '.join(words)}"
        command, rest, name = root, list(words), "trm-broker"
        while hasattr(command, "list_commands") and rest and not rest[0].startswith("-"):
            sub = command.commands.get(rest[0])
            assert sub is not None, f"{where}: no command {rest[0]!r}"
            command, name, rest = sub, rest[0], rest[1:]
        assert not hasattr(command, "list_commands"), f"{where}: names a group, not a command"
        try:
            command.make_context(name, rest, resilient_parsing=False)
        except Exception as exc:  # click's UsageError, from whichever click typer uses
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            pytest.fail(f"{where}: {type(exc).__name__}: {message}")


def test_shell_blocks_hold_no_placeholders_a_shell_would_misread() -> None:
    for block in shell_blocks():
        for line in block.lines:
            code = line.split("#", 1)[0]
            where = f"{block.path.name}: {line.strip()}"
            assert not re.search(r"<[A-Za-z][^>]*>", code), where
            assert not re.search(r"…|\.\.\.", code), where


def test_every_trm_variable_named_is_a_setting_or_a_test_knob() -> None:
    """A renamed setting leaves no stale name behind: each ``TRM_`` name in the documents is
    a setting (a trailing ``_`` names a family of them), or a knob the Makefile, the tests
    or the tools read."""
    from trm_broker.settings import Settings

    settings = {f"TRM_{name.upper()}" for name in Settings.model_fields}
    knobs = (ROOT / "Makefile").read_text(encoding="utf-8") + "".join(
        path.read_text(encoding="utf-8")
        for folder in ("tests", "tools", "bench")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh") and path != Path(__file__)
    )
    for path in DOCUMENTS:
        for name in set(re.findall(r"TRM_[A-Z0-9_]+", path.read_text(encoding="utf-8"))):
            family = name.endswith("_") and any(s.startswith(name) for s in settings)
            known = name in settings or family or re.search(rf"\b{name}\b", knobs)
            assert known, f"{path.relative_to(ROOT)} names {name}, which nothing reads"


# --- links -------------------------------------------------------------------------------


def links() -> Iterator[tuple[Path, str]]:
    for path in DOCUMENTS:
        for line in prose(path):
            for target in _LINK.findall(line):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: …
                    yield path, target


def test_every_relative_link_resolves_inside_the_repository() -> None:
    found = list(links())
    assert len(found) > 30
    for path, target in found:
        where = f"{path.relative_to(ROOT)} links {target}"
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.is_relative_to(ROOT), f"{where}: outside the repository"
        assert linked.exists(), f"{where}: no such file"
        if anchor:
            assert linked.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
            assert anchor in anchors(linked), f"{where}: no such heading"


def test_every_repository_path_named_exists() -> None:
    """A module moved or a test renamed leaves no stale path behind (a line that says the
    thing is planned may name what does not exist yet)."""
    named = re.compile(
        r"`((?:trm_broker|tests|tools|deploy|contracts|security|migrations|bench)/[^`\s]*)`"
    )
    for path in DOCUMENTS:
        for line in path.read_text(encoding="utf-8").splitlines():
            for name in named.findall(line):
                if "planned" in line.lower():
                    continue
                where = f"{path.relative_to(ROOT)} names {name}"
                assert (ROOT / name.split(":")[0]).exists(), f"{where}, which does not exist"


def test_no_document_cites_a_design_outside_the_repository() -> None:
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{path.relative_to(ROOT)} refers outside the repository"
        for match in re.finditer(r"(?<![\w/])DESIGN\.md", text):
            line = text[: match.start()].count("\n") + 1
            pytest.fail(f"{path.relative_to(ROOT)}:{line} cites DESIGN.md; cite docs/design.md")


def test_design_keeps_the_section_numbers_others_cite() -> None:
    headings = [
        line for line in (ROOT / "docs" / "design.md").read_text().splitlines() if line[:3] == "## "
    ]
    numbers = [int(h[3:].split(".", 1)[0]) for h in headings]
    assert numbers == list(range(1, 12))
