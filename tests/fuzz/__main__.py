"""Run one parser fuzz target with atheris (libFuzzer).

    python -m tests.fuzz --list
    python -m tests.fuzz jws --runs 100000
    python -m tests.fuzz jws --reproduce var/fuzz/jws/crash-<sha1>

The seeds are written to ``var/fuzz/<target>/seeds/`` and given to libFuzzer as
``-seed_inputs``, so a run grows no corpus unless ``--corpus DIR`` names one. A crash prints
the traceback and the input in hex, writes it to ``var/fuzz/<target>/crash-<sha1>``, and
exits non-zero (``--reproduce`` runs it again). Further libFuzzer flags (``-seed=1``,
``-max_total_time=60``) pass through.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUNS = int(os.environ.get("TRM_FUZZ_RUNS", "10000"))
#: Inputs larger than the biggest thing a parser sees in practice add nothing but time.
MAX_LEN = 65_536
#: Seconds one input may take before libFuzzer calls it a hang.
TIMEOUT = 30


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("target", nargs="?", help="the target to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--runs", type=_positive, default=DEFAULT_RUNS, help="inputs to try (-runs=)"
    )
    parser.add_argument("--max-len", type=int, default=MAX_LEN, help="largest input (-max_len=)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per input")
    parser.add_argument("--corpus", type=Path, help="a corpus directory to read and grow")
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "var" / "fuzz",
        help="where <target>/ gets its seeds, dictionary and crash inputs (var/fuzz)",
    )
    parser.add_argument(
        "--reproduce", type=Path, metavar="FILE", help="run the target once on FILE, no atheris"
    )
    return parser


def _write_seeds(directory: Path, inputs: list[bytes]) -> list[Path]:
    """Write the seeds, each atomically: another run of the same target may be reading."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, data in enumerate(inputs):
        path = directory / f"seed-{number:02d}"
        scratch = directory / f".seed-{number:02d}.{os.getpid()}"
        scratch.write_bytes(data)
        scratch.replace(path)
        paths.append(path)
    return paths


def _write_dictionary(path: Path, tokens: tuple[bytes, ...]) -> None:
    """libFuzzer's dictionary format: one quoted token a line, other bytes as \\xNN."""

    def quoted(token: bytes) -> str:
        printable = (chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)
        return '"' + "".join(printable) + '"'

    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text("".join(quoted(token) + "\n" for token in tokens), encoding="ascii")
    scratch.replace(path)


def _fuzz(
    atheris: ModuleType, targets: ModuleType, args: argparse.Namespace, extra: list[str]
) -> None:
    target = targets.TARGETS[args.target]
    work = args.work / target.name
    seed_files = _write_seeds(work / "seeds", [seed.data for seed in target.seeds()])
    dictionary = work / "dictionary"
    _write_dictionary(dictionary, target.tokens)
    runs, accepted = 0, 0

    def one_input(data: bytes) -> None:
        nonlocal runs, accepted
        try:
            accepted += bool(target.run(data))
        except Exception:
            # libFuzzer prints small inputs only; the hex of any input, to reproduce it.
            print(f"fuzz {target.name}: crashing input (hex): {data.hex()}", file=sys.stderr)
            sys.stderr.flush()
            raise
        runs += 1
        if runs == args.runs:  # libFuzzer exits right after this call, without Python's atexit
            print(
                f"fuzz {target.name}: {runs} runs completed, {accepted} accepted by the parser, "
                f"{runs - accepted} refused, no crash",
                flush=True,
            )

    flags = [
        f"-runs={args.runs}",
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout}",
        f"-artifact_prefix={work}{os.sep}",
        "-seed_inputs=" + ",".join(str(path) for path in seed_files),
        f"-dict={dictionary}",
        *extra,
    ]
    if args.corpus is not None:
        args.corpus.mkdir(parents=True, exist_ok=True)
        flags.append(str(args.corpus))
    atheris.Setup([sys.argv[0], *flags], one_input)
    atheris.Fuzz()  # does not return: libFuzzer exits 0 after the runs, non-zero on a crash


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [flag for flag in extra if not (flag.startswith("-") and "=" in flag)]
    if unknown:
        parser.error(
            f"unrecognised arguments: {' '.join(unknown)} (libFuzzer flags are -name=value)"
        )
    if args.list or args.reproduce is not None or args.target is None:
        from tests.fuzz import targets

        if args.list or args.target is None:
            for target in targets.TARGETS.values():
                print(f"{target.name:10} {target.summary}")
            return 0 if args.list else 2
        if args.target not in targets.TARGETS:
            parser.error(f"unknown target {args.target!r}; one of {', '.join(targets.TARGETS)}")
        accepted = targets.TARGETS[args.target].run(args.reproduce.read_bytes())
        print(f"fuzz {args.target}: {args.reproduce} {'accepted' if accepted else 'refused'}")
        return 0
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install -e '.[dev]' (Linux)", file=sys.stderr)
        return 2
    # Coverage feedback from the project's own code: instrument it as it is imported.
    with atheris.instrument_imports(include=["trm_broker"]):
        from tests.fuzz import targets
    if args.target not in targets.TARGETS:
        parser.error(f"unknown target {args.target!r}; one of {', '.join(targets.TARGETS)}")
    _fuzz(atheris, targets, args, extra)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
