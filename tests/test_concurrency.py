"""Many writers at once on one ledger, on SQLite and PostgreSQL, through the real recording path
(``ledger.runs.create_run`` / ``start_run`` / ``complete_run`` with ``ledger.costs.meter_run`` in
the completing transaction, each unit retried by ``ledger.retry.transact``, as in
``runners/executor.py``).

- 8 processes (multiprocessing, spawn) start together behind a barrier; each records 200 runs with
  100 observations each and one metered cost row per run: exactly 1,600 runs, 160,000
  observations, no duplicate (run, item, signal), no "database is locked", and the cost chain
  (1,600 rows appended concurrently) verifies.
- PostgreSQL connections dropped with ``pg_terminate_backend`` in the middle of transactions (and
  between them) are retried without losing or duplicating anything; a unit re-run after its
  commit (what a retry does when the commit's acknowledgement was lost) changes nothing; and a
  real ``execute_job`` whose result-writing transaction has its backend terminated mid-insert
  still records its run exactly once.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import traceback
import uuid
from typing import Any

import pytest
from distributed_helpers import cost_rows, freeze, observation_count, protocol_row
from sqlalchemy import create_engine, func, select, text

from docketml.ledger.billing.costs import meter_run, verify_cost_chain
from docketml.ledger.billing.hardware import load_catalog
from docketml.ledger.store.db import Ledger, init_ledger, open_ledger
from docketml.ledger.store.models import CostRow, ObservationRow, RunRow
from docketml.ledger.store.retry import transact
from docketml.ledger.store.runs import complete_run, create_run, run_by_worker, start_run
from docketml.runners.execute.executor import execute_job

pytestmark = pytest.mark.slow  # many processes and threads against one ledger

PROCESSES = 8
RUNS_PER_PROCESS = 200
OBS_PER_RUN = 100


# --------------------------------------------------------------------------- the worker process


def record_runs(
    url: str,
    protocol_pk: int,
    sha256: str,
    worker_no: int,
    n_runs: int,
    n_obs: int,
    barrier: Any,
    results: Any,
    drop_connections: bool = False,
) -> None:
    """Record ``n_runs`` runs of ``n_obs`` observations; put a report on ``results``.

    With ``drop_connections`` (PostgreSQL), this worker's own backend is terminated by a second
    connection in the middle of some transactions and between others, and some units are run a
    second time after they committed."""
    report: dict[str, Any] = {"worker": worker_no, "retries": 0, "drops": 0, "error": None}
    try:
        ledger = open_ledger(url)
        hw = load_catalog()["a40"]
        admin = create_engine(url) if drop_connections else None

        def on_retry(attempt: int, exc: BaseException) -> None:
            report["retries"] += 1

        def drop(session: Any = None, pid: int | None = None) -> None:
            """Terminate this session's backend from another connection (a dropped link)."""
            assert admin is not None
            if pid is None:
                pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            report["drops"] += 1

        barrier.wait(timeout=120)
        started = time.perf_counter()
        for i in range(n_runs):
            token = f"test:w{worker_no}#r{i}"
            dropped: set[str] = set()
            tries: list[int] = []

            def open_run(
                session: Any,
                i: int = i,
                token: str = token,
                dropped: set[str] = dropped,
                tries: list[int] = tries,
            ) -> int:
                tries.append(1)  # a first attempt cannot find anything: look up on retries only
                existing = run_by_worker(session, token) if len(tries) > 1 else None
                if existing is not None:  # an earlier attempt committed
                    return existing.id
                run = create_run(
                    session,
                    protocol_pk=protocol_pk,
                    protocol_sha256=sha256,
                    job=f"w{worker_no}",
                    kind="synthetic",
                    config={"run": i},
                    hardware=hw.name,
                )
                if drop_connections and i % 10 == 3 and "open" not in dropped:
                    dropped.add("open")
                    drop(session)  # mid-transaction: the next statement fails
                start_run(session, run.id, worker=token, lease_s=300)
                return run.id

            run_id = transact(ledger, open_run, on_retry=on_retry)
            observations = [
                {
                    "group": f"g{k % 4}",
                    "item": f"item{k}",
                    "signal": "s",
                    "value": float(i * n_obs + k),
                    "label": k % 2,
                }
                for k in range(n_obs)
            ]

            def finish_run(
                session: Any,
                i: int = i,
                run_id: int = run_id,
                dropped: set[str] = dropped,
                observations: list[dict[str, Any]] = observations,
            ) -> bool:
                status = session.scalar(
                    select(RunRow.status).where(RunRow.id == run_id).with_for_update()
                )
                if status == "succeeded":  # an earlier attempt committed
                    return False
                assert complete_run(
                    session, run_id, status="succeeded", observations=observations, wall_s=0.5
                )
                if drop_connections and i % 10 == 5 and "finish" not in dropped:
                    dropped.add("finish")
                    drop(session)  # after the results, before the cost row: all rolled back
                # the cost row last (as runners/executor.py does): the chain lock is held briefly
                meter_run(
                    session, hw=hw, wall_s=0.5, run_id=run_id, protocol_pk=protocol_pk, label="t"
                )
                return True

            assert transact(ledger, finish_run, on_retry=on_retry)
            if drop_connections and i % 10 == 7:
                # between transactions: the pool's pre-ping finds the dead connection and
                # replaces it before the next unit uses it
                with ledger.session() as session:
                    pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                drop(pid=pid)
            if drop_connections and i % 10 == 9:
                # a retry after a commit whose acknowledgement was lost re-runs the unit: no-op
                assert transact(ledger, open_run) == run_id
                assert transact(ledger, finish_run) is False
        report["seconds"] = time.perf_counter() - started
        ledger.engine.dispose()
        if admin is not None:
            admin.dispose()
    except BaseException as exc:  # report everything, including "database is locked"
        report["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    results.put(report)


def run_workers(
    url: str, protocol_pk: int, sha256: str, n_proc: int, n_runs: int, n_obs: int, **kw: Any
) -> list[dict[str, Any]]:
    """Start ``n_proc`` spawned processes at once; return their reports (never leaves any)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_proc)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=record_runs,
            args=(url, protocol_pk, sha256, n, n_runs, n_obs, barrier, results),
            kwargs=kw,
        )
        for n in range(n_proc)
    ]
    for proc in procs:
        proc.start()
    try:
        reports = [results.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return reports


def check_ledger(ledger: Ledger, n_runs: int, n_obs: int) -> None:
    """Exact counts, no duplicates, every run complete, the cost chain intact."""
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(RunRow)) == n_runs
        statuses = {
            status: n
            for status, n in session.execute(
                select(RunRow.status, func.count()).group_by(RunRow.status)
            )
        }
        assert statuses == {"succeeded": n_runs}
        assert session.scalar(select(func.count()).select_from(ObservationRow)) == n_runs * n_obs
        distinct = (
            select(ObservationRow.run_id, ObservationRow.item, ObservationRow.signal)
            .distinct()
            .subquery()
        )
        assert session.scalar(select(func.count()).select_from(distinct)) == n_runs * n_obs
        uneven = session.execute(
            select(ObservationRow.run_id)
            .group_by(ObservationRow.run_id)
            .having(func.count() != n_obs)
        ).all()
        assert uneven == []
        workers = session.scalar(select(func.count(func.distinct(RunRow.worker))))
        assert workers == n_runs  # one run per worker token: nothing recorded twice
        costs = list(session.scalars(select(CostRow).order_by(CostRow.seq)))
    assert len(costs) == n_runs
    assert [c.seq for c in costs] == list(range(1, n_runs + 1))
    assert len({c.run_id for c in costs}) == n_runs  # one cost row per run
    assert verify_cost_chain(costs) == []


# --------------------------------------------------------------------------- tests


def test_eight_processes_record_at_once(ledger: Ledger, ledger_url: str) -> None:
    pk = freeze(ledger, "concurrency", [{"name": "w", "kind": "synthetic"}])
    sha = protocol_row(ledger, pk).sha256
    started = time.perf_counter()
    reports = run_workers(ledger_url, pk, sha, PROCESSES, RUNS_PER_PROCESS, OBS_PER_RUN)
    elapsed = time.perf_counter() - started
    errors = [r["error"] for r in reports if r["error"]]
    assert errors == [], errors[0]
    assert not any("database is locked" in str(r) for r in reports)
    assert sorted(r["worker"] for r in reports) == list(range(PROCESSES))
    check_ledger(ledger, PROCESSES * RUNS_PER_PROCESS, OBS_PER_RUN)
    slowest = max(r["seconds"] for r in reports)
    print(
        f"{ledger.dialect}: {PROCESSES}x{RUNS_PER_PROCESS} runs x {OBS_PER_RUN} observations: "
        f"{elapsed:.1f} s with process start-up, {slowest:.1f} s recording"
    )


@pytest.mark.postgres
def test_dropped_postgresql_connections_are_retried(pg_schema_url: str) -> None:
    ledger = init_ledger(pg_schema_url)
    try:
        pk = freeze(ledger, "drops", [{"name": "w", "kind": "synthetic"}])
        sha = protocol_row(ledger, pk).sha256
        n_proc, n_runs = 2, 40
        reports = run_workers(
            pg_schema_url, pk, sha, n_proc, n_runs, OBS_PER_RUN, drop_connections=True
        )
        errors = [r["error"] for r in reports if r["error"]]
        assert errors == [], errors[0]
        # per worker: 4 mid-transaction drops in open, 4 in finish, 4 between transactions
        assert [r["drops"] for r in reports] == [3 * n_runs // 10] * n_proc
        # every mid-transaction drop cost exactly one retry; between-transaction drops none
        assert [r["retries"] for r in reports] == [2 * n_runs // 10] * n_proc
        check_ledger(ledger, n_proc * n_runs, OBS_PER_RUN)
    finally:
        ledger.engine.dispose()


@pytest.mark.postgres
def test_execute_job_survives_a_backend_terminated_mid_insert(pg_schema_url: str) -> None:
    """The executor's own units: terminate the backend while it inserts the run's results."""
    app = f"docket-drop-{uuid.uuid4().hex[:8]}"
    url = f"{pg_schema_url}&application_name={app}"
    ledger = init_ledger(url)
    admin = create_engine(pg_schema_url)
    killed: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        query = text(
            "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = :app "
            "AND state <> 'idle' AND (query ILIKE 'INSERT INTO observations%' "
            "OR query ILIKE 'COPY observations%')"
        )
        while not stop.is_set() and not killed:
            with admin.begin() as conn:
                for pid, state, sql in conn.execute(query, {"app": app}):
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    killed.append(f"{state}: {sql[:40]}")
                    break
            time.sleep(0.002)

    try:
        pk = freeze(
            ledger,
            "drop-exec",
            [
                {
                    "name": "big",
                    "kind": "synthetic",
                    "hardware": "a40",
                    "params": {
                        "groups": ["g1", "g2", "g3"],
                        "signals": {"s": "positive", "t": "negative"},
                        "n_per_class": 10000,
                    },
                }
            ],
        )
        thread = threading.Thread(target=killer)
        thread.start()
        try:
            outcome = execute_job(ledger, pk, "big", worker="local:test")
        finally:
            stop.set()
            thread.join()
        assert killed, "the killer never saw the results being inserted"
        assert outcome.status == "succeeded", outcome.error
        assert observation_count(ledger, outcome.run_id) == 3 * 2 * 10000 * 2
        assert len(cost_rows(ledger, outcome.run_id)) == 1
        with ledger.session() as session:
            assert session.scalar(select(func.count()).select_from(RunRow)) == 1
            costs = list(session.scalars(select(CostRow).order_by(CostRow.seq)))
        assert verify_cost_chain(costs) == [] and len(costs) == 1
    finally:
        ledger.engine.dispose()
        admin.dispose()
