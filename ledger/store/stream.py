"""Streaming a source's effective observations from the ledger, one group at a time.

:func:`iter_groups` reads the observations of a source stored as ``parts`` (the contract of
:func:`docketml.ledger.store.results.load_parts`) from one of two places, with the same result:

* **the runs' stored columns** (``run_columns``, :mod:`.columns`, written when each run
  completed by :mod:`.run_columns`), when every run of the source has them or has no
  observations: one query ordered by ``(group, run priority, chunk)``, one body fetched at a time
  and decoded; groups that several runs record are merged by the rules below. A finished run's
  columns are its rows' effective observations (the audit checks that they still are);
* **the observation rows** otherwise (runs finished before revision 0006 and not backfilled, and
  the writer of the columns and the audit, which ask for the rows): **one** SQL query ordered by
``(group, item, signal)`` -- then the run's priority and the row id -- so each group's rows arrive
together and in canonical order. The rows are fetched in chunks of :data:`FETCH_ROWS` (a
server-side cursor on PostgreSQL) into numpy object/float arrays; no Python object per
observation outlives its group. Memory is bounded by the largest group, not by the source.

What counts is exactly :mod:`docketml.ledger.store.results`' rules:

* within one run, of several rows of the same ``(group, item, signal)`` the later row (higher
  id) counts, for its value and its label;
* one-run parts merge in the given order, a later part overriding an earlier one;
* a pooled part (several runs, ``select: all``) gives per key the ``math.fsum`` mean of its
  runs' values and the label of its first run (part order) recording the key.

Text order: SQLite compares ``TEXT`` as UTF-8 bytes (``BINARY``), PostgreSQL is told ``COLLATE
"C"`` (bytes of its UTF-8 encoding); both equal Python's code-point order of ``str``, which
:func:`docketml.ledger.store.results.canonical_inputs` sorts by.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import count

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from . import columns
from .blocks import GroupBlock, payload_blocks

__all__ = ["FETCH_ROWS", "GroupBlock", "flat_runs", "iter_groups", "payload_blocks", "streamable"]

FETCH_ROWS = 50_000
_cursor_names = count()


def flat_runs(parts: Sequence[Sequence[int]]) -> list[int]:
    """The run ids of ``parts`` in order (the source's ``run_ids``)."""
    return [int(rid) for part in parts for rid in part]


def streamable(parts: Sequence[Sequence[int]]) -> bool:
    """Whether :func:`iter_groups` can read ``parts``: no run appears twice (a selection never
    repeats one; the dict path handles the odd pinned record that does)."""
    flat = flat_runs(parts)
    return len(flat) == len(set(flat))


def _ids(flat: Sequence[int]) -> str:
    return ", ".join(str(int(r)) for r in flat)


def _collate(dialect: str) -> str:
    return ' COLLATE "C"' if dialect == "postgresql" else ""


def _run_priority(flat: Sequence[int]) -> str:
    """ORDER BY terms ranking rows by their run's place in ``flat`` (none for one run)."""
    if len(flat) < 2:
        return ""
    return (
        ", CASE run_id " + " ".join(f"WHEN {int(r)} THEN {k}" for k, r in enumerate(flat)) + " END"
    )


def _query(dialect: str, flat: list[int], with_run: bool) -> str:
    c = _collate(dialect)
    order = f"grp{c}, item{c}, signal{c}{_run_priority(flat)}, id"
    cols = "grp, item, signal, label, value" + (", run_id" if with_run else "")
    return f"SELECT {cols} FROM observations WHERE run_id IN ({_ids(flat)}) ORDER BY {order}"


def _chunks(session: Session, sql: str, size: int = FETCH_ROWS) -> Iterator[list[tuple]]:
    conn = session.connection()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"docket_stream_{next(_cursor_names)}")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(size):
            yield rows
    finally:
        cursor.close()


def _raw_groups(session: Session, sql: str, width: int) -> Iterator[np.ndarray]:
    """The ordered rows, one ``(n, width)`` object array per group."""
    pending: list[np.ndarray] = []

    def flush() -> np.ndarray:
        return pending[0] if len(pending) == 1 else np.concatenate(pending)

    for rows in _chunks(session, sql):
        block = np.empty((len(rows), width), dtype=object)
        block[:] = rows
        if pending and pending[0][0, 0] != block[0, 0]:
            yield flush()
            pending = []
        grp = block[:, 0]
        start = 0
        for cut in (np.flatnonzero(grp[1:] != grp[:-1]) + 1).tolist():
            pending.append(block[start:cut])
            yield flush()
            pending = []
            start = cut
        pending.append(block[start:])
    if pending:
        yield flush()


def _same_key(rows: np.ndarray) -> np.ndarray:
    """``out[k]``: row k has the (item, signal) of row k + 1 (length n - 1)."""
    return (rows[1:, 1] == rows[:-1, 1]) & (rows[1:, 2] == rows[:-1, 2])


def _block(rows: np.ndarray) -> GroupBlock:
    return GroupBlock(
        str(rows[0, 0]),
        rows[:, 1],
        rows[:, 2],
        rows[:, 3],
        np.asarray(rows[:, 4], dtype=np.float64),
    )


def _last_per_key(rows: np.ndarray) -> np.ndarray:
    keep = np.ones(len(rows), dtype=bool)
    keep[:-1] = ~_same_key(rows)
    return rows[keep]


