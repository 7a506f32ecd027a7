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
* an append at size ``n`` needs only the log's right edge (:class:`Frontier`: one complete
  subtree per set bit of ``n``) and inserts the leaf and the nodes ``(level, n >> level)`` it
  completes (one per trailing 1-bit of ``n``): O(log n), amortised O(1). The edge is read in one
  statement (:data:`_FRONTIER_SQL`), or taken from the connection's previous append and checked
  by the insert itself (:func:`append_leaves`), so that an append usually costs no statement and
  no round trip beyond its inserts.

A rolled-back transaction drops its queued leaves. Read side: ``ledger.integrity.log``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, select
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
    "APPEND_PATHS",
    "FRONTIER_INFO",
    "Frontier",
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


def _frontier_levels(size: int) -> list[int]:
    """Levels of the complete subtrees on the right edge of a tree of ``size`` leaves: one per
    set bit of ``size``; the subtree at level ``L`` is node ``(L, (size >> L) - 1)``."""
    return [level for level in range(size.bit_length()) if size >> level & 1]


@dataclass(frozen=True)
class Frontier:
    """The right edge of the log at ``size`` leaves: ``edge[L]`` is the hash of subtree
    ``(L, (size >> L) - 1)`` for every level ``L`` of :func:`_frontier_levels`, and ``last`` the
    hash of leaf ``size - 1`` (the guard of a cached frontier)."""

    size: int
    last: bytes
    edge: dict[int, bytes]


def _extend(
    frontier: Frontier | None, pending: list[_Pending]
) -> tuple[list[tuple], list[tuple], Frontier]:
    """Append ``pending`` to ``frontier`` (None: the empty log): the leaf rows
    ``(position, kind, record_id, leaf, leaf_hash)``, the node rows ``(level, idx, hash)`` of
    every subtree the leaves complete, and the new frontier.

    Leaf ``n`` completes one subtree per trailing 1-bit of ``n``: at each, the left sibling is
    the frontier's subtree of that level (consumed), so nothing else is ever read."""
    size = 0 if frontier is None else frontier.size
    edge = {} if frontier is None else dict(frontier.edge)
    leaves, nodes = [], []
    h = b""
    for item in pending:
        h = leaf_hash(item.leaf)
        leaves.append((size, item.kind, item.record_id, item.leaf.decode("ascii"), h.hex()))
        node, level, idx = h, 0, size
        while idx & 1:  # completes the subtree (level + 1, idx >> 1)
            node = node_hash(edge.pop(level), node)
            level, idx = level + 1, idx >> 1
            nodes.append((level, idx, node.hex()))
        edge[level] = node
        size += 1
    return leaves, nodes, Frontier(size, h, edge)


# the frontier query: the last leaf (level -1) and the stored subtree of every level 1..31 whose
# bit is set in the size; one statement on both backends (a recursive CTE numbers the levels)
_FRONTIER_SQL = (
    "WITH RECURSIVE lv(l) AS (SELECT 1 UNION ALL SELECT l + 1 FROM lv WHERE l < 31), "
    "last AS (SELECT position, leaf_hash FROM log_leaves ORDER BY position DESC LIMIT 1) "
    "SELECT -1, position, leaf_hash FROM last UNION ALL "
    "SELECT n.level, n.idx, n.hash FROM last, lv, log_nodes n "
    "WHERE (((last.position + 1) >> lv.l) & 1) = 1 "
    "AND n.level = lv.l AND n.idx = ((last.position + 1) >> lv.l) - 1"
)


def _frontier_of(rows: list[tuple]) -> Frontier | None:
    """The :class:`Frontier` of the frontier query's rows (None: the log is empty); a missing
    node means the log tables were truncated or edited."""
    last = [r for r in rows if int(r[0]) == -1]
    if not last:
        return None
    size = int(last[0][1]) + 1
    stored = {int(level): bytes.fromhex(h) for level, _, h in rows if int(level) >= 1}
    edge: dict[int, bytes] = {}
    for level in _frontier_levels(size):
        if level == 0:
            edge[0] = bytes.fromhex(last[0][2])
        elif level in stored:
            edge[level] = stored[level]
        else:
            raise IntegrityViolation(
                f"the Merkle log lacks node ({level}, {(size >> level) - 1}) needed to append "
                f"leaf {size}: its tables were truncated or edited; run `docket audit`"
            )
    return Frontier(size, bytes.fromhex(last[0][2]), edge)


