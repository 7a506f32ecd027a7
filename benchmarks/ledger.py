"""Ledger ingest throughput: 1,000,000 observations on SQLite and on PostgreSQL.

For each backend, in the same run:

* **bulk path**: ``ledger.runs.insert_observations`` (what ``complete_run`` and ``docket ingest``
  use: COPY on PostgreSQL, DB-API executemany on SQLite) records 1,000,000 observations of one
  run in one transaction (commit included in the time);
* **ORM row by row**, two ways: one ``session.add(ObservationRow(...))`` per observation and one
  commit (SQLAlchemy 2 then batches the INSERTs of the flush, a strong baseline), and the same
  with ``session.flush()`` after every add (one INSERT round trip per row). Timed on slices of
  ``--orm-slice`` rows (default 20,000) and ``--orm-slice / 4`` rows and scaled linearly to
  1,000,000 (stated in the output);
* **server alone** (PostgreSQL, reference): COPY of the same rows already encoded as COPY text,
  i.e. the server's own floor (heap, index, foreign-key checks, WAL, commit);
* **verdict-style query**: the labels and values of 4 of the run's 8 signals (500,000 rows),
  grouped by group into numpy arrays per (group, signal), in recording order. Goal: bulk >= 20x
  the ORM rate and the query < 2 s.

* **peak memory of the user's commands** (``--peak-rows``, default 1,000,000 rows = 2,000,000
  observations, 0 skips): a JSONL file of that many rows (2 signals, 10 groups) is written
  (streamed), then ``docket ingest``, ``docket verdict`` (a DeLong ``regime_wins`` rule) and
  ``docket audit`` each run in a fresh process; wall time and that process's own peak RSS
  (``ru_maxrss``) are printed. Goal (issue 16): bounded memory -- the ingest streams its file,
  the verdict and the audit stream the observations by group.

The insert paths are interleaved, ``--repeats`` times each (every repeat into a fresh run:
each bulk repeat records another 1,000,000 rows); the best time of each is reported, as timeit
does, because on a shared machine the noise only ever adds time. The query is best of 3.

Workload: 5 groups x 25,000 items x 8 signals, label alternating by item.
SQLite: a temporary file. PostgreSQL: a temporary schema on ``DOCKET_BENCH_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped afterwards; skipped with a message
when the server is unreachable.

Run: ``python benchmarks/ledger.py`` (options: --rows, --orm-slice, --repeats, --backends).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named ledger.py: run as a script, its directory would shadow the ``ledger``
# package. Put the repository first instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from docketml.ledger.store import protocols as store  # noqa: E402
from docketml.ledger.store.db import Ledger, init_ledger  # noqa: E402
from docketml.ledger.store.models import ObservationRow  # noqa: E402
from docketml.ledger.store.runs import create_run, insert_observations  # noqa: E402
from docketml.protocols.loader import load_protocol_text  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GROUPS = [f"group{i}" for i in range(5)]
SIGNALS = [f"signal{i}" for i in range(8)]
QUERY_SIGNALS = SIGNALS[:4]
PROTOCOL = """docket: 1
id: bench-ledger
title: ledger ingest benchmark
hypotheses:
  - {id: H1, statement: signal0 separates the classes, rule: r1}
signals:
  signal0: {higher_means: positive}
labels: {source: judged, positive: failure}
groups: [group0]
decision_rules:
  r1: {kind: threshold, statistic: auroc, signal: signal0, bound: 0.6}
jobs:
  - {name: ingest, kind: synthetic}
"""


def observations(n_rows: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_rows`` observation dicts (the contract of insert_observations)."""
    per_group = n_rows // (len(GROUPS) * len(SIGNALS))
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n_rows).tolist()
    rows: list[dict[str, Any]] = []
    k = 0
    for group in GROUPS:
        for i in range(per_group):
            item = f"{group}-{i}"
            label = i % 2
            for signal in SIGNALS:
                rows.append(
                    {
                        "group": group,
                        "item": item,
                        "signal": signal,
                        "label": label,
                        "value": values[k],
                    }
                )
                k += 1
    return rows


