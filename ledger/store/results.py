"""Reading recorded results: which metric row counts, and how the results of several runs merge.

These two rules live here and nowhere else; the verdict, the report, ``docket reproduce`` and
``docket runs show`` all read results through this module.

* **Which metric row counts** (:func:`effective_metrics`): within one run, of the rows of one
  metric name the one at the highest ``step`` counts, and a row without a step is the run's final
  value, so it counts over any stepped row; among rows with the same step the later row (higher
  id) counts. A run that logs ``acc`` = 0.70 at step 100 and ``acc`` = 0.90 with no step reads
  0.90.
* **Merging runs** (:func:`load_payload`): the runs are merged in the order given; a later run
  overrides an earlier one for the same ``(group, item, signal)`` observation and for the same
  metric name.
* **Pooling replicates** (:func:`pool_payloads`, ``select: all``): per ``(group, item, signal)``
  the arithmetic mean of the value over the replicates that recorded it; the item's label is that
  of the first replicate (declared seed order) recording it; per metric name the mean of the
  replicates' effective values, with no CI (a pooled metric has none). :func:`load_parts` reads a
  source stored as parts (each part a list of run ids pooled this way, a one-run part is that
  run) merged in order like :func:`load_payload`.
* **The canonical inputs** of a verdict and their ``inputs_sha256`` (two recorded formats) are
  defined in :mod:`docketml.ledger.store.inputs_digest`, over the effective data these rules
  give.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from .models import MetricRow, ObservationRow

__all__ = [
    "SourcePayload",
    "effective_metrics",
    "load_parts",
    "load_payload",
    "pool_payloads",
    "metric_rank",
    "part_metrics",
    "run_metrics",
]


def metric_rank(step: int | None, row_id: int) -> tuple[float, int]:
    """Sort key of a metric row within one run and name: the highest key counts."""
    return (math.inf if step is None else float(step), row_id)


def effective_metrics(rows: Iterable[Any]) -> dict[str, Any]:
    """Per metric name, the row that counts (module docstring) among ``rows`` of ONE run.

    ``rows`` are objects with ``name``, ``step`` and ``id`` attributes (ORM rows or named rows)."""
    best: dict[str, Any] = {}
    for row in rows:
        held = best.get(row.name)
        if held is None or metric_rank(row.step, row.id) > metric_rank(held.step, held.id):
            best[row.name] = row
    return best


def run_metrics(session: Session, run_id: int) -> dict[str, MetricRow]:
    """The effective metric rows of run ``run_id``, by name."""
    rows = session.scalars(select(MetricRow).where(MetricRow.run_id == run_id))
    return effective_metrics(rows)


@dataclass
class SourcePayload:
    """The effective data of one source: what the engine sees and what is hashed."""

    run_ids: list[int]
    observations: dict[tuple[str, str, str], tuple[int | None, float]]
    metrics: dict[str, tuple[float, float | None, float | None]]


def load_payload(
    session: Session, run_ids: Sequence[int], signals: Collection[str] | None = None
) -> SourcePayload:
    """Observations and effective metrics of ``run_ids`` merged in the given order (a later run
    overrides an earlier one; within a run a later row overrides an earlier one). ``signals``
    limits the observations read to those signals (the database filters them; the metrics are
    all read). Rows are streamed in merge order (run position, then id), so memory is the merged
    result, not the rows read."""
    order = {rid: i for i, rid in enumerate(run_ids)}
    obs: dict[tuple[str, str, str], tuple[int | None, float]] = {}
    mets: dict[str, tuple[float, float | None, float | None]] = {}
    if not run_ids:
        return SourcePayload([], obs, mets)
    query = (
        select(
            ObservationRow.group,
            ObservationRow.item,
            ObservationRow.signal,
            ObservationRow.label,
            ObservationRow.value,
        )
        .where(ObservationRow.run_id.in_(list(run_ids)))
        .order_by(case(order, value=ObservationRow.run_id), ObservationRow.id)
    )
    if signals is not None:
        query = query.where(ObservationRow.signal.in_(sorted(set(signals))))
    for group, item, signal, label, value in session.execute(
        query.execution_options(yield_per=50_000)
    ):
        obs[(group, item, signal)] = (label, float(value))
    mrows = _metric_rows(session, run_ids)
    by_run: dict[int, list[Any]] = {}
    for r in mrows:
        by_run.setdefault(r.run_id, []).append(r)
    for rid in sorted(by_run, key=order.__getitem__):
        for name, r in effective_metrics(by_run[rid]).items():
            mets[name] = (float(r.value), r.ci_low, r.ci_high)
    return SourcePayload(list(run_ids), obs, mets)


def pool_payloads(payloads: Sequence[SourcePayload]) -> SourcePayload:
    """The replicates ``payloads`` (declared seed order) pooled (module docstring); the run ids
    are theirs, concatenated."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    labels: dict[tuple[str, str, str], int | None] = {}
    msums: dict[str, list[float]] = {}
    for p in payloads:
        for key, (label, value) in p.observations.items():
            sums.setdefault(key, []).append(value)
            labels.setdefault(key, label)
        for name, (value, _lo, _hi) in p.metrics.items():
            msums.setdefault(name, []).append(value)
    obs = {k: (labels[k], math.fsum(v) / len(v)) for k, v in sums.items()}
    mets = {n: (math.fsum(v) / len(v), None, None) for n, v in msums.items()}
    return SourcePayload([rid for p in payloads for rid in p.run_ids], obs, mets)


