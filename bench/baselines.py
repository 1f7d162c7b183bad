"""What the broker's figures are read against, measured in the same run: a trivial FastAPI
endpoint served as the broker is (bench/trivial.py, driven by wrk exactly as the broker is),
and one core's Ed25519 verification rate."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import pool, servers
from bench.accept import Rounds
from bench.driver import run_wrk


def trivial(plan: list[tuple[int, int]], seconds: float, per_second: int = 12_000) -> list[Rounds]:
    """The trivial endpoint's rounds at each (connections, repetitions)."""
    found = []
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        workdir = Path(tmp)
        with servers.trivial(workdir) as process:
            requests = workdir / "trivial.pool"
            pool.write(requests, pool.plain(process.url, "/trivial", int(per_second * seconds)))
            run_wrk(process.url, requests, 16, min(3, seconds), server_pid=process.popen.pid)
            for connections, repetitions in plan:
                rounds = Rounds(connections)
                for _ in range(repetitions):
                    rounds.runs.append(
                        run_wrk(
                            process.url,
                            requests,
                            connections,
                            seconds,
                            server_pid=process.popen.pid,
                        )
                    )
                print(
                    f"  trivial endpoint, {connections:>3} connections: "
                    f"{rounds.median('rate') or 0:8.0f} requests/s"
                )
                found.append(rounds)
    return found


def ed25519_verifications_per_second(seconds: float = 1.0) -> float:
    """One core verifying signatures of ~1 KiB messages for ``seconds``."""
    key = Ed25519PrivateKey.generate()
    message = b"x" * 1024
    signature = key.sign(message)
    public = key.public_key()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            public.verify(signature, message)
        count += 200
    return count / elapsed