def setup(ledger: Ledger, n_runs: int) -> list[int]:
    """A frozen protocol and ``n_runs`` running runs; return their ids."""
    loaded = load_protocol_text(PROTOCOL, "bench.yaml")
    with ledger.session() as session:
        row = store.register(session, loaded).row
        # the freeze trigger (revision 0004) needs a passing sign-check: the benchmark's stub
        store.freeze(session, row.protocol_id, lambda _p: {"passed": True, "checks": []})
        return [
            create_run(
                session,
                protocol_pk=row.id,
                protocol_sha256=row.sha256,
                job="ingest",
                kind="synthetic",
                config={"attempt": i},
                status="running",
            ).id
            for i in range(n_runs)
        ]


def time_bulk(ledger: Ledger, run_id: int, rows: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    with ledger.session() as session:
        n = insert_observations(session, run_id, rows)
    elapsed = time.perf_counter() - started
    assert n == len(rows)
    return elapsed


def time_server_copy(ledger: Ledger, run_id: int, rows: list[dict[str, Any]]) -> float:
    """PostgreSQL only: COPY of the same rows already encoded as COPY text (encoding not timed),
    i.e. what the server alone needs for them (heap, index, foreign key checks, WAL, commit)."""
    lines = [
        f"{run_id}\t{r['group']}\t{r['item']}\t{r['label']}\t{r['signal']}\t{float(r['value'])!r}\n"
        for r in rows
    ]
    payload = "".join(lines).encode()
    columns = "run_id, grp, item, label, signal, value"
    started = time.perf_counter()
    with ledger.engine.begin() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        with (
            dbapi_conn.cursor() as cursor,
            cursor.copy(f"COPY observations ({columns}) FROM STDIN") as copy,
        ):
            for offset in range(0, len(payload), 1 << 20):
                copy.write(payload[offset : offset + (1 << 20)])
    return time.perf_counter() - started


def time_orm(
    ledger: Ledger, run_id: int, rows: list[dict[str, Any]], flush_each: bool = False
) -> float:
    """``session.add`` per observation, one commit; ``flush_each``: also flush after every add
    (one INSERT round trip per row, the save-as-you-go loop)."""
    started = time.perf_counter()
    with ledger.session() as session:
        for r in rows:
            session.add(
                ObservationRow(
                    run_id=run_id,
                    group=r["group"],
                    item=r["item"],
                    label=r["label"],
                    signal=r["signal"],
                    value=r["value"],
                )
            )
            if flush_each:
                session.flush()
    return time.perf_counter() - started


def verdict_query(ledger: Ledger, run_id: int) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """{group: {signal: (labels, values)}} for the 4 query signals of ``run_id``, as numpy.

    Per signal: the group sizes (one GROUP BY), then labels and values ordered by group and
    recording order (``id``), so only numbers cross the wire row by row (DB-API cursor). A
    docket run records every signal of an item together, so the arrays of different signals
    line up item by item (the benchmark checks the labels do)."""
    postgres = ledger.dialect == "postgresql"
    mark = "%s" if postgres else "?"
    collate = ' COLLATE "C"' if postgres else ""
    where = f"FROM observations WHERE run_id = {mark} AND signal = {mark}"
    counts_sql = f"SELECT grp, count(*) {where} GROUP BY grp ORDER BY grp{collate}"
    values_sql = f"SELECT label, value {where} ORDER BY grp{collate}, id"
    out: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
    with ledger.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            for signal in QUERY_SIGNALS:
                cursor.execute(counts_sql, (run_id, signal))
                counts = cursor.fetchall()
                cursor.execute(values_sql, (run_id, signal))
                table = np.array(cursor.fetchall(), dtype=np.float64).reshape(-1, 2)
                start = 0
                for group, n in counts:
                    chunk = table[start : start + n]
                    out.setdefault(group, {})[signal] = (chunk[:, 0].astype(np.int8), chunk[:, 1])
                    start += n
        finally:
            cursor.close()
    return out


PEAK_PROTOCOL = """docket: 1
id: bench-peak
title: peak memory benchmark
hypotheses:
  - {id: H1, statement: cand beats base per group, rule: wins}
signals:
  cand: {higher_means: positive}
  base: {higher_means: positive, role: baseline}
labels: {source: judged, positive: failure}
groups: [GROUPS]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand]
    baselines: [base]
    margin: 0.02
    ci: {method: delong, level: 0.95}
    verdicts:
      PROVEN: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
jobs:
  - {name: probe, kind: python, entry: "bench:probe"}
"""

PEAK_CHILD = """
import resource, sys
from docketml.ledger.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
sys.stdout.flush()
print(f"PEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def write_results_file(path: Path, n_rows: int, groups: list[str]) -> None:
    """``n_rows`` JSONL rows (2 signals each), written in chunks (bounded memory)."""
    rng = np.random.default_rng(7)
    with path.open("w") as out:
        for start in range(0, n_rows, 100_000):
            k = np.arange(start, min(n_rows, start + 100_000))
            label = (k // len(groups)) % 2
            cand = (rng.standard_normal(len(k)) + 1.19 * label).tolist()
            base = (rng.standard_normal(len(k)) + 0.74 * label).tolist()
            out.write(
                "".join(
                    json.dumps({"group": groups[i % len(groups)], "item": f"i{i}", "label": y,
                                "signals": {"cand": c, "base": b}}) + "\n"
                    for i, y, c, b in zip(k.tolist(), label.tolist(), cand, base, strict=True)
                )
            )  # fmt: skip


def run_child(url: str, args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of ``docket ARGS`` in a fresh process."""
    env = dict(os.environ, DOCKET_DB=url)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, *args], env=env, capture_output=True, text=True,
        check=False, cwd=cwd,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"docket {args[0]} failed ({proc.returncode}): {proc.stderr[-800:]}")
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KIB ")]
    return elapsed, int(peak[-1].split()[1]) / 1024, proc.stdout


