"""The one place that appends to the ledger's Merkle log (tables ``log_leaves`` and ``log_nodes``).

Writers of append-only records call :func:`queue_leaf` in the transaction that writes the record
(the record builders: :func:`protocol_leaf`, :func:`signcheck_leaf`, :func:`run_leaf`,
:func:`verdict_leaf`, :func:`chain_leaf`). The queued leaves are appended when that transaction
commits (a SQLAlchemy ``before_commit`` hook, so still inside it: a record and its leaf commit or
roll back together), in the order they were queued, under the log's append lock:

* the lock: :func:`ledger.store.chainlock.lock_chain` on ``"log_leaves"`` (PostgreSQL: a
  transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE`` already holds the write lock).
  It is taken at commit, after every other lock the transaction takes (cost / journal chains,
  budgets, run rows), so it never closes a lock cycle; positions are gap-free and unique under
  concurrency (and ``position`` is the primary key besides).
* an append of leaf ``n`` (old size ``n``): reads the last leaf (``n`` and, when ``n`` is odd,
  its hash) and the stored nodes of the right edge it completes (one per trailing 1-bit of
  ``n``, from ``log_nodes``), inserts the leaf and the new complete nodes
  (``(level, n >> level)`` for each merge): O(log n) reads and writes, amortised O(1).

A rolled-back transaction drops its queued leaves. Read side: ``ledger.integrity.log``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ..errors import IntegrityViolation
from ..integrity import leaves as lb
from ..integrity.merkle import leaf_hash, node_hash
from .chainlock import lock_chain, lock_key
from .models import (
    MetricRow,
    ObservationRow,
    ProtocolRow,
    RunRow,
    RunTextRow,
    SignCheckRow,
    VerdictRow,
)

__all__ = [
    "LOCK",
    "PENDING",
    "append_leaves",
    "chain_leaf",
    "protocol_leaf",
    "queue_leaf",
    "run_leaf",
    "results_sha256",
    "run_leaf_of",
    "run_results",
    "signcheck_leaf",
    "verdict_leaf",
]

LOCK = "log_leaves"
results_sha256 = lb.results_sha256
PENDING = "docket_pending_leaves"


@dataclass(frozen=True)
class _Pending:
    kind: str
    record_id: int
    leaf: bytes


def queue_leaf(session: Session, kind: str, record_id: int, leaf: bytes) -> None:
    """Append ``leaf`` (for row ``record_id`` of ``kind``) when ``session``'s transaction
    commits."""
    if kind not in lb.LEAF_KINDS:
        raise ValueError(f"leaf kind must be one of {lb.LEAF_KINDS}, found {kind!r}")
    session.info.setdefault(PENDING, []).append(_Pending(kind, int(record_id), leaf))


def protocol_leaf(session: Session, row: ProtocolRow) -> bytes:
    """Leaf bytes of frozen protocol version ``row``."""
    assert row.frozen_at is not None
    parent = None
    if row.parent_id is not None:
        parent = session.scalar(select(ProtocolRow.sha256).where(ProtocolRow.id == row.parent_id))
    return lb.protocol_leaf_bytes(
        protocol_id=row.protocol_id,
        version=row.version,
        sha256=row.sha256,
        parent_sha256=parent,
        frozen_at=row.frozen_at,
    )


def signcheck_leaf(row: SignCheckRow) -> bytes:
    """Leaf bytes of sign-check ``row``."""
    return lb.signcheck_leaf_bytes(
        id=row.id,
        protocol_sha256=row.protocol_sha256,
        passed=row.passed,
        ran_at=row.ran_at,
        report_json=row.report_json,
    )


def verdict_leaf(row: VerdictRow) -> bytes:
    """Leaf bytes of verdict ``row``."""
    return lb.verdict_leaf_bytes(
        id=row.id,
        protocol_sha256=row.protocol_sha256,
        computed_at=row.computed_at,
        verdict=row.verdict,
        inputs_sha256=row.inputs_sha256,
        run_ids_json=row.run_ids_json,
        details_json=row.details_json,
    )


def chain_leaf(kind: str, row: Any) -> bytes:
    """Leaf bytes of a cost (``kind="cost"``) or journal (``"journal"``) chain row."""
    return lb.chain_leaf_bytes(kind, row.seq, row.hash)


def run_results(session: Session, run_id: int) -> tuple[str, int, int, int]:
    """:func:`leaves.results_sha256` of run ``run_id``'s rows as they are now (row id order)."""
    obs = session.execute(
        select(
            ObservationRow.group,
            ObservationRow.item,
            ObservationRow.signal,
            ObservationRow.value,
            ObservationRow.label,
        )
        .where(ObservationRow.run_id == run_id)
        .order_by(ObservationRow.id)
        .execution_options(yield_per=50_000)  # bounded memory for a million-row ingest
    )
    metrics = session.execute(
        select(MetricRow.name, MetricRow.value, MetricRow.ci_low, MetricRow.ci_high, MetricRow.step)
        .where(MetricRow.run_id == run_id)
        .order_by(MetricRow.id)
    )
    texts = session.execute(
        select(RunTextRow.item, RunTextRow.text)
        .where(RunTextRow.run_id == run_id)
        .order_by(RunTextRow.id)
    )
    return lb.results_sha256(
        (tuple(r) for r in obs), (tuple(r) for r in metrics), (tuple(r) for r in texts)
    )