APPEND_PATHS: Counter[str] = Counter()
"""Appends in this process by path (``"cached"``, ``"cached+commit"``, ``"read"``): what
tests and benchmarks read to know which path ran."""
FRONTIER_INFO = "docket_log_frontier"  # key in the DB-API connection's info (pool entry)
_SAVEPOINT = "docket_log_append"
_LEAF_COLUMNS = "position, kind, record_id, leaf, leaf_hash"


def append_leaves(session: Session, pending: list[_Pending], *, commit: bool = False) -> int:
    """Append ``pending`` at the end of the log (module docstring); returns the new size.
    ``commit``: the caller is about to commit the session's own transaction (the commit hook),
    so PostgreSQL's cached path may send the ``COMMIT`` itself.

    Runs on the DB-API cursor of the session's connection (same transaction), where
    SQLAlchemy's per-statement overhead would dominate. Two paths compute the same rows with
    :func:`_extend`:

    * **cached** (the connection's previous append left its :class:`Frontier` in the
      connection's info): one guarded insert, valid only if leaf ``size - 1`` is still the
      cached one and position ``size`` is free (a leaf names its record, so an equal hash at
      that position is the same log). On PostgreSQL the lock, a savepoint, the guarded insert
      of leaves and nodes and, with ``commit`` when the session owns its transaction (bound to
      an engine, not in a savepoint), the ``COMMIT`` go as one simple-protocol message: no
      round trip beyond the commit the write makes anyway. A failed guard (another writer
      appended, the log was truncated, a rolled-back append) rolls back to the savepoint and
      takes the read path.
    * **read**: the lock and :data:`_FRONTIER_SQL` (one round trip / statement), then the
      inserts."""
    conn = session.connection()
    pool_entry = conn.connection
    cached: Frontier | None = pool_entry.info.pop(FRONTIER_INFO, None)
    pg = conn.dialect.name == "postgresql"
    cursor = pool_entry.dbapi_connection.cursor()
    try:
        if cached is not None:
            leaves, nodes, after = _extend(cached, pending)
            if pg:
                commit = (
                    commit
                    and isinstance(session.get_bind(), Engine)
                    and not session.in_nested_transaction()
                )
                done = _pg_guarded_insert(cursor, cached, leaves, nodes, commit)
                path = "cached+commit" if commit else "cached"
            else:
                done = _sqlite_guarded_insert(cursor, cached, leaves, nodes)
                path = "cached"
            if done:
                pool_entry.info[FRONTIER_INFO] = after
                APPEND_PATHS[path] += 1
                return after.size
        if pg:  # the lock, then the read, in one round trip (simple query protocol)
            cursor.execute(f"SELECT pg_advisory_xact_lock({int(lock_key(LOCK))}); {_FRONTIER_SQL}")
            cursor.nextset()
        else:  # BEGIN IMMEDIATE already holds the write lock
            lock_chain(session, LOCK)
            cursor.execute(_FRONTIER_SQL)
        leaves, nodes, after = _extend(_frontier_of(cursor.fetchall()), pending)
        if pg:
            cursor.execute(_PG_INSERT, _pg_arrays(leaves, nodes))
        else:
            _sqlite_insert(cursor, leaves, nodes)
        pool_entry.info[FRONTIER_INFO] = after
        APPEND_PATHS["read"] += 1
        return after.size
    finally:
        cursor.close()


_PG_INSERT = (
    f"WITH l AS (INSERT INTO log_leaves ({_LEAF_COLUMNS}) "
    "SELECT * FROM unnest(%s::int[], %s::text[], %s::int[], %s::text[], %s::text[])) "
    "INSERT INTO log_nodes (level, idx, hash) "
    "SELECT * FROM unnest(%s::smallint[], %s::int[], %s::text[])"
)


def _pg_arrays(leaves: list[tuple], nodes: list[tuple]) -> list[list]:
    return [list(col) for col in zip(*leaves, strict=True)] + (
        [list(col) for col in zip(*nodes, strict=True)] or [[], [], []]
    )


