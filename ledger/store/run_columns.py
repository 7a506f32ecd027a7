"""Writing a finished run's stored columns (``run_columns``), backfilling them, checking them.

* :func:`write_run_columns`: in the transaction that completes a run
  (:func:`.runs.complete_run`), after its observation rows are written: the run's effective
  observations, read back from those rows by the one reader of rows
  (:func:`.stream.iter_groups` with ``from_rows=True``, so "which row counts" has one
  definition), encoded per group (:mod:`.columns`) and inserted. A run without observations
  gets no rows. The table is append-only (triggers), so a run's columns are written once.
* :func:`backfill`: the same for every run in a final status that has observations but no
  columns (runs finished before revision 0006); ``docket db upgrade`` calls it after migrating.
* :func:`column_problems`: the audit's check that a run's stored columns are still exactly what
  its rows give (an edited body, a missing or extra group, a chunk that does not decode). Rows
  that changed after completion are the run leaf's finding (``ledger.integrity.leaf_audit``);
  this check is what lets verdicts read the columns instead of the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from . import columns
from .models import ObservationRow, RunColumnsRow, RunRow
from .stream import iter_groups

__all__ = ["backfill", "column_problems", "write_run_columns"]


def _bodies(session: Session, run_id: int) -> Iterator[tuple[str, int, int, bytes]]:
    """``(group, chunk, rows, body)`` of run ``run_id`` as its observation rows give them."""
    for block in iter_groups(session, [[run_id]], from_rows=True):
        for chunk, (rows, body) in enumerate(columns.chunks(block)):
            yield block.group, chunk, rows, body


def write_run_columns(session: Session, run_id: int) -> int:
    """Store run ``run_id``'s columns (module docstring); returns the observations stored."""
    total = 0
    for group, chunk, rows, body in _bodies(session, run_id):
        session.execute(
            insert(RunColumnsRow.__table__),
            [{"run_id": run_id, "grp": group, "chunk": chunk, "rows": rows, "body": body}],
        )
        total += rows
    return total


def backfill(session: Session) -> list[int]:
    """Write the columns of every finished run that has observations and none (module
    docstring); returns those run ids."""
    from .runs import FINAL_STATUSES

    has_obs = select(ObservationRow.id).where(ObservationRow.run_id == RunRow.id).exists()
    has_cols = select(RunColumnsRow.run_id).where(RunColumnsRow.run_id == RunRow.id).exists()
    ids = session.scalars(
        select(RunRow.id)
        .where(RunRow.status.in_(FINAL_STATUSES), has_obs, ~has_cols)
        .order_by(RunRow.id)
    ).all()
    for run_id in ids:
        write_run_columns(session, run_id)
    return list(ids)


def column_problems(session: Session, run_id: int) -> list[str]:
    """How run ``run_id``'s stored columns differ from what its rows give (empty: they agree,
    or the run has none). Memory: one body at a time (the stored ones are kept as digests)."""
    stored = session.execute(
        select(RunColumnsRow.group, RunColumnsRow.chunk, RunColumnsRow.rows, RunColumnsRow.body)
        .where(RunColumnsRow.run_id == run_id)
        .execution_options(yield_per=1)
    )
    have: dict[tuple[str, int], tuple[int, str, str | None]] = {}
    for group, chunk, rows, body in stored:
        try:
            columns.decode(bytes(body))
            broken = None
        except ValueError as exc:
            broken = str(exc)
        have[(group, int(chunk))] = (int(rows), hashlib.sha256(body).hexdigest(), broken)
    if not have:
        return []
    problems = []
    for group, chunk, rows, body in _bodies(session, run_id):
        got = have.pop((group, chunk), None)
        where = f"group {group!r} chunk {chunk}"
        if got is None:
            problems.append(f"{where} is missing from run_columns")
        elif got[2] is not None:
            problems.append(f"{where} does not decode ({got[2]})")
        elif got[:2] != (rows, hashlib.sha256(body).hexdigest()):
            problems.append(f"{where} differs from what the observation rows give")
    problems += [f"group {g!r} chunk {c} has no observation rows" for g, c in sorted(have)]
    return problems
