"""Recording runs: the lifecycle queued -> running (heartbeat, lease) -> succeeded | failed |
abandoned | silent_noop | skipped, and the atomic write of a run's results.

Contract:
- A run's observations, metrics and texts are inserted in the same transaction that sets its
  final status, so a reader sees all of a run's results or none of them.
- A running run holds a lease (``lease_expires_at``) that its heartbeat extends. A run whose lease
  expired (its process died, e.g. SIGKILL) is marked ``abandoned`` by :func:`reap_abandoned`, which
  every docket command that reads runs calls first; the cost of the time it ran is kept.
- Only ``succeeded`` runs count in verdicts.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..billing.hardware import HardwareCatalog
from . import merkle_log
from .db import env_seconds
from .models import MetricRow, ObservationRow, RunRow, RunTextRow, utcnow
from .run_columns import write_run_columns

FINAL_STATUSES = ("succeeded", "failed", "abandoned", "silent_noop", "skipped")
DEFAULT_LEASE_S = 30.0
MIN_LEASE_S, MAX_LEASE_S = 1.0, 86_400.0


def lease_seconds() -> float:
    """The lease of a running run, in seconds: ``DOCKET_LEASE_S`` if set, else
    :data:`DEFAULT_LEASE_S`. Read at call time (never at import), so a test or a worker can set it.

    A run's heartbeat extends its lease every ``lease / 3`` seconds; a run whose lease passed
    without a beat is abandoned by the next writer (:func:`reap_abandoned`). Values outside
    ``[MIN_LEASE_S, MAX_LEASE_S]``, non-numbers, NaN and infinities are refused (:class:`UserError`,
    exit 2): ``0`` would spin the heartbeat and a negative lease would reap live runs."""
    return env_seconds("DOCKET_LEASE_S", DEFAULT_LEASE_S, MIN_LEASE_S, MAX_LEASE_S)


OBS_CHUNK = 50_000


def create_run(
    session: Session,
    *,
    protocol_pk: int,
    protocol_sha256: str,
    job: str,
    kind: str,
    config: dict[str, Any],
    hardware: str = "cpu",
    seed: int | None = None,
    source: str = "runner",
    status: str = "queued",
    git_sha: str | None = None,
    input_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRow:
    """Insert a run (``queued`` by default) in the caller's transaction and flush it.

    ``extra`` is stored as ``extra_json`` until :func:`complete_run` replaces it with the run's
    final extra (the executor keeps the run's budget reservation there while it is open:
    ``ledger.billing.budget.reservation``)."""
    run = RunRow(
        protocol_pk=protocol_pk,
        protocol_sha256=protocol_sha256,
        job=job,
        kind=kind,
        source=source,
        config_json=json.dumps(config, sort_keys=True, default=str),
        status=status,
        hardware=hardware,
        seed=seed,
        git_sha=git_sha,
        input_sha256=input_sha256,
        extra_json=json.dumps(extra, sort_keys=True, default=str) if extra else None,
        host=socket.gethostname(),
        queued_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def start_run(session: Session, run_id: int, worker: str, lease_s: float | None = None) -> None:
    """Mark a queued run ``running`` with a lease of ``lease_s`` (default :func:`lease_seconds`)."""
    now = utcnow()
    lease_s = lease_seconds() if lease_s is None else lease_s
    session.execute(
        update(RunRow)
        .where(RunRow.id == run_id)
        .values(
            status="running",
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_s),
            worker=worker,
            host=socket.gethostname(),
        )
    )


def heartbeat(session: Session, run_id: int, lease_s: float | None = None) -> bool:
    """Extend the lease of a running run; False if the run is no longer running (reaped)."""
    now = utcnow()
    lease_s = lease_seconds() if lease_s is None else lease_s
    result = session.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status == "running")
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
    )
    return result.rowcount == 1


OBS_COLUMNS = ("run_id", "grp", "item", "label", "signal", "value")


def _observation_tuples(run_id: int, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        label = row.get("label")
        yield (
            run_id,
            row["group"],
            str(row["item"]),
            None if label is None else int(label),
            row["signal"],
            float(row["value"]),
        )


def insert_observations(session: Session, run_id: int, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk-insert observations (dicts with group, item, label, signal, value) into run
    ``run_id`` in the caller's transaction; return how many were inserted.

    PostgreSQL: one ``COPY observations ... FROM STDIN`` on the session's own connection (a
    dropped connection surfaces as SQLAlchemy's ``OperationalError`` with the connection
    invalidated, like any other statement, so :mod:`ledger.retry` can retry the transaction).
    SQLite: plain DB-API ``executemany`` of tuples in chunks of ``OBS_CHUNK``. Both skip the ORM
    and SQLAlchemy's per-row parameter processing: see benchmarks/ledger.py for the ratio."""
    conn = session.connection()
    table = ObservationRow.__tablename__
    columns = ", ".join(OBS_COLUMNS)
    tuples = _observation_tuples(run_id, rows)
    total = 0
    if conn.dialect.name == "postgresql":
        import psycopg

        statement = f"COPY {table} ({columns}) FROM STDIN"
        dbapi_conn = conn.connection.dbapi_connection
        try:
            with dbapi_conn.cursor() as cursor, cursor.copy(statement) as copy:
                for values in tuples:
                    copy.write_row(values)
                    total += 1
        except psycopg.Error as exc:
            disconnect = conn.dialect.is_disconnect(exc, dbapi_conn, None)
            if disconnect:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                statement,
                None,
                exc,
                psycopg.Error,
                connection_invalidated=disconnect,
                dialect=conn.dialect,
            ) from exc
        return total
    marks = ", ".join("?" for _ in OBS_COLUMNS)
    statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
    while chunk := list(islice(tuples, OBS_CHUNK)):
        conn.exec_driver_sql(statement, chunk)
        total += len(chunk)
    return total


