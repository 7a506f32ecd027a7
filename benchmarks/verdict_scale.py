"""How a verdict grows with the ledger: 10^4 .. 10^7 observations, SQLite and PostgreSQL.

For each backend and each size N (``--sizes``, default 10^4, 10^5, 10^6, 10^7), in the same run:

* a fresh ledger gets one frozen protocol and one succeeded run of N observations: two signals
  (candidate ``cand``, baseline ``base``) on N/2 items, spread over G groups (G grows with N: 2,
  10, 100, 100 by default, ``--groups``), judged labels alternating by item, candidate AUROC about
  0.80 and baseline about 0.70 in every group. The rows are written through the store's bulk path
  (``insert_observations``: COPY / executemany), streamed in chunks, so the set-up itself has
  bounded memory; its time is reported but it is not what is measured;
* the **measured** step is a user's ``docket verdict bench-scale --json`` in a fresh process
  (import, connect, read every observation the rule needs, compute, record), timed wall clock,
  best of ``--repeats``, with the peak RSS of that process (its own ``ru_maxrss``);
* growth: time(N) / time(previous N) next to the size ratio (10x); linear growth means the
  per-observation time (``us/obs``) stays flat once start-up is amortised. The first size is
  dominated by interpreter start-up (about 1.5 s here), stated in the output.

The rule: the paper's shape (per group, candidate vs the fixed best baseline, margin 0.02, a win
needs the CI of the AUROC difference to exclude 0; PROVEN with >= 1 win) with the DeLong CI
(``--ci delong``, default) because a 10,000-resample bootstrap over 5 million items per signal is
4e10 draws, minutes on any CPU; ``--ci paired_bootstrap --resamples R`` times the bootstrap
instead. Goal (issue 15): linear growth and a 10^7-observation verdict under 30 s, memory
bounded.

Run: ``python benchmarks/verdict_scale.py`` (options: --sizes, --groups, --backends, --ci,
--resamples, --repeats). PostgreSQL: a temporary schema on ``DOCKET_BENCH_POSTGRES`` (default the
local test server), dropped afterwards; skipped with a message when unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text

from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import init_ledger
from docketml.ledger.store.runs import complete_run, create_run
from docketml.protocols.loader import load_protocol_text

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def protocol_text(groups: list[str], ci: str, resamples: int) -> str:
    return f"""docket: 1
id: bench-scale
title: verdict scale benchmark
hypotheses:
  - {{id: H1, statement: cand beats base per group, rule: wins}}
signals:
  cand: {{higher_means: positive}}
  base: {{higher_means: positive, role: baseline}}
labels: {{source: judged, positive: failure}}
groups: [{", ".join(groups)}]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand]
    baselines: [base]
    margin: 0.02
    ci: {{method: {ci}, level: 0.95, resamples: {resamples}, seed: 1}}
    verdicts:
      PROVEN: {{min_wins: 1}}
      DISPROVEN: {{max_wins: 0}}
jobs:
  - {{name: probe, kind: python, entry: "bench:probe"}}
