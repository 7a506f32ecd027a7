"""Read-only views of runs: one run in full, several side by side.

Contract (every function only reads; callers pass a :meth:`Ledger.read_session`):

* :func:`run_detail` = :func:`runs.run_summary` plus the run's config, provenance (git sha,
  input/checkpoint sha256, protocol version), its knob audit, its **effective** metrics (the one
  rule of :mod:`.results`: the no-step row, else the highest step), the full per-step metric
  history, per ``(group, signal)`` summaries of its observations and, with ``texts``, its
  generated texts.
* A signal summary over the finite values ``x`` of one (group, signal) is ``n``, ``mean``,
  ``min``, ``max`` and, when both labels occur, ``mean_pos`` / ``mean_neg`` (label 1 / 0).
* :func:`compare_runs` puts runs side by side: for params and effective metrics the union of
  names with one value per run (``None`` where a run lacks it) and ``same`` = all equal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import UserError
from .models import MetricRow, ObservationRow, ProtocolRow, RunRow, RunTextRow
from .results import effective_metrics
from .runs import run_summary

__all__ = ["compare_runs", "get_run", "run_detail", "signal_summaries"]


def get_run(session: Session, run_id: int) -> RunRow:
    """The run ``run_id``; :class:`UserError` (exit 2) naming the known range otherwise."""
    run = session.get(RunRow, run_id)
    if run is None:
        top = session.scalar(select(func.max(RunRow.id)))
        known = f"runs are numbered 1..{top}" if top else "the ledger has no runs yet"
        raise UserError(f"no run #{run_id}: {known} (`docket runs list`)")
    return run


def signal_summaries(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Per (group, signal) of run ``run_id``: n, mean, min, max, mean_pos, mean_neg (module doc)."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = {}
    rows = session.execute(
        select(
            ObservationRow.group, ObservationRow.signal, ObservationRow.label, ObservationRow.value
        ).where(ObservationRow.run_id == run_id)
    )
    for group, signal, label, value in rows:
        if value is None or not math.isfinite(value):
            continue
        slot = acc.setdefault((group, signal), {"all": [], "pos": [], "neg": []})
        slot["all"].append(value)
        if label == 1:
            slot["pos"].append(value)
        elif label == 0:
            slot["neg"].append(value)
    out = []
    for (group, signal), v in sorted(acc.items()):
        xs = v["all"]
        out.append(
            {
                "group": group,
                "signal": signal,
                "n": len(xs),
                "mean": sum(xs) / len(xs),
                "min": min(xs),
                "max": max(xs),
                "mean_pos": sum(v["pos"]) / len(v["pos"]) if v["pos"] and v["neg"] else None,
                "mean_neg": sum(v["neg"]) / len(v["neg"]) if v["pos"] and v["neg"] else None,
            }
        )
    return out


def _metrics(session: Session, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = list(
        session.scalars(select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.id))
    )
    effective = {
        name: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "step": r.step}
        for name, r in sorted(effective_metrics(rows).items())
    }
    history = [{"name": r.name, "step": r.step, "value": r.value} for r in rows]
    return effective, history


def run_detail(session: Session, run_id: int, *, texts: bool = False) -> dict[str, Any]:
    """Everything recorded about run ``run_id`` (module docstring)."""
    run = get_run(session, run_id)
    protocol = session.get(ProtocolRow, run.protocol_pk)
    metrics, history = _metrics(session, run_id)
    n_texts = session.scalar(
        select(func.count()).select_from(RunTextRow).where(RunTextRow.run_id == run_id)
    )
    detail = run_summary(run)
    detail.update(
        {
            "protocol": protocol.protocol_id if protocol else None,
            "protocol_version": protocol.version if protocol else None,
            "config": json.loads(run.config_json or "{}"),
            "git_sha": run.git_sha,
            "input_sha256": run.input_sha256,
            "checkpoint_path": run.checkpoint_path,
            "queued_at": run.queued_at.isoformat() if run.queued_at else None,
            "knob_audit": json.loads(run.knob_audit_json) if run.knob_audit_json else None,
            "extra": json.loads(run.extra_json) if run.extra_json else None,
            "metrics": metrics,
            "metric_history": history,
            "signals": signal_summaries(session, run_id),
            "n_texts": int(n_texts or 0),
        }
    )
    if texts:
        detail["texts"] = {
            item: text
            for item, text in session.execute(
                select(RunTextRow.item, RunTextRow.text)
                .where(RunTextRow.run_id == run_id)
                .order_by(RunTextRow.item)
            )
        }
    return detail


def _side_by_side(per_run: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = sorted({k for d in per_run for k in d})
    out = {}
    for name in names:
        values = [d.get(name) for d in per_run]
        out[name] = {"values": values, "same": all(v == values[0] for v in values)}
    return out


def _params(config: dict[str, Any]) -> dict[str, Any]:
    """A runner run's job params; an ingested run's ingest settings (file, format, ...)."""
    job = config.get("job")
    return dict(job.get("params", {})) if isinstance(job, dict) else dict(config)


def compare_runs(session: Session, run_ids: Sequence[int]) -> dict[str, Any]:
    """Runs ``run_ids`` side by side: params, effective metrics, signal summaries (module doc)."""
    if len(run_ids) < 2:
        raise UserError("runs compare needs at least two run ids, e.g. `docket runs compare 3 5`")
    details = [run_detail(session, rid) for rid in run_ids]
    params = [_params(d["config"]) for d in details]
    metrics = [{k: m["value"] for k, m in d["metrics"].items()} for d in details]
    signals = [
        {f"{s['group']}/{s['signal']}": round(s["mean"], 12) for s in d["signals"]} for d in details
    ]
    return {
        "runs": [
            {
                k: d[k]
                for k in ("id", "job", "kind", "status", "protocol", "protocol_version", "seed")
            }
            for d in details
        ],
        "params": _side_by_side(params),
        "metrics": _side_by_side(metrics),
        "signal_means": _side_by_side(signals),
    }