def complete_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    observations: Iterable[dict[str, Any]] = (),
    metrics: Sequence[dict[str, Any]] = (),
    texts: dict[str, str] | None = None,
    wall_s: float | None = None,
    checkpoint_sha256: str | None = None,
    checkpoint_path: str | None = None,
    knob_audit: dict[str, Any] | None = None,
    silent_noop_knobs: Sequence[str] = (),
    error: str | None = None,
    extra: dict[str, Any] | None = None,
    cost_micros: int = 0,
) -> bool:
    """Write a run's results and final status in the caller's transaction.

    Returns False (and writes nothing) if the run is no longer ``running`` or ``queued`` (it was
    reaped as abandoned meanwhile): results of an abandoned run never become visible."""
    assert status in FINAL_STATUSES, status
    result = session.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status.in_(("running", "queued")))
        .values(
            status=status,
            finished_at=utcnow(),
            wall_s=wall_s,
            checkpoint_sha256=checkpoint_sha256,
            checkpoint_path=checkpoint_path,
            knob_audit_json=json.dumps(knob_audit, sort_keys=True, default=str)
            if knob_audit is not None
            else None,
            silent_noop_knobs=json.dumps(list(silent_noop_knobs)) if silent_noop_knobs else None,
            error=error,
            extra_json=json.dumps(extra, sort_keys=True, default=str) if extra else None,
            cost_micros=cost_micros,
            lease_expires_at=None,
        )
    )
    if result.rowcount != 1:
        return False
    if observations:
        insert_observations(session, run_id, observations)
    if metrics:
        session.execute(
            insert(MetricRow.__table__),
            [
                {
                    "run_id": run_id,
                    "name": m["name"],
                    "value": float(m["value"]),
                    "ci_low": m.get("ci_low"),
                    "ci_high": m.get("ci_high"),
                    "step": m.get("step"),
                }
                for m in metrics
            ],
        )
    if texts:
        session.execute(
            insert(RunTextRow.__table__),
            [{"run_id": run_id, "item": item, "text": text} for item, text in texts.items()],
        )
    _queue_run_leaf(session, run_id, status, observations, metrics, texts)
    if observations:
        write_run_columns(session, run_id)
    return True


def _queue_run_leaf(
    session: Session,
    run_id: int,
    status: str,
    observations: Iterable[dict[str, Any]],
    metrics: Sequence[dict[str, Any]],
    texts: dict[str, str] | None,
) -> None:
    """Queue the run's Merkle-log leaf, its results digest computed from the values just written
    (converted as they were written, so it equals :func:`merkle_log.run_results` re-read). When
    ``observations`` is a one-pass iterable (a streamed ingest), it has been consumed by the
    insert, so the digest is :func:`merkle_log.run_results` of the rows just written."""
    sha, job, seed = session.execute(
        select(RunRow.protocol_sha256, RunRow.job, RunRow.seed).where(RunRow.id == run_id)
    ).one()
    if not isinstance(observations, Sequence):
        results = merkle_log.run_results(session, run_id)
        leaf = merkle_log.run_leaf(
            run_id=run_id, protocol_sha256=sha, job=job, seed=seed, status=status, results=results
        )
        merkle_log.queue_leaf(session, "run", run_id, leaf)
        return
    results = merkle_log.results_sha256(
        ((t[1], t[2], t[4], t[5], t[3]) for t in _observation_tuples(run_id, observations)),
        (
            (m["name"], float(m["value"]), m.get("ci_low"), m.get("ci_high"), m.get("step"))
            for m in metrics
        ),
        (texts or {}).items(),
    )
    leaf = merkle_log.run_leaf(
        run_id=run_id, protocol_sha256=sha, job=job, seed=seed, status=status, results=results
    )
    merkle_log.queue_leaf(session, "run", run_id, leaf)


