"""`make bench` (issue 21): the broker measured from outside, each figure beside a baseline
from the same run, the targets checked.

    python -m bench [--quick] [--only accept,e2e,ledger,growth]

1. accept: wrk posting pre-signed, never-repeated referrals (POST /v1/messages, ~1 KiB
   sealed payloads, each a new case with its consent registered first) to `trm-broker
   serve` on PostgreSQL (fsync on, a fresh database) and SQLite, at 4, 16 and 64
   connections, beside a trivial FastAPI endpoint served the same way and one core's
   Ed25519 verification rate; 2. the consent registrations (POST /v1/consents) of the same
   rounds; 3. e2e: POST to the recipient node's signed acknowledgement at 50, 200 and 500
   messages/s; 4. ledger: integration rate, proof times at 10^3 … 10^7 entries; 5. growth:
   accept with 10^6 entries in the ledger, then `trm-broker ledger verify` over them against
   raw SHA-256 of the same bytes; 6. memory: the brokers' and the verifier's peak RSS.

Exits 1 if a target does not hold or a round had an answer that is not 2xx. ``--quick``
(seconds, small sizes, fewer connections: what `make test` runs) checks neither: it keeps
the harness working, and reports failed rounds without failing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from bench import accept, baselines, e2e, proofs, results
from bench.results import Row
from trm_broker.logs import configure_logging

PARTS = ("accept", "e2e", "ledger", "growth")
#: Parts run only when named in --only (a subset of what another part measures).
EXTRA_PARTS = ("verify",)


@dataclass(frozen=True)
class Plan:
    rounds: list[tuple[int, int]]  # (connections, repetitions)
    seconds: float
    warmup: float
    trivial_seconds: float
    e2e_rates: list[float]
    e2e_seconds: float
    proof_sizes: list[int]
    integrate: int
    growth_entries: int
    growth_rounds: list[tuple[int, int]]
    #: The smallest pool of referrals a round sends (each with its consent registered first).
    smallest_pool: int
    #: The accept benches: (backend, TRM_PROCESSES); the targets read the 1-process ones.
    brokers: tuple[tuple[str, int], ...] = (("postgresql", 1), ("postgresql", 2), ("sqlite", 1))


FULL = Plan(
    rounds=[(4, 1), (16, 3), (64, 1)],
    seconds=30,
    warmup=5,
    trivial_seconds=10,
    e2e_rates=[50, 200, 500],
    e2e_seconds=10,
    proof_sizes=[10**3, 10**4, 10**5, 10**6, 10**7],
    integrate=20_000,
    growth_entries=10**6,
    growth_rounds=[(16, 1)],
    smallest_pool=200,
)
QUICK = Plan(
    rounds=[(2, 1), (8, 1)],
    seconds=2,
    warmup=1,
    trivial_seconds=1,
    e2e_rates=[10],
    e2e_seconds=2,
    proof_sizes=[10**3, 10**4],
    integrate=300,
    growth_entries=2_000,
    growth_rounds=[(16, 1)],
    smallest_pool=40,
    brokers=(("postgresql", 1), ("sqlite", 1)),
)


def _series(found: list[accept.Rounds]) -> list[dict[str, Any]]:
    return [{"connections": r.connections, "rate": r.median("rate")} for r in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds; targets not checked")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help="comma-separated: " + ",".join(PARTS + EXTRA_PARTS) + " (verify: only growth's "
        "`ledger verify` over the bulk-loaded ledger, without the accept rounds)",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    plan = QUICK if args.quick else FULL
    configure_logging("warning")
    data: dict[str, Any] = {"machine": results.machine(), "quick": args.quick}
    rows: list[Row] = []
    failed_rounds = 0
    rss: list[float] = []
    verify: dict[str, Any] = {}
    throughput: dict[str, Any] = {}

    if parts & {"accept", "growth"}:
        print("baselines")
        trivial = baselines.trivial(plan.rounds, plan.trivial_seconds)
        ed25519 = baselines.ed25519_verifications_per_second()
        print(f"  Ed25519: {ed25519:,.0f} verifications/s on one core")
        data["baselines"] = {
            "trivial": [r.summary() for r in trivial],
            "ed25519_verifications_per_second": ed25519,
        }
        throughput["trivial endpoint"] = _series(trivial)
        ceiling = {r.connections: r.median("rate") for r in trivial}

    backends: dict[str, accept.AcceptResult] = {}
    if "accept" in parts:
        for backend, processes in plan.brokers:
            label = backend if processes == 1 else f"{backend}-{processes}"
            print(f"accept on {backend}, {processes} process(es)")
            found = accept.measure(
                backend,
                plan.rounds,
                plan.seconds,
                plan.warmup,
                estimate=plan.smallest_pool / 2,
                smallest=plan.smallest_pool,
                processes=processes,
            )
            backends[label] = found
            if processes == 1:  # the RSS target is one process's
                rss.append(found.broker_peak_rss_mb)
            data.setdefault("accept", {})[label] = found.json()
            throughput[f"messages, {label}"] = _series(found.messages)
            throughput[f"consents, {label}"] = _series(found.consents)
            for kind, rounds in (("messages", found.messages), ("consents", found.consents)):
                for r in rounds:
                    failed_rounds += len(r.runs) - len(r.good)
                    rows.append(_rate_row(label, kind, r, ceiling, ed25519))

    if "growth" in parts:
        print(f"accept on postgresql with {plan.growth_entries:,} ledger entries")
        grown = accept.measure(
            "postgresql",
            plan.growth_rounds,
            plan.seconds,
            plan.warmup,
            preload=plan.growth_entries,
            estimate=plan.smallest_pool / 2,
            smallest=plan.smallest_pool,
            after=_verify,
        )
        rss.append(grown.broker_peak_rss_mb)
        data["growth"] = grown.json()
        verify = dict(grown.extra)
        for r in grown.messages:
            failed_rounds += len(r.runs) - len(r.good)

    latencies: list[e2e.Latency] = []
    if "e2e" in parts:
        print("end to end (PostgreSQL, one broker, one node)")
        latencies, skipped, e2e_rss = e2e.measure(plan.e2e_rates, plan.e2e_seconds)
        rss.append(e2e_rss)
        data["end_to_end"] = [x.json() for x in latencies]
        data["end_to_end_skipped_rates"] = skipped
        failed_rounds += sum(1 for x in latencies if any(not c.startswith("2") for c in x.statuses))
        for x in latencies:
            rows.append(
                Row(
                    f"end to end at {x.rate:.0f} messages/s offered ({x.send_rate:.0f}/s sent; "
                    f"p50 {e2e._ms(x.p50_ms)}, p95 {e2e._ms(x.p95_ms)}, max {e2e._ms(x.max_ms)}; "
                    f"{x.acknowledged} of {x.sent} acknowledged; "
                    f"{'kept up' if x.kept_up else 'did not keep up'}): p99",
                    x.p99_ms,
                    "ms",
                )
            )

    if "verify" in parts and "growth" not in parts:
        print(f"ledger verify over {plan.growth_entries:,} bulk-loaded entries (PostgreSQL)")
        verify = accept.after_preload("postgresql", plan.growth_entries, _verify)
        data["verify"] = verify

    ledger: dict[str, Any] = {}
    if "ledger" in parts:
        print("ledger")
        ledger = proofs.ledger_figures(plan.proof_sizes, plan.integrate)
        data["ledger"] = ledger
        for p in ledger["proofs"]:
            name = "SQLite" if p["backend"] == "sqlite" else "PostgreSQL"
            rows.append(
                Row(
                    f"inclusion proof, {name}, at {p['entries']:,} entries (consistency "
                    f"{p['consistency_ms']:.2f} ms)",
                    p["inclusion_ms"],
                    "ms",
                )
            )

    data["throughput"] = throughput
    rows += _target_rows(
        plan, backends, data, ceiling if throughput else {}, latencies, ledger, verify, rss
    )
    checked = not args.quick and parts == set(PARTS)
    path = results.write(data, rows, checked)
    print()
    print(results.table(rows, checked))
    print(f"\nresults: {path} (and .json, .png)")
    missed = [r.figure for r in rows if r.holds is False]
    if failed_rounds:
        print(f"FAILED: {failed_rounds} round(s) had answers that were not 2xx (see the JSON)")
    if not checked:
        print("targets: not checked (" + ("--quick" if args.quick else "--only") + ")")
        # --quick keeps the bench working in `make test` on a busy machine, where an
        # overloaded broker may refuse (SQLite: 503 while the database is locked): its
        # rounds are reported as failed above, and the exit status is the harness's own.
        return 1 if failed_rounds and not args.quick else 0
    print("targets: " + ("all hold" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed or failed_rounds else 0


def _verify(cluster: Any) -> dict[str, Any]:
    """`trm-broker ledger verify` over the grown ledger, and raw SHA-256 of its entries."""
    import asyncio

    import httpx

    from trm_broker.dev import demo

    keys = demo.register_auditor(cluster, "at.bench-auditor", "AT")
    info = httpx.get(cluster.broker.url + "/v1/broker", timeout=30).json()
    found = proofs.verify_rate(cluster.broker.url, info["ledger"]["verifier_key"], keys)
    count, raw = asyncio.run(proofs.raw_sha256_rate(cluster.database_url))
    print(
        f"  ledger verify: {found['rate']:,.0f} entries/s over {found['entries']:,} entries "
        f"(raw SHA-256 of the same bytes: {raw:,.0f}/s), verifier peak RSS "
        f"{found['peak_rss_mb']:.0f} MiB"
    )
    return {"verify": found, "raw_sha256_per_second": raw, "raw_sha256_entries": count}


def _rate_row(
    backend: str,
    kind: str,
    r: accept.Rounds,
    ceiling: dict[int, float | None],
    ed25519: float,
) -> Row:
    name = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(backend) or (
        "PostgreSQL, " + backend.rsplit("-", 1)[1] + " processes (TRM_PROCESSES)"
    )
    path = "POST /v1/messages" if kind == "messages" else "POST /v1/consents"
    p99 = r.median_latency("p99")
    cpu = r.median("server_ms_per_request")
    client = r.median("client_cpu_share")
    return Row(
        f"{path}, {name}, {r.connections} connections (p99 "
        + ("-" if p99 is None else f"{p99:.0f} ms")
        + (f", broker CPU {cpu:.1f} ms/request" if cpu else "")
        + (f", wrk CPU {100 * client:.1f} % of a core" if client is not None else "")
        + (
            f", {len(r.runs) - len(r.good)} of {len(r.runs)} rounds failed"
            if len(r.good) < len(r.runs)
            else ""
        )
        + ")",
        r.median("rate"),
        "/s",
        ceiling.get(r.connections),
        "trivial endpoint",
    )


def _target_rows(
    plan: Plan,
    backends: dict[str, accept.AcceptResult],
    data: dict[str, Any],
    ceiling: dict[int, float | None],
    latencies: list[e2e.Latency],
    ledger: dict[str, Any],
    verify: dict[str, Any],
    rss: list[float],
) -> list[Row]:
    rows = []
    pg = backends["postgresql"].at(16) if "postgresql" in backends else None
    lite = backends["sqlite"].at(16) if "sqlite" in backends else None
    if pg is not None:
        rate = pg.median("rate")
        rows.append(
            Row(
                "accept, PostgreSQL, 16 connections",
                rate,
                "messages/s",
                target="≥ 1,000/s",
                holds=bool(rate and rate >= 1000),
            )
        )
        trivial = ceiling.get(16)
        rows.append(
            Row(
                "accept against the trivial endpoint, 16 connections",
                rate,
                "messages/s",
                trivial,
                "trivial endpoint",
                target="≥ 30 %",
                holds=bool(rate and trivial and rate >= 0.3 * trivial),
            )
        )
        p99 = pg.median_latency("p99")
        rows.append(
            Row(
                "accept p99, PostgreSQL, 16 connections",
                p99,
                "ms",
                target="< 50 ms",
                holds=p99 is not None and p99 < 50,
            )
        )
    if lite is not None:
        rate = lite.median("rate")
        rows.append(
            Row(
                "accept, SQLite, 16 connections",
                rate,
                "messages/s",
                target="≥ 500/s",
                holds=bool(rate and rate >= 500),
            )
        )
    by_rate = {x.rate: x for x in latencies}
    if plan.e2e_rates and latencies is not None and "end_to_end" in data:
        at200 = by_rate.get(200.0)
        rows.append(
            Row(
                "end to end p99 at 200 messages/s"
                + ("" if at200 is None else "" if at200.kept_up else " (did not keep up)")
                + (" (not run: a backlog remained at a lower rate)" if at200 is None else ""),
                at200.p99_ms if at200 else None,
                "ms",
                target="≤ 100 ms",
                holds=bool(at200 and at200.kept_up and (at200.p99_ms or 1e9) <= 100),
            )
        )
        at500 = by_rate.get(500.0)
        rows.append(
            Row(
                "end to end at 500 messages/s: acknowledged of sent"
                + (" (not run: a backlog remained at a lower rate)" if at500 is None else ""),
                at500.acknowledged if at500 else None,
                "messages",
                float(at500.sent) if at500 else None,
                "sent",
                target="all, backlog drained",
                holds=bool(at500 and at500.kept_up),
            )
        )
    if ledger:
        rows.append(Row("ledger integration", ledger["integration_rate"], "entries/s"))
        for backend in ("postgresql", "sqlite"):
            found = [p for p in ledger["proofs"] if p["backend"] == backend]
            if not found:
                continue
            largest = found[-1]
            slowest = max(largest["inclusion_ms"], largest["consistency_ms"])
            name = "SQLite" if backend == "sqlite" else "PostgreSQL"
            rows.append(
                Row(
                    f"slowest proof (inclusion, consistency), {name}, at "
                    f"{largest['entries']:,} entries",
                    slowest,
                    "ms",
                    target="≤ 2 ms at 10^7",
                    holds=slowest <= 2 if largest["entries"] >= 10**7 else None,
                )
            )
    if verify:
        rate, raw = verify["verify"]["rate"], verify["raw_sha256_per_second"]
        rows.append(
            Row(
                f"ledger verify over {verify['verify']['entries']:,} entries",
                rate,
                "entries/s",
                target="≥ 50,000/s",
                holds=rate >= 50_000,
            )
        )
        rows.append(
            Row(
                "ledger verify against raw SHA-256",
                rate,
                "entries/s",
                raw,
                "raw SHA-256",
                target="≥ 25 %",
                holds=rate >= 0.25 * raw,
            )
        )
        rows.append(Row("verifier peak RSS", verify["verify"]["peak_rss_mb"], "MiB"))
    if pg is not None and "growth" in data:
        grown = data["growth"]["messages"][0]["rate"]
        empty = pg.median("rate")
        rows.append(
            Row(
                f"accept with {plan.growth_entries:,} ledger entries, 16 connections",
                grown,
                "messages/s",
                empty,
                "empty ledger",
                target="within 10 %",
                holds=bool(grown and empty and grown >= 0.9 * empty),
            )
        )
    if rss:
        rows.append(
            Row(
                "broker peak RSS (largest of the runs)",
                max(rss),
                "MiB",
                target="< 300 MB",
                holds=max(rss) < 300,
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
