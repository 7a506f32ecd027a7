"""Streaming a source's effective observations from the ledger, one group at a time.

:func:`iter_groups` reads the observations of a source stored as ``parts`` (the contract of
:func:`docketml.ledger.store.results.load_parts`) with **one** SQL query ordered by
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
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from .results import SourcePayload

FETCH_ROWS = 50_000
_cursor_names = count()


@dataclass
class GroupBlock:
    """The effective observations of one group, in canonical ``(item, signal)`` order.

    ``items``, ``signals``: object arrays of ``str``; ``labels``: object array of ``int`` or
    ``None`` (the stored values); ``values``: float64 (the stored value, ``float()``)."""

    group: str
    items: np.ndarray
    signals: np.ndarray
    labels: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def payload_blocks(payload: SourcePayload) -> list[GroupBlock]:
    """A dict-held payload (:class:`docketml.ledger.store.results.SourcePayload`) as the blocks
    :func:`iter_groups` yields: one per group, group order, rows in canonical ``(item, signal)``
    order (for parts that repeat a run, and for hashing dict payloads)."""
    keys = sorted(payload.observations)
    out: list[GroupBlock] = []
    start = 0
    for k in range(1, len(keys) + 1):
        if k == len(keys) or keys[k][0] != keys[start][0]:
            chunk = keys[start:k]
            out.append(
                GroupBlock(
                    chunk[0][0],
                    np.array([i for _, i, _ in chunk], dtype=object),
                    np.array([s for _, _, s in chunk], dtype=object),
                    np.array([payload.observations[c][0] for c in chunk], dtype=object),
                    np.array([payload.observations[c][1] for c in chunk], dtype=np.float64),
                )
            )
            start = k
    return out


def flat_runs(parts: Sequence[Sequence[int]]) -> list[int]:
    """The run ids of ``parts`` in order (the source's ``run_ids``)."""
    return [int(rid) for part in parts for rid in part]


def streamable(parts: Sequence[Sequence[int]]) -> bool:
    """Whether :func:`iter_groups` can read ``parts``: no run appears twice (a selection never
    repeats one; the dict path handles the odd pinned record that does)."""
    flat = flat_runs(parts)
    return len(flat) == len(set(flat))


def _query(dialect: str, flat: list[int], with_run: bool) -> str:
    ids = ", ".join(str(int(r)) for r in flat)
    collate = ' COLLATE "C"' if dialect == "postgresql" else ""
    order = f"grp{collate}, item{collate}, signal{collate}"
    if len(flat) > 1:
        rank = " ".join(f"WHEN {int(r)} THEN {k}" for k, r in enumerate(flat))
        order += f", CASE run_id {rank} END"
    order += ", id"
    cols = "grp, item, signal, label, value" + (", run_id" if with_run else "")
    return f"SELECT {cols} FROM observations WHERE run_id IN ({ids}) ORDER BY {order}"


def _chunks(session: Session, sql: str) -> Iterator[list[tuple]]:
    conn = session.connection()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"docket_stream_{next(_cursor_names)}")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(FETCH_ROWS):
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


def iter_groups(session: Session, parts: Sequence[Sequence[int]]) -> Iterator[GroupBlock]:
    """The effective observations of ``parts`` (see the module docstring), one group at a time
    in group order; requires :func:`streamable`."""
    flat = flat_runs(parts)
    if not flat:
        return
    dialect = session.connection().dialect.name
    pooled = any(len(p) > 1 for p in parts)
    sql = _query(dialect, flat, with_run=pooled)
    if not pooled:
        for rows in _raw_groups(session, sql, 5):
            yield _block(_last_per_key(rows))
        return
    part_of = {int(rid): k for k, part in enumerate(parts) for rid in part}
    for rows in _raw_groups(session, sql, 6):
        yield _block(_pooled(rows, part_of))