def _pg_guarded_insert(
    cursor: Any, cached: Frontier, leaves: list[tuple], nodes: list[tuple], commit: bool
) -> bool:
    """The cached path on PostgreSQL (:func:`append_leaves`); False when the guard failed
    (nothing inserted, the transaction intact). The guard divides by the number of leaves at
    ``size - 1`` with the cached hash, so a stale frontier raises ``division_by_zero`` and a
    taken position ``unique_violation``, both inside the savepoint (the guard is a materialized
    CTE whose value every insert filters on, so the planner cannot drop it)."""
    import psycopg

    guard = (
        "SELECT 1 / (SELECT count(*)::int FROM log_leaves WHERE position = "
        f"{cached.size - 1} AND leaf_hash = '{cached.last.hex()}') AS ok"
    )
    leaf_insert = (
        f"INSERT INTO log_leaves ({_LEAF_COLUMNS}) SELECT v.* FROM "
        f"(VALUES {_rows_sql(leaves)}) AS v({_LEAF_COLUMNS}), g WHERE g.ok = 1"
    )
    insert = f"WITH g AS MATERIALIZED ({guard}) "
    if nodes:  # both inserts in one statement, each joined to the guard
        insert += (
            f", l AS ({leaf_insert}) INSERT INTO log_nodes (level, idx, hash) SELECT v.* FROM "
            f"(VALUES {_rows_sql(nodes)}) AS v(level, idx, hash), g WHERE g.ok = 1"
        )
    else:
        insert += leaf_insert
    with psycopg.ClientCursor(cursor.connection) as client:  # literals: one simple message
        rendered = client.mogrify(insert, [value for row in leaves + nodes for value in row])
    message = [
        f"SELECT pg_advisory_xact_lock({int(lock_key(LOCK))})",
        f"SAVEPOINT {_SAVEPOINT}",
        rendered,
        f"RELEASE SAVEPOINT {_SAVEPOINT}",
    ]
    if commit:
        message.append("COMMIT")
    try:
        cursor.execute("; ".join(message))
    except (psycopg.errors.DivisionByZero, psycopg.errors.UniqueViolation):
        cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        return False
    return True


def _rows_sql(rows: list[tuple]) -> str:
    """``(%s, ...), (%s, ...)``: a VALUES list of ``rows`` for ``mogrify`` (quoting scalars is
    several times cheaper than quoting arrays)."""
    row = "(" + ", ".join(["%s"] * len(rows[0])) + ")"
    return ", ".join([row] * len(rows))


def _sqlite_guarded_insert(
    cursor: Any, cached: Frontier, leaves: list[tuple], nodes: list[tuple]
) -> bool:
    """The cached path on SQLite (:func:`append_leaves`): the first leaf inserted only where
    leaf ``size - 1`` has the cached hash (a taken position is refused by the primary key and
    the no-replace trigger); False, with nothing inserted, when the guard failed."""
    import sqlite3

    try:
        cursor.execute(
            f"INSERT INTO log_leaves ({_LEAF_COLUMNS}) SELECT ?, ?, ?, ?, ? WHERE EXISTS "
            "(SELECT 1 FROM log_leaves WHERE position = ? AND leaf_hash = ?)",
            (*leaves[0], cached.size - 1, cached.last.hex()),
        )
    except sqlite3.IntegrityError:
        return False
    if cursor.rowcount != 1:
        return False
    _sqlite_insert(cursor, leaves[1:], nodes)
    return True


def _sqlite_insert(cursor: Any, leaves: list[tuple], nodes: list[tuple]) -> None:
    for sql, rows in (
        (f"INSERT INTO log_leaves ({_LEAF_COLUMNS}) VALUES (?, ?, ?, ?, ?)", leaves),
        ("INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes),
    ):
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        elif rows:
            cursor.executemany(sql, rows)


@event.listens_for(Session, "before_commit")
def _append_on_commit(session: Session) -> None:
    pending = session.info.pop(PENDING, None)
    if pending:
        session.flush()
        append_leaves(session, pending, commit=True)


@event.listens_for(Session, "after_transaction_end")
def _drop_when_done(session: Session, transaction: Any) -> None:
    """Whatever is still queued when the outermost transaction ends (rolled back, or its
    connection lost) was never appended: drop it."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)
