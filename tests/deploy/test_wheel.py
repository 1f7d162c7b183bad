"""The wheel (what the container image installs) carries the whole package and the Alembic
scripts: built from the files the Dockerfile copies, installed into a fresh venv, its
`trm-broker db upgrade` brings an empty database to the head revision."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT
from trm_broker.store.migrate import head_revision
from trm_broker.store.models import Base

# What the Dockerfile's builder stage copies (a test there checks they are in the context).
SOURCES = ("pyproject.toml", "README.md", "trm_broker", "migrations")


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built without build isolation (no network): from a copy, so no build/ folder is left
    in the working tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", dist, source, cwd=work,
    )  # fmt: skip
    (built,) = dist.glob("trm_broker-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel alone; the dependencies are the test venv's, seen
    through a .pth file (which adds a folder, not its own .pth files: the editable install
    of the working tree stays out)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, cwd=venv.parent,
    )  # fmt: skip
    site = _run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv.parent
    ).strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test-dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    return venv


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TRM_", "PYTHON", "VIRTUAL_ENV"))
    }


def test_the_wheel_carries_every_module_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "trm_broker").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    missing = sorted(package - names)
    assert not missing, f"not in the wheel (add to pyproject.toml's packages): {missing}"
    migrations = {
        "trm_broker/" + path.relative_to(ROOT).as_posix()
        for path in (ROOT / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert migrations
    assert migrations <= names, sorted(migrations - names)


def test_db_upgrade_from_the_installed_wheel_reaches_head(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    environment = _clean_environment()
    located = _run(
        python, "-c", "from trm_broker.store.migrate import MIGRATIONS_DIR; print(MIGRATIONS_DIR)",
        cwd=tmp_path, env=environment,
    ).strip()  # fmt: skip
    assert Path(located).is_relative_to(installed), f"migrations found at {located}"

    database = tmp_path / "state" / "broker.db"
    environment["TRM_DATABASE_URL"] = f"sqlite+aiosqlite:///{database}"
    output = _run(installed / "bin" / "trm-broker", "db", "upgrade", cwd=tmp_path, env=environment)
    assert "upgraded" in output

    with sqlite3.connect(database) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert revision == head_revision()
    assert set(Base.metadata.tables) <= tables