def peak_memory(name: str, url: str, n_rows: int) -> dict[str, float]:
    """Ingest, verdict and audit of ``n_rows`` rows (2 observations each), each in its own
    process: wall time and peak RSS."""
    groups = [f"g{i}" for i in range(10)]
    ledger = init_ledger(url)
    loaded = load_protocol_text(PEAK_PROTOCOL.replace("GROUPS", ", ".join(groups)), "peak.yaml")
    with ledger.session() as session:
        row = store.register(session, loaded).row
        store.freeze(session, row.protocol_id, lambda _p: {"passed": True, "checks": []})
    ledger.engine.dispose()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="docket-peak-") as tmp:
        path = Path(tmp) / "results.jsonl"
        write_results_file(path, n_rows, groups)
        size = path.stat().st_size / 2**20
        print(f"\n{name}: peak memory, {n_rows:,} rows = {2 * n_rows:,} observations "
              f"({size:,.0f} MiB JSONL), each command in a fresh process")  # fmt: skip
        steps = [
            ("ingest", ["ingest", "bench-peak", str(path), "--job", "probe", "--json"]),
            ("verdict", ["verdict", "bench-peak", "--json"]),
            ("audit", ["audit", "--json"]),
        ]
        for step, args in steps:
            elapsed, rss, stdout = run_child(url, args, Path(tmp))
            note = ""
            if step == "verdict":
                note = f"; {json.loads(stdout)['verdict']}"
            if step == "audit":
                note = "; clean" if json.loads(stdout).get("clean") else "; NOT clean"
            print(f"  docket {step:<8}: {elapsed:7.2f} s, peak RSS {rss:6.0f} MiB{note}")
            out[f"{step}_s"], out[f"{step}_rss_mib"] = elapsed, rss
    return out


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="docket-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