"""


def fill_sql(dialect: str, run_id: int, n_items: int, groups: list[str]) -> str:
    """One server-side ``INSERT ... SELECT`` of ``n_items`` x 2 signals (the set-up's fast bulk
    loader: no row crosses the wire). Item ``i`` is ``i{i}`` in group ``g{i % G}``, label
    ``(i // G) % 2`` (both classes in every group); values binormal by Box-Muller on the
    server's ``random()``: positives shifted by 1.19 (cand, AUROC ~0.80) and 0.74 (base, AUROC
    ~0.70) standard deviations."""
    n_groups = len(groups)
    if dialect == "postgresql":
        series = f"SELECT i FROM generate_series(0, {n_items - 1}) AS t(i)"
        uniform = "(1.0 - random())"
    else:
        series = (
            f"WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t "
            f"WHERE i < {n_items - 1}) SELECT i FROM t"
        )
        uniform = "(0.5 - random() / 18446744073709551616.0)"  # in (0, 1]
    normal = f"sqrt(-2.0 * ln({uniform})) * cos(6.283185307179586 * {uniform})"
    return (
        "INSERT INTO observations (run_id, grp, item, label, signal, value) "
        f"SELECT {run_id}, 'g' || (i % {n_groups}), 'i' || i, (i / {n_groups}) % 2, s.name, "
        f"{normal} + s.shift * ((i / {n_groups}) % 2) "
        f"FROM ({series}) AS items CROSS JOIN "
        "(SELECT 'cand' AS name, 1.19 AS shift UNION ALL SELECT 'base', 0.74) AS s"
    )


@contextmanager
def backend(name: str) -> Iterator[str | None]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/ledger.db"
        return
    base = os.environ.get("DOCKET_BENCH_POSTGRES", DEFAULT_PG)
    schema = "bench_" + uuid.uuid4().hex[:10]
    try:
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and moves on
        print(f"postgresql: skipped ({type(exc).__name__}: {exc})")
        yield None
        return
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def populate(url: str, n_obs: int, groups: list[str], ci: str, resamples: int) -> float:
    started = time.perf_counter()
    ledger = init_ledger(url)
    loaded = load_protocol_text(protocol_text(groups, ci, resamples), "bench-scale.yaml")
    with ledger.session() as session:
        row = store.register(session, loaded).row
        # the freeze trigger (revision 0004) needs a passing sign-check: a stub that passes
        row, _report, _new = store.freeze(
            session, row.protocol_id, lambda _p: {"passed": True, "checks": []}
        )
        run = create_run(
            session, protocol_pk=row.id, protocol_sha256=row.sha256, job="probe", kind="python",
            config={}, status="running",
        )  # fmt: skip
        session.execute(text(fill_sql(ledger.dialect, run.id, n_obs // 2, groups)))
        complete_run(session, run.id, status="succeeded", wall_s=1.0)
    ledger.engine.dispose()
    return time.perf_counter() - started


CHILD = """
import resource, sys
from docketml.ledger.cli.main import main
try:
    main(["verdict", "bench-scale", "--json"])
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
sys.stdout.flush()
print(f"PEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def time_verdict(url: str) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds and peak RSS (MiB) of one process running ``docket verdict bench-scale
    --json`` (the CLI's own ``main``, as the console script calls it)."""
    env = dict(os.environ, DOCKET_DB=url)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"docket verdict failed ({proc.returncode}): {proc.stderr[-800:]}")
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB ")]
    return elapsed, int(peak[-1].split()[1]) / 1024, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--groups", default="2,10,100,100")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--ci", choices=["delong", "paired_bootstrap"], default="delong")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    group_counts = [int(x) for x in args.groups.split(",")]
    group_counts += [group_counts[-1]] * (len(sizes) - len(group_counts))
    print(f"rule: regime_wins, CI {args.ci}" + (
        f" ({args.resamples} resamples)" if args.ci == "paired_bootstrap" else ""))  # fmt: skip
    for name in args.backends.split(","):
        previous: float | None = None
        for n_obs, n_groups in zip(sizes, group_counts, strict=False):
            groups = [f"g{i}" for i in range(n_groups)]
            with backend(name) as url:
                if url is None:
                    break
                setup_s = populate(url, n_obs, groups, args.ci, args.resamples)
                best, rss, result = float("inf"), 0.0, {}
                for _ in range(args.repeats):
                    elapsed, peak, result = time_verdict(url)
                    best, rss = min(best, elapsed), max(rss, peak)
            h1 = result["hypotheses"][0]
            verdict = f"{result['verdict']} ({h1['wins']}/{len(h1['contests'])} groups won)"
            growth = "" if previous is None else f", x{best / previous:.2f} vs previous size"
            print(
                f"{name}: {n_obs:>10,} observations, {n_groups:>3} groups: verdict {best:7.2f} s "
                f"({best / n_obs * 1e6:6.2f} us/obs), peak RSS {rss:7.0f} MiB{growth}; "
                f"set-up {setup_s:.1f} s; {verdict}"
            )
            previous = best


if __name__ == "__main__":
    main()