def part_metrics(
    session: Session, parts: Sequence[Sequence[int]]
) -> dict[str, tuple[float, float | None, float | None]]:
    """The effective metrics of a source stored as ``parts``, as :func:`load_parts` merges them
    (each part's runs pooled, the parts merged in order), without reading observations."""
    out: dict[str, tuple[float, float | None, float | None]] = {}
    for part in parts:
        runs = [_metrics_only(session, [rid]) for rid in part]
        if len(runs) == 1:
            out.update(runs[0])
            continue
        sums: dict[str, list[float]] = {}
        for mets in runs:
            for name, (value, _lo, _hi) in mets.items():
                sums.setdefault(name, []).append(value)
        out.update({n: (math.fsum(v) / len(v), None, None) for n, v in sums.items()})
    return out


def _metric_rows(session: Session, run_ids: Sequence[int]) -> Sequence[Any]:
    """Every metric row of ``run_ids`` (run_id, id, name, step, value, ci_low, ci_high), for
    :func:`effective_metrics`."""
    return session.execute(
        select(
            MetricRow.run_id,
            MetricRow.id,
            MetricRow.name,
            MetricRow.step,
            MetricRow.value,
            MetricRow.ci_low,
            MetricRow.ci_high,
        ).where(MetricRow.run_id.in_(list(run_ids)))
    ).all()


def _metrics_only(
    session: Session, run_ids: Sequence[int]
) -> dict[str, tuple[float, float | None, float | None]]:
    rows = _metric_rows(session, run_ids)
    return {
        name: (float(r.value), r.ci_low, r.ci_high) for name, r in effective_metrics(rows).items()
    }


def load_parts(session: Session, parts: Sequence[Sequence[int]]) -> SourcePayload:
    """A source stored as ``parts`` (module docstring): each part pooled, the parts merged in
    order (a later part overrides an earlier one). All one-run parts = :func:`load_payload`."""
    flat = [rid for part in parts for rid in part]
    if all(len(part) == 1 for part in parts):
        return load_payload(session, flat)
    merged = SourcePayload(flat, {}, {})
    for part in parts:
        if len(part) == 1:
            p = load_payload(session, list(part))
        else:
            p = pool_payloads([load_payload(session, [rid]) for rid in part])
        merged.observations.update(p.observations)
        merged.metrics.update(p.metrics)
    return merged
