"""The stored Merkle log: what a leaf append adds to the write it accompanies, and proof time at
1,000,000 leaves, on SQLite and on PostgreSQL.

For each backend, in the same run:

* **writes**: ``--writes`` (default 100,000) real record writes, each one transaction of
  ``ledger.billing.costs.append_cost`` (lock the cost chain, read its last row, insert the
  hash-chained row, commit) — the way ``docket cost add`` and every metered run write. Half the
  blocks run as docket does (the cost's leaf appended at commit by
  ``ledger.store.merkle_log``: lock, read the last leaf, insert the leaf and its completed
  nodes), the other half with the commit hook removed (no leaf). Blocks of ``--block`` writes
  alternate between the two on the same ledger so both see the same table sizes and machine
  noise; the printed overhead is ``(t_with - t_without) / t_without`` over all blocks, and how
  many appends took each path of ``merkle_log.append_leaves`` (the cached right edge, with the
  commit in the same message on PostgreSQL, or the read). Goal: under 10 %.
* **proofs at 1,000,000 leaves**: a fresh ledger whose ``log_leaves`` / ``log_nodes`` are
  bulk-loaded with ``--leaves`` (default 1,000,000) leaves and their complete nodes (computed
  here, loaded with executemany / COPY, not through record writes: this part times reads).
  Then ``--proofs`` (default 200) inclusion proofs of random leaves in the full tree and as many
  consistency proofs from random old sizes, each in its own read-only transaction
  (``ledger.integrity.log``), each verified with ``merkle.verify_inclusion`` /
  ``verify_consistency``; median and max ms are printed, plus ``log_head``. Goal: a proof
  under 5 ms.

SQLite: a temporary file. PostgreSQL: a temporary schema on ``DOCKET_BENCH_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped afterwards; skipped with a
message when the server is unreachable.

Run: ``python benchmarks/merkle_log.py`` (options: --writes, --block, --leaves, --proofs,
--backends).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from docketml.ledger.billing.costs import append_cost, meter_run
from docketml.ledger.billing.hardware import load_catalog
from docketml.ledger.integrity import merkle
from docketml.ledger.integrity.log import (
    consistency_proof_between,
    inclusion_proof_at,
    log_head,
    root_at,
)
from docketml.ledger.store import merkle_log
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger, init_ledger
from docketml.ledger.store.runs import complete_run, create_run, start_run
from docketml.protocols.loader import load_protocol_text

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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


@contextmanager
def leaves_off() -> Iterator[None]:
    """Writes without the leaf append (the commit hook removed; restored afterwards)."""
    hook = merkle_log._append_on_commit
    event.remove(Session, "before_commit", hook)
    try:
        yield
    finally:
        event.listen(Session, "before_commit", hook)


def write_block(ledger: Ledger, n: int, start: int) -> float:
    began = time.perf_counter()
    for i in range(start, start + n):
        with ledger.session() as session:
            append_cost(session, hardware="cpu", usd_micros=1000 + i % 997, label=f"b{i}")
    return time.perf_counter() - began


RUN_OBS = 100


def run_block(ledger: Ledger, n: int, start: int) -> float:
    """``n`` run completions as the executor writes them: one transaction with
    ``complete_run`` (``RUN_OBS`` observations, 2 metrics) and the run's metered cost (two
    leaves: the run's and the cost's). Creating and starting the run is not timed."""
    with ledger.session() as session:
        pk = session.execute(text("SELECT id FROM protocols")).scalar()
        if pk is None:
            pk = _frozen(session)
        sha = session.execute(text("SELECT sha256 FROM protocols")).scalar_one()
        ids = []
        for i in range(n):
            run = create_run(
                session, protocol_pk=pk, protocol_sha256=sha, job="j", kind="synthetic", config={}
            )
            start_run(session, run.id, worker=f"w{start + i}", lease_s=3600)
            ids.append(run.id)
    hw = load_catalog()["cpu"]
    obs = [
        {"group": "g1", "item": f"i{k}", "signal": "s", "value": k / 7, "label": k % 2}
        for k in range(RUN_OBS)
    ]
    metrics = [{"name": "auroc", "value": 0.9}, {"name": "loss", "value": 0.2, "step": 10}]
    began = time.perf_counter()
    for run_id in ids:
        with ledger.session() as session:
            complete_run(
                session, run_id, status="succeeded", observations=obs, metrics=metrics, wall_s=1.0
            )
            meter_run(session, hw=hw, wall_s=1.0, run_id=run_id, protocol_pk=pk, label="j")
    return time.perf_counter() - began


def _frozen(session: Session) -> int:
    yaml_text = (
        "docket: 1\nid: bench\ntitle: bench\nhypotheses:\n  - {id: H1, statement: s, rule: r}\n"
        "signals:\n  s: {higher_means: positive}\nlabels: {source: judged}\ngroups: [g1]\n"
        "decision_rules:\n  r: {kind: threshold, statistic: auroc, signal: s, bound: 0.6}\n"
        'jobs:\n  - {"name": "j", "kind": "synthetic"}\n'
    )
    row = store.register(session, load_protocol_text(yaml_text, "bench.yaml")).row
    store.freeze(session, row.protocol_id, lambda _p: {"passed": True, "checks": []})
    return row.id


def bench_writes(ledger: Ledger, writes: int, block: int, kind: str = "cost") -> dict[str, float]:
    paths_before = dict(merkle_log.APPEND_PATHS)
    with_s = without_s = 0.0
    done = 0
    for b in range(max(1, writes // block)):
        for leaf in (True, False) if b % 2 == 0 else (False, True):
            write = write_block if kind == "cost" else run_block
            if leaf:
                with_s += write(ledger, block, done)
            else:
                with leaves_off():
                    without_s += write(ledger, block, done)
            done += block
    with ledger.read_session() as session:
        leaves = session.execute(text("SELECT count(*) FROM log_leaves")).scalar_one()
        costs = session.execute(text("SELECT count(*) FROM costs")).scalar_one()
    if kind == "run":  # two leaves per completion with the hook on
        costs = 2 * costs
    paths = {
        k: v - paths_before.get(k, 0)
        for k, v in merkle_log.APPEND_PATHS.items()
        if v - paths_before.get(k, 0)
    }
    return {
        "with_s": with_s,
        "without_s": without_s,
        "leaves": leaves,
        "costs": costs,
        "paths": paths,
    }


def bulk_tree(n: int) -> tuple[list[tuple], list[tuple]]:
    """Leaves ``(position, kind, record_id, leaf, leaf_hash)`` and every complete node."""
    leaves, nodes = [], []
    below = []
    for i in range(n):
        leaf = json.dumps(
            {"kind": "journal", "seq": i + 1, "hash": hashlib.sha256(b"%d" % i).hexdigest()},
            sort_keys=True,
            separators=(",", ":"),
        )
        h = merkle.leaf_hash(leaf.encode())
        leaves.append((i, "journal", i + 1, leaf, h.hex()))
        below.append(h)
    level = 1
    while len(below) >= 2:
        above = [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        nodes += [(level, i, h.hex()) for i, h in enumerate(above)]
        level, below = level + 1, above
    return leaves, nodes


def bulk_load(ledger: Ledger, leaves: list[tuple], nodes: list[tuple]) -> float:
    began = time.perf_counter()
    with ledger.engine.begin() as conn:
        if ledger.dialect == "postgresql":
            dbapi = conn.connection.dbapi_connection
            with dbapi.cursor() as cur:
                with cur.copy(
                    "COPY log_leaves (position, kind, record_id, leaf, leaf_hash) FROM STDIN"
                ) as copy:
                    for row in leaves:
                        copy.write_row(row)
                with cur.copy("COPY log_nodes (level, idx, hash) FROM STDIN") as copy:
                    for row in nodes:
                        copy.write_row(row)
            conn.exec_driver_sql("ANALYZE log_leaves")
            conn.exec_driver_sql("ANALYZE log_nodes")
        else:
            conn.exec_driver_sql(
                "INSERT INTO log_leaves (position, kind, record_id, leaf, leaf_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                leaves,
            )
            conn.exec_driver_sql("INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
    return time.perf_counter() - began


def bench_proofs(ledger: Ledger, n: int, proofs: int, leaf_hashes: list[bytes]) -> dict:
    """Inclusion and consistency proofs: the call alone (in one open read transaction) and with
    a read-only transaction of its own (connection from the pool, BEGIN, READ ONLY, rollback)."""
    rng = random.Random(7)
    head = log_head(ledger)
    assert head.tree_size == n
    indices = [rng.randrange(n) for _ in range(proofs)]
    olds = [rng.randrange(1, n) for _ in range(proofs)]
    out: dict[str, float] = {}
    with ledger.read_session() as session:
        olds_roots = {m: root_at(session, m) for m in olds}
    for own in (False, True):
        inc, con = [], []
        with ledger.read_session() as shared:
            for i in indices:
                began = time.perf_counter()
                if own:
                    with ledger.read_session() as session:
                        proof = inclusion_proof_at(session, i, n)
                else:
                    proof = inclusion_proof_at(shared, i, n)
                inc.append(time.perf_counter() - began)
                assert merkle.verify_inclusion(i, n, leaf_hashes[i], proof, head.root_hash)
            for m in olds:
                began = time.perf_counter()
                if own:
                    with ledger.read_session() as session:
                        proof = consistency_proof_between(session, m, n)
                else:
                    proof = consistency_proof_between(shared, m, n)
                con.append(time.perf_counter() - began)
                assert merkle.verify_consistency(m, n, olds_roots[m], head.root_hash, proof)
        tag = "txn" if own else "call"
        out[f"inclusion_{tag}_ms"] = 1000 * statistics.median(inc)
        out[f"inclusion_{tag}_max_ms"] = 1000 * max(inc)
        out[f"consistency_{tag}_ms"] = 1000 * statistics.median(con)
        out[f"consistency_{tag}_max_ms"] = 1000 * max(con)
    began = time.perf_counter()
    log_head(ledger)
    out["head_ms"] = 1000 * (time.perf_counter() - began)
    return out


def run_backend(name: str, url_cm, args: argparse.Namespace, tree: tuple) -> None:
    leaves, nodes = tree
    try:
        with url_cm() as url:
            ledger = init_ledger(url)
            w = bench_writes(ledger, args.writes, args.block)
            ledger.engine.dispose()
        r = None
        if args.runs:
            with url_cm() as url:
                ledger = init_ledger(url)
                r = bench_writes(ledger, args.runs, args.run_block, kind="run")
                ledger.engine.dispose()
        with url_cm() as url:
            ledger = init_ledger(url)
            load_s = bulk_load(ledger, leaves, nodes)
            hashes = [bytes.fromhex(row[4]) for row in leaves]
            p = bench_proofs(ledger, len(leaves), args.proofs, hashes)
            ledger.engine.dispose()
    except sqlalchemy.exc.OperationalError as exc:
        print(f"{name}: skipped ({str(exc).splitlines()[0]})")
        return
    over = (w["with_s"] - w["without_s"]) / w["without_s"]
    half = w["costs"] // 2
    print(f"\n{name}")
    print(
        f"  writes: {w['costs'] // 2:,} cost appends with their leaf {w['with_s']:.2f} s "
        f"({1e6 * w['with_s'] / half:.0f} us each), {half:,} without "
        f"{w['without_s']:.2f} s ({1e6 * w['without_s'] / half:.0f} us each); "
        f"leaf overhead {100 * over:+.1f} % (goal < 10 %); {w['leaves']:,} leaves for "
        f"{w['costs']:,} cost rows; append paths {w['paths']}"
    )
    if r is not None:
        over_r = (r["with_s"] - r["without_s"]) / r["without_s"]
        half_r = r["costs"] // 4
        print(
            f"  run completions ({RUN_OBS} observations, 2 metrics, metered cost): {half_r:,} "
            f"with their two leaves {r['with_s']:.2f} s ({1e6 * r['with_s'] / half_r:.0f} us "
            f"each), {half_r:,} without {r['without_s']:.2f} s "
            f"({1e6 * r['without_s'] / half_r:.0f} us each); leaf overhead {100 * over_r:+.1f} %"
            f" (goal < 10 %); {r['leaves']:,} leaves; append paths {r['paths']}"
        )
    print(f"  proofs at {len(leaves):,} leaves (bulk-loaded in {load_s:.1f} s), each verified:")
    for tag, what in (("call", "the call"), ("txn", "with its own read transaction")):
        print(
            f"    {what}: inclusion median {p[f'inclusion_{tag}_ms']:.2f} ms (max "
            f"{p[f'inclusion_{tag}_max_ms']:.2f}), consistency median "
            f"{p[f'consistency_{tag}_ms']:.2f} ms (max {p[f'consistency_{tag}_max_ms']:.2f}); "
            "goal < 5 ms"
        )
    print(f"    log head (own read transaction): {p['head_ms']:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=10_000, help="run completions (0: none)")
    parser.add_argument("--run-block", type=int, default=500)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, sqlalchemy {sqlalchemy.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} cpus"
    )
    began = time.perf_counter()
    tree = bulk_tree(args.leaves)
    print(f"computed {args.leaves:,} leaves and {len(tree[1]):,} nodes in "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip
    for name in args.backends.split(","):
        run_backend(name, {"sqlite": sqlite_url, "postgresql": postgres_url}[name], args, tree)


if __name__ == "__main__":
    main()
