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
* **The canonical inputs** of a verdict (:func:`canonical_inputs`): per source key (sorted) its
  run ids, its effective observations ``[group, item, signal, label, repr(value)]`` sorted, and
  its effective metrics ``[name, repr(value), repr(ci_low), repr(ci_high)]`` sorted, as compact
  JSON with sorted keys; ``inputs_sha256`` is the sha256 of its UTF-8 bytes.
  :class:`InputsHasher` computes the same sha256 incrementally from the sources' effective
  observations streamed in canonical order (:mod:`docketml.ledger.store.stream`), so a verdict
  over millions of observations never holds them as Python objects.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from .models import MetricRow, ObservationRow

__all__ = [
    "InputsHasher",
    "SourcePayload",
    "canonical_inputs",
    "effective_metrics",
    "inputs_sha256",
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


def _r(x: float | None) -> str | None:
    return None if x is None else repr(float(x))


def canonical_inputs(payloads: dict[str, SourcePayload]) -> str:
    """The canonical JSON of a verdict's inputs (see the module docstring)."""
    doc = {
        key: {
            "runs": list(p.run_ids),
            "observations": sorted(
                [g, i, s, lab, repr(v)] for (g, i, s), (lab, v) in p.observations.items()
            ),
            "metrics": sorted([n, repr(v), _r(lo), _r(hi)] for n, (v, lo, hi) in p.metrics.items()),
        }
        for key, p in sorted(payloads.items())
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def inputs_sha256(payloads: dict[str, SourcePayload]) -> str:
    """sha256 hex of :func:`canonical_inputs`."""
    return hashlib.sha256(canonical_inputs(payloads).encode("utf-8")).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class InputsHasher:
    """:func:`inputs_sha256`, computed incrementally: the same bytes are fed to sha256 in the
    same order. Per source key, in sorted key order: :meth:`begin` (its metrics), then
    :meth:`rows` for every block of its effective observations in canonical ``(group, item,
    signal)`` order, then :meth:`end` (its run ids); finally :meth:`hexdigest`."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256(b"{")
        self._last_key: str | None = None
        self._rows = 0

    def _feed(self, text: str) -> None:
        self._sha.update(text.encode("utf-8"))

    def begin(self, key: str, metrics: dict[str, tuple[float, float | None, float | None]]) -> None:
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"source {key!r} fed after {self._last_key!r}: keys must be sorted")
        lead = "" if self._last_key is None else ","
        self._last_key = key
        self._rows = 0
        mets = sorted([n, repr(v), _r(lo), _r(hi)] for n, (v, lo, hi) in metrics.items())
        self._feed(f'{lead}{_dumps(key)}:{{"metrics":{_dumps(mets)},"observations":[')

    def rows(self, group: str, items: Any, signals: Any, labels: Any, values: Any) -> None:
        """One block: aligned sequences (numpy arrays or lists) of one group's effective
        observations; ``values`` float. Each row is written as ``json.dumps`` writes
        ``[group, item, signal, label, repr(value)]`` (``encode_basestring`` is the encoder's
        own string function), assembled by slice assignment (per row: item, signal, label,
        value, separator) so no per-row Python code runs."""
        n = len(values)
        if not n:
            return

        def listed(x: Any) -> list[Any]:
            return x.tolist() if hasattr(x, "tolist") else list(x)

        sig_list, lab_list = listed(signals), listed(labels)
        sig_piece = {sig: f",{encode_basestring(sig)}," for sig in set(sig_list)}
        lab_piece = {lab: f'{_dumps(lab)},"' for lab in set(lab_list)}
        head = f"[{encode_basestring(group)},"
        sep = '"],' + head  # closes a row and opens the next
        pieces: list[str | None] = [None] * (5 * n)
        pieces[0::5] = map(encode_basestring, listed(items))
        pieces[1::5] = map(sig_piece.__getitem__, sig_list)
        pieces[2::5] = map(lab_piece.__getitem__, lab_list)
        pieces[3::5] = map(repr, listed(values))
        pieces[4::5] = [sep] * n
        text = head + "".join(pieces)[: 2 - len(sep)]  # type: ignore[arg-type]
        self._feed(text if not self._rows else "," + text)
        self._rows += n

    def end(self, run_ids: Sequence[int]) -> None:
        self._feed(f'],"runs":{_dumps([int(r) for r in run_ids])}}}')

    def hexdigest(self) -> str:
        sha = self._sha.copy()
        sha.update(b"}")
        return sha.hexdigest()
