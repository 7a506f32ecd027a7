"""Public API write throughput: ``Run.observe_many`` and ``Run.observe`` against raw SQLAlchemy.

For each backend, in the same run (best of ``--repeats``, interleaved):

* **raw Core executemany**: ``conn.execute(insert(observations), rows)`` of the same rows (dicts)
  into an existing run, one transaction, commit included (no validation at all);
* **observe_many**: ``with docketml.start_run(...) as run: run.observe_many(rows)``, timed from
  before ``start_run`` to after the ``with`` (open the run, validate every row, write them with
  the run's completion, meter the cost);
* **observe per row**: the same with one ``run.observe(...)`` call per row.

Goals (issue 17): observe_many >= 0.5x raw on SQLite and PostgreSQL; observe >= 50,000 rows/s
on SQLite.

Run: ``python benchmarks/api.py`` (options: --rows, --repeats, --backends). PostgreSQL: a
temporary schema on ``DOCKET_BENCH_POSTGRES`` (default the local test server), dropped after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, insert, text

import docketml
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger, init_ledger
from docketml.ledger.store.models import ObservationRow
from docketml.ledger.store.runs import create_run
from docketml.protocols.loader import load_protocol_text

PROTOCOL = """
docket: 1
id: bench-api
title: api benchmark
hypotheses: [{id: H1, statement: s separates, rule: r1}]
signals: {s1: {higher_means: positive}, s2: {higher_means: negative}}
labels: {source: judged, positive: failure}
groups: [g1, g2, g3, g4]
decision_rules: {r1: {kind: threshold, statistic: auroc, signal: s1, bound: 0.6}}
jobs: [{name: p, kind: python, entry: "x:y"}]
"""


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "group": f"g{i % 4 + 1}",
            "item": f"i{i // 2}",
            "signal": "s1" if i % 2 == 0 else "s2",
            "value": (i % 997) / 997.0,
            "label": (i // 2) % 2,
        }
        for i in range(n)
    ]


@contextmanager
def backend(name: str) -> Iterator[str]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/ledger.db"
        return
    base = os.environ.get(
        "DOCKET_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def setup(url: str) -> tuple[Ledger, int, str]:
    ledger = init_ledger(url)
    loaded = load_protocol_text(PROTOCOL, "bench.yaml")
    with ledger.session() as session:
        row = store.register(session, loaded).row
        # the freeze trigger (revision 0004) needs a passing sign-check: a stub that passes
        row, _report, _new = store.freeze(
            session, row.protocol_id, lambda _p: {"passed": True, "checks": []}
        )
        return ledger, row.id, row.sha256


def time_raw(ledger: Ledger, pk: int, sha: str, data: list[dict[str, Any]]) -> float:
    with ledger.session() as session:
        run_id = create_run(session, protocol_pk=pk, protocol_sha256=sha, job="p", kind="python",
                            config={}).id  # fmt: skip
    prepared = [
        {"run_id": run_id, "grp": r["group"], "item": r["item"], "label": r["label"],
         "signal": r["signal"], "value": r["value"]}
        for r in data
    ]  # fmt: skip
    started = time.perf_counter()
    with ledger.engine.begin() as conn:
        conn.execute(insert(ObservationRow.__table__), prepared)
    return time.perf_counter() - started


def time_api(ledger: Ledger, data: list[dict[str, Any]], per_row: bool) -> float:
    started = time.perf_counter()
    with docketml.start_run("bench-api", job="p", ledger=ledger) as run:
        if per_row:
            observe = run.observe
            for r in data:
                observe(group=r["group"], item=r["item"], signal=r["signal"], value=r["value"],
                        label=r["label"])  # fmt: skip
        else:
            run.observe_many(data)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    data = rows(args.rows)
    for name in args.backends.split(","):
        with backend(name) as url:
            ledger, pk, sha = setup(url)
            best = {"raw": 1e9, "observe_many": 1e9, "observe": 1e9}
            for _ in range(args.repeats):
                best["raw"] = min(best["raw"], time_raw(ledger, pk, sha, data))
                best["observe_many"] = min(best["observe_many"], time_api(ledger, data, False))
                best["observe"] = min(best["observe"], time_api(ledger, data, True))
            ledger.engine.dispose()
        rate = {k: args.rows / v for k, v in best.items()}
        print(
            f"{name}: {args.rows:,} rows, best of {args.repeats}: raw executemany "
            f"{rate['raw']:,.0f} rows/s; observe_many {rate['observe_many']:,.0f} rows/s "
            f"({rate['observe_many'] / rate['raw']:.2f}x raw); observe per row "
            f"{rate['observe']:,.0f} rows/s ({rate['observe'] / rate['raw']:.2f}x raw)"
        )


if __name__ == "__main__":
    main()