def reap_abandoned(
    session: Session, now: datetime | None = None, catalog: HardwareCatalog | None = None
) -> list[RunRow]:
    """Mark running runs whose lease expired as ``abandoned`` and keep their cost; return them.

    ``wall_s`` of a reaped run is started_at to its last heartbeat; its cost is appended to the
    cost chain in this same transaction (:func:`ledger.costs.record_abandoned_costs`, rates from
    ``catalog``, default :func:`ledger.hardware.load_catalog`). Safe to call from many processes
    at once: the ``status = 'running'`` guard lets exactly one of them reap a given run. Results
    the run's process may still try to write are refused afterwards (:func:`complete_run`).
    """
    from ..billing.costs import record_abandoned_costs

    now = now or utcnow()
    candidates = list(
        session.scalars(
            select(RunRow).where(RunRow.status == "running", RunRow.lease_expires_at.is_not(None))
        )
    )
    reaped = []
    for run in candidates:
        lease = run.lease_expires_at
        if lease is not None and lease_expired(run, now):
            result = session.execute(
                update(RunRow)
                .where(RunRow.id == run.id, RunRow.status == "running")
                .values(
                    status="abandoned",
                    finished_at=now,
                    error=f"lease expired at {lease.isoformat()} (no heartbeat): the runner died",
                    wall_s=_heartbeat_seconds(run),
                )
            )
            if result.rowcount == 1:
                session.refresh(run)
                reaped.append(run)
                merkle_log.queue_leaf(session, "run", run.id, merkle_log.run_leaf_of(session, run))
    if reaped:
        record_abandoned_costs(session, reaped, catalog)
    return reaped


def lease_expired(run: RunRow, now: datetime | None = None) -> bool:
    """True when ``run`` is ``running`` but its lease ran out before ``now``: its runner died.

    Queries show this without writing; writers (:func:`reap_abandoned`) act on it."""
    lease = run.lease_expires_at
    return run.status == "running" and lease is not None and lease < (now or utcnow())


def _heartbeat_seconds(run: RunRow) -> float | None:
    started, beat = run.started_at, run.heartbeat_at
    if started is None or beat is None:
        return None
    return max(0.0, (beat - started).total_seconds())


def run_by_worker(session: Session, worker: str) -> RunRow | None:
    """The run started by ``worker`` (a unique worker token, see runners/executor.py), if any:
    lets a retried transaction find the run its earlier, committed attempt created."""
    return session.scalars(select(RunRow).where(RunRow.worker == worker).limit(1)).first()


def succeeded_runs(session: Session, protocol_sha256: str, job: str | None = None) -> list[RunRow]:
    query = select(RunRow).where(
        RunRow.protocol_sha256 == protocol_sha256, RunRow.status == "succeeded"
    )
    if job is not None:
        query = query.where(RunRow.job == job)
    return list(session.scalars(query.order_by(RunRow.id)))


def list_runs(
    session: Session,
    *,
    protocol_pks: Sequence[int] | None = None,
    status: str | None = None,
    job: str | None = None,
) -> list[RunRow]:
    """Runs in id order; with ``protocol_pks``, only runs of those protocol versions; with
    ``status``, only runs in that status; with ``job``, only runs of that job. Reads only (it
    never reaps)."""
    query = select(RunRow).order_by(RunRow.id)
    if job is not None:
        query = query.where(RunRow.job == job)
    if protocol_pks is not None:
        query = query.where(RunRow.protocol_pk.in_(list(protocol_pks)))
    if status:
        query = query.where(RunRow.status == status)
    return list(session.scalars(query))


def latest_succeeded(session: Session, protocol_sha256: str, job: str) -> RunRow | None:
    runs = succeeded_runs(session, protocol_sha256, job)
    return runs[-1] if runs else None


def run_summary(run: RunRow) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job,
        "kind": run.kind,
        "status": run.status,
        "lease_expired": lease_expired(run),
        "source": run.source,
        "protocol_sha256": run.protocol_sha256,
        "hardware": run.hardware,
        "host": run.host,
        "worker": run.worker,
        "seed": run.seed,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "wall_s": run.wall_s,
        "cost_micros": run.cost_micros,
        "checkpoint_sha256": run.checkpoint_sha256,
        "silent_noop_knobs": json.loads(run.silent_noop_knobs) if run.silent_noop_knobs else [],
        "error": run.error,
    }