@contextmanager
def postgres_url() -> Iterator[str]:
    base = os.environ.get("DOCKET_BENCH_POSTGRES", DEFAULT_PG)
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def bench(
    name: str, url: str, rows: list[dict[str, Any]], orm_slice: int, repeats: int
) -> dict[str, float]:
    ledger = init_ledger(url)
    orm_rows = rows[:orm_slice]
    flush_rows = rows[: max(1, orm_slice // 4)]
    try:
        runs = setup(ledger, 3 * repeats + 1)
        bulk_runs = runs[:repeats]
        t_orm, t_flush, t_bulk = [], [], []
        for k, bulk_run in enumerate(bulk_runs):
            t_orm.append(time_orm(ledger, runs[repeats + k], orm_rows))
            t_flush.append(time_orm(ledger, runs[2 * repeats + k], flush_rows, flush_each=True))
            t_bulk.append(time_bulk(ledger, bulk_run, rows))
        with ledger.session() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(ObservationRow)
                .where(ObservationRow.run_id == bulk_runs[0])
            )
        assert stored == len(rows), (stored, len(rows))
        t_query, data = best_of(lambda: verdict_query(ledger, bulk_runs[0]), repeats=3)
        n_query = sum(len(v) for sig in data.values() for _, v in sig.values())
        assert n_query == len(rows) * len(QUERY_SIGNALS) // len(SIGNALS)
        assert set(data) == set(GROUPS) and all(set(v) == set(QUERY_SIGNALS) for v in data.values())
        for by_signal in data.values():  # item by item: the same labels for every signal
            labels = [lab for lab, _ in by_signal.values()]
            assert all(np.array_equal(labels[0], other) for other in labels[1:])
        t_server = None
        if ledger.dialect == "postgresql":
            t_server = time_server_copy(ledger, runs[-1], rows)
    finally:
        ledger.engine.dispose()
    bulk_rate = len(rows) / min(t_bulk)
    orm_rate = len(orm_rows) / min(t_orm)
    flush_rate = len(flush_rows) / min(t_flush)

    def times(ts: list[float]) -> str:
        return "best of " + ", ".join(f"{t:.2f}" for t in ts) + " s"

    def orm_line(label: str, n: int, ts: list[float], rate: float) -> None:
        print(
            f"  {label:<29}: {n:>9,} rows in {min(ts):6.2f} s = {rate:>9,.0f} rows/s   "
            f"({times(ts)}; a {n:,}-row slice, scaled to {len(rows):,}: {len(rows) / rate:,.0f} s)"
        )

    def goal(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"\n{name}  ({ledger.url})")
    print(
        f"  {'bulk insert_observations':<29}: {len(rows):>9,} rows in {min(t_bulk):6.2f} s = "
        f"{bulk_rate:>9,.0f} rows/s   ({times(t_bulk)})"
    )
    orm_line("ORM add per row, one commit", len(orm_rows), t_orm, orm_rate)
    orm_line("ORM add + flush per row", len(flush_rows), t_flush, flush_rate)
    if t_server is not None:
        print(
            f"  {'server alone (reference)':<29}: {len(rows):>9,} rows in {t_server:6.2f} s = "
            f"{len(rows) / t_server:>9,.0f} rows/s   (COPY of pre-encoded text, encoding not "
            f"timed: bulk path at {100 * t_server / min(t_bulk):.0f}% of the server's own speed)"
        )
    ratio, ratio_flush = bulk_rate / orm_rate, bulk_rate / flush_rate
    print(
        f"  {'ratio bulk / ORM':<29}: {ratio:6.1f}x vs one commit (SQLAlchemy batches the "
        f"INSERTs), {ratio_flush:6.1f}x vs flush per row   (goal >= 20x: {goal(ratio >= 20)}, "
        f"{goal(ratio_flush >= 20)})"
    )
    print(
        f"  {'verdict-style query':<29}: {n_query:>9,} rows (4 of 8 signals of one run) -> numpy "
        f"by group and signal in {t_query:.2f} s   (goal < 2 s: {goal(t_query < 2)}; best of 3)"
    )
    return {
        "bulk_rate": bulk_rate,
        "orm_rate": orm_rate,
        "ratio": ratio,
        "ratio_flush_each": ratio_flush,
        "query_s": t_query,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orm-slice", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2, help="times each insert path runs")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--peak-rows", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    print(f"docket ledger ingest benchmark: {args.rows:,} observations per backend")
    print(
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    rows = [] if args.skip_throughput else observations(args.rows)
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, url: str, backend: str) -> None:
        if not args.skip_throughput:
            results[backend] = bench(name, url, rows, args.orm_slice, args.repeats)
        if args.peak_rows:
            peak_memory(name, url.replace("ledger.db", "peak.db"), args.peak_rows)

    for backend in args.backends.split(","):
        if backend == "sqlite":
            with sqlite_url() as url:
                measure("SQLite", url, backend)
        elif backend == "postgresql":
            try:
                context = postgres_url()
                url = context.__enter__()
            except sqlalchemy.exc.OperationalError as exc:
                print(f"\nPostgreSQL: skipped, server unreachable ({str(exc.orig).strip()})")
                continue
            try:
                measure("PostgreSQL", url, backend)
            finally:
                context.__exit__(None, None, None)
        else:
            parser.error(f"unknown backend {backend!r}")
    for backend, r in results.items():
        print(
            f"{backend}: bulk/ORM {r['ratio']:.1f}x (one commit), {r['ratio_flush_each']:.1f}x "
            f"(flush per row); query {r['query_s']:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