def run_leaf(
    *,
    run_id: int,
    protocol_sha256: str,
    job: str,
    seed: int | None,
    status: str,
    results: tuple[str, int, int, int],
) -> bytes:
    """Leaf bytes of a completed run (``results``: :func:`leaves.results_sha256`)."""
    return lb.run_leaf_bytes(
        id=run_id,
        protocol_sha256=protocol_sha256,
        job=job,
        seed=seed,
        status=status,
        results=results,
    )


def run_leaf_of(session: Session, run: RunRow) -> bytes:
    """Leaf bytes of ``run`` from its rows as they are now."""
    return run_leaf(
        run_id=run.id,
        protocol_sha256=run.protocol_sha256,
        job=run.job,
        seed=run.seed,
        status=run.status,
        results=run_results(session, run.id),
    )


def append_leaves(session: Session, pending: list[_Pending]) -> int:
    """Append ``pending`` at the end of the log (module docstring); returns the new size.

    Runs on the DB-API cursor of the session's connection (same transaction), where
    SQLAlchemy's per-statement overhead would dominate: on PostgreSQL two round trips (the
    lock and the last leaf; the leaves and nodes as one ``INSERT ... unnest``), on SQLite
    two or three statements."""
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        last_sql = "SELECT position, leaf_hash FROM log_leaves ORDER BY position DESC LIMIT 1"
        if pg:  # the lock, then the read, in one round trip (simple query protocol)
            cursor.execute(f"SELECT pg_advisory_xact_lock({int(lock_key(LOCK))}); {last_sql}")
            cursor.nextset()
        else:  # BEGIN IMMEDIATE already holds the write lock
            lock_chain(session, LOCK)
            cursor.execute(last_sql)
        last = cursor.fetchone()
        size = 0 if last is None else int(last[0]) + 1
        known: dict[tuple[int, int], bytes] = {}
        if last is not None:
            known[(0, size - 1)] = bytes.fromhex(last[1])

        def read(level: int, idx: int) -> bytes:
            if level == 0:
                cursor.execute(f"SELECT leaf_hash FROM log_leaves WHERE position = {mark}", (idx,))
            else:
                cursor.execute(
                    f"SELECT hash FROM log_nodes WHERE level = {mark} AND idx = {mark}",
                    (level, idx),
                )
            row = cursor.fetchone()
            if row is None:
                raise IntegrityViolation(
                    f"the Merkle log lacks node ({level}, {idx}) needed to append leaf {size}: "
                    "its tables were truncated or edited; run `docket audit`"
                )
            return bytes.fromhex(row[0])

        new_leaves, new_nodes = [], []
        for item in pending:
            h = leaf_hash(item.leaf)
            new_leaves.append((size, item.kind, item.record_id, item.leaf.decode("ascii"), h.hex()))
            level, idx = 0, size
            while idx & 1:  # completes the subtree (level + 1, idx >> 1)
                left = known.get((level, idx - 1)) or read(level, idx - 1)
                h = node_hash(left, h)
                level, idx = level + 1, idx >> 1
                new_nodes.append((level, idx, h.hex()))
            known[(level, idx)] = h
            size += 1
        if pg:  # leaves and nodes in one statement (one round trip)
            cursor.execute(
                "WITH l AS (INSERT INTO log_leaves (position, kind, record_id, leaf, leaf_hash) "
                "SELECT * FROM unnest(%s::int[], %s::text[], %s::int[], %s::text[], %s::text[])) "
                "INSERT INTO log_nodes (level, idx, hash) "
                "SELECT * FROM unnest(%s::smallint[], %s::int[], %s::text[])",
                [list(col) for col in zip(*new_leaves, strict=True)]
                + ([list(col) for col in zip(*new_nodes, strict=True)] or [[], [], []]),
            )
        else:
            cursor.executemany(
                "INSERT INTO log_leaves (position, kind, record_id, leaf, leaf_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                new_leaves,
            )
            if new_nodes:
                cursor.executemany(
                    "INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)", new_nodes
                )
    finally:
        cursor.close()
    return size


@event.listens_for(Session, "before_commit")
def _append_on_commit(session: Session) -> None:
    pending = session.info.pop(PENDING, None)
    if pending:
        session.flush()
        append_leaves(session, pending)


@event.listens_for(Session, "after_transaction_end")
def _drop_when_done(session: Session, transaction: Any) -> None:
    """Whatever is still queued when the outermost transaction ends (rolled back, or its
    connection lost) was never appended: drop it."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)