def _pooled(rows: np.ndarray, part_of: dict[int, int]) -> np.ndarray:
    """Rows ``(grp, item, signal, label, value, run_id)`` ordered by key, run rank, id -> one
    effective row per key (module docstring)."""
    n = len(rows)
    # within one run the last row of a key counts
    keep = np.ones(n, dtype=bool)
    keep[:-1] = ~(_same_key(rows) & (rows[1:, 5] == rows[:-1, 5]))
    rows = rows[keep]
    n = len(rows)
    part = np.fromiter((part_of[int(r)] for r in rows[:, 5]), dtype=np.int64, count=n)
    starts = np.ones(n, dtype=bool)
    starts[1:] = ~_same_key(rows)
    key = np.cumsum(starts) - 1
    ends = np.append(np.flatnonzero(starts)[1:], n)
    last_part = part[ends - 1][key]
    rows = rows[part == last_part]  # the latest part recording the key, its runs only
    n = len(rows)
    starts = np.ones(n, dtype=bool)
    starts[1:] = ~_same_key(rows)
    first = np.flatnonzero(starts)
    ends = np.append(first[1:], n)
    out = rows[first].copy()
    values = rows[:, 4]
    for k in np.flatnonzero(ends - first > 1).tolist():
        lo, hi = int(first[k]), int(ends[k])
        out[k, 4] = math.fsum(float(v) for v in values[lo:hi]) / (hi - lo)
    return out[:, :5]


def columns_cover(session: Session, flat: Sequence[int]) -> bool:
    """Whether every run of ``flat`` has stored columns or no observations at all."""
    sql = (
        f"SELECT r.id FROM runs r WHERE r.id IN ({_ids(flat)}) "
        "AND NOT EXISTS (SELECT 1 FROM run_columns c WHERE c.run_id = r.id) "
        "AND EXISTS (SELECT 1 FROM observations o WHERE o.run_id = r.id) LIMIT 1"
    )
    return session.execute(text(sql)).first() is None


def _merged(group: str, blocks: list[GroupBlock], run_ids: list[int], pooled: bool,
            part_of: dict[int, int]) -> GroupBlock:  # fmt: skip
    """One group recorded by several runs (``blocks`` in run priority order, ``run_ids``
    theirs): the rows as the ordered row query gives them -- by ``(item, signal)``, then run
    priority (a stable sort of the concatenation) -- through the same rules."""
    rows = np.empty((sum(len(b) for b in blocks), 6), dtype=object)
    rows[:, 0] = group
    rows[:, 1] = np.concatenate([b.items for b in blocks])
    rows[:, 2] = np.concatenate([b.signals for b in blocks])
    rows[:, 3] = np.concatenate([b.labels for b in blocks])
    rows[:, 4] = np.concatenate([b.values for b in blocks]).tolist()
    rows[:, 5] = np.repeat(np.asarray(run_ids, dtype=object), [len(b) for b in blocks])
    keys = list(zip(rows[:, 1].tolist(), rows[:, 2].tolist(), strict=True))
    rows = rows[np.asarray(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)]
    return _block(_pooled(rows, part_of) if pooled else _last_per_key(rows))


def _column_groups(
    session: Session, parts: Sequence[Sequence[int]], pooled: bool
) -> Iterator[GroupBlock]:
    flat = flat_runs(parts)
    order = f"grp{_collate(session.connection().dialect.name)}{_run_priority(flat)}, chunk"
    sql = (
        f"SELECT grp, run_id, body FROM run_columns WHERE run_id IN ({_ids(flat)}) ORDER BY {order}"
    )
    part_of = {int(rid): k for k, part in enumerate(parts) for rid in part}
    group: str | None = None
    by_run: dict[int, list[GroupBlock]] = {}

    def flush() -> GroupBlock:
        runs = [r for r in flat if r in by_run]
        blocks = [columns.concatenate(by_run[r]) for r in runs]
        if len(blocks) == 1:  # one run's columns are already its effective rows
            return blocks[0]
        assert group is not None
        return _merged(group, blocks, runs, pooled, part_of)

    for rows in _chunks(session, sql, 1):  # one body at a time: memory is one group
        for grp, run_id, body in rows:
            if group is not None and grp != group:
                yield flush()
                by_run = {}
            group = grp
            by_run.setdefault(int(run_id), []).append(columns.decode(bytes(body)))
    if by_run:
        yield flush()


def iter_groups(
    session: Session, parts: Sequence[Sequence[int]], *, from_rows: bool = False
) -> Iterator[GroupBlock]:
    """The effective observations of ``parts`` (see the module docstring), one group at a time
    in group order; requires :func:`streamable`. ``from_rows``: read the observation rows even
    where stored columns exist (the columns' writer and the audit)."""
    flat = flat_runs(parts)
    if not flat:
        return
    pooled = any(len(p) > 1 for p in parts)
    if not from_rows and columns_cover(session, flat):
        yield from _column_groups(session, parts, pooled)
        return
    dialect = session.connection().dialect.name
    sql = _query(dialect, flat, with_run=pooled)
    if not pooled:
        for rows in _raw_groups(session, sql, 5):
            yield _block(_last_per_key(rows))
        return
    part_of = {int(rid): k for k, part in enumerate(parts) for rid in part}
    for rows in _raw_groups(session, sql, 6):
        yield _block(_pooled(rows, part_of))
