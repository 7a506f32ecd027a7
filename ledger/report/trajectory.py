"""Checkpoint trajectories: recorded metrics against training step.

Contract of :func:`trajectory`:

* Source: ``metrics`` rows whose ``step`` is not NULL, of the **succeeded** runs bound to the
  **latest frozen version** of the protocol (runs of other versions are ignored, and their count
  is reported in ``ignored_runs``). A protocol that was never frozen is :class:`CheckFailed`
  (exit 1); an unknown protocol is :class:`UserError` (exit 2).
* ``metrics=None`` selects every metric name that has a step; naming a metric that has no
  stepped rows is a :class:`UserError` listing the ones that do.
* When several runs recorded the same metric at the same step (a job re-run with ``--force``),
  the row of the latest run (highest run id) wins; the run id is kept on each point.
* ``job``: only the runs of that job (a :class:`UserError` names the jobs with stepped metrics
  when it has none). Series never interleave jobs: a metric recorded by one job is the series
  ``<metric>``; a metric recorded by several jobs is one series per job, ``<job>/<metric>``
  (``metrics`` names the metric, and selects each of its series).
* Output is deterministic: metric names sorted, steps ascending.

:func:`plot_trajectory` writes one PNG with a panel per metric (matplotlib, Agg backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import UserError
from ..store import protocols as store
from ..store.models import MetricRow, RunRow

__all__ = ["Trajectory", "TrajectoryPoint", "plot_trajectory", "trajectory"]


@dataclass(frozen=True)
class TrajectoryPoint:
    """One recorded value of a metric at a checkpoint step."""

    step: int
    value: float
    ci_low: float | None
    ci_high: float | None
    run_id: int
    job: str


@dataclass
class Trajectory:
    """Metrics against checkpoint step for one frozen protocol version."""

    protocol_id: str
    version: int
    sha256: str
    series: dict[str, list[TrajectoryPoint]] = field(default_factory=dict)
    ignored_runs: int = 0

    @property
    def metrics(self) -> list[str]:
        return sorted(self.series)

    @property
    def steps(self) -> list[int]:
        return sorted({p.step for points in self.series.values() for p in points})

    def table(self) -> list[dict[str, Any]]:
        """One row per step: ``{"step": s, <metric>: value or None, ...}``."""
        by_metric = {m: {p.step: p.value for p in pts} for m, pts in self.series.items()}
        return [{"step": s, **{m: by_metric[m].get(s) for m in self.metrics}} for s in self.steps]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form: the table plus each series with its CIs and run ids."""
        return {
            "protocol": self.protocol_id,
            "version": self.version,
            "sha256": self.sha256,
            "metrics": self.metrics,
            "steps": self.steps,
            "rows": self.table(),
            "series": {
                m: [
                    {
                        "step": p.step,
                        "value": p.value,
                        "ci_low": p.ci_low,
                        "ci_high": p.ci_high,
                        "run_id": p.run_id,
                        "job": p.job,
                    }
                    for p in self.series[m]
                ]
                for m in self.metrics
            },
            "ignored_runs": self.ignored_runs,
        }


def trajectory(
    session: Session,
    protocol_id: str,
    metrics: list[str] | None = None,
    job: str | None = None,
) -> Trajectory:
    """The stepped metrics of ``protocol_id``'s latest frozen version (see module docstring)."""
    row = store.latest_frozen(session, protocol_id)
    query = (
        select(MetricRow, RunRow.job)
        .join(RunRow, RunRow.id == MetricRow.run_id)
        .where(
            RunRow.protocol_pk == row.id,
            RunRow.status == "succeeded",
            MetricRow.step.is_not(None),
        )
        .order_by(MetricRow.name, MetricRow.step, MetricRow.run_id, MetricRow.id)
    )
    latest: dict[tuple[str, str, int], TrajectoryPoint] = {}
    jobs_seen: set[str] = set()
    for metric, run_job in session.execute(query):
        jobs_seen.add(run_job)
        if job is not None and run_job != job:
            continue
        # ordered by run id then row id: a later run of the job overwrites an earlier one
        latest[(metric.name, run_job, int(metric.step))] = TrajectoryPoint(
            step=int(metric.step),
            value=float(metric.value),
            ci_low=metric.ci_low,
            ci_high=metric.ci_high,
            run_id=metric.run_id,
            job=run_job,
        )
    if job is not None and job not in jobs_seen:
        known = ", ".join(sorted(jobs_seen)) or "none"
        raise UserError(
            f"--job {job!r}: no metric with a checkpoint step recorded by that job in "
            f"{protocol_id} v{row.version}; jobs that recorded one: {known}"
        )
    jobs_of: dict[str, set[str]] = {}
    for name, run_job, _step in latest:
        jobs_of.setdefault(name, set()).add(run_job)
    series: dict[str, list[TrajectoryPoint]] = {}
    base: dict[str, str] = {}  # series name -> metric name
    for (name, run_job, _step), point in sorted(latest.items()):
        key = name if len(jobs_of[name]) == 1 else f"{run_job}/{name}"
        base[key] = name
        series.setdefault(key, []).append(point)
    if metrics:
        unknown = [m for m in metrics if m not in jobs_of]
        if unknown:
            known = ", ".join(sorted(jobs_of)) or "none (no metric with a checkpoint step)"
            raise UserError(
                f"no trajectory recorded for {', '.join(unknown)} in {protocol_id} "
                f"v{row.version}; recorded: {known}"
            )
        wanted = list(dict.fromkeys(metrics))
        series = {k: series[k] for m in wanted for k in sorted(series) if base[k] == m}
    pks = [v.id for v in store.chain(session, protocol_id) if v.id != row.id]
    ignored = 0
    if pks:
        ignored = (
            session.scalar(
                select(func.count(func.distinct(RunRow.id)))
                .join(MetricRow, MetricRow.run_id == RunRow.id)
                .where(RunRow.protocol_pk.in_(pks), MetricRow.step.is_not(None))
            )
            or 0
        )
    return Trajectory(row.protocol_id, row.version, row.sha256, series, int(ignored))


def _panel(ax: Any, name: str, points: list[TrajectoryPoint]) -> None:
    steps = [p.step for p in points]
    values = [p.value for p in points]
    ax.plot(steps, values, marker="o", markersize=4, linewidth=1.8, color="#2563eb", label=name)
    lows = [p.ci_low for p in points]
    highs = [p.ci_high for p in points]
    if all(v is not None for v in lows + highs) and points:
        ax.fill_between(steps, lows, highs, color="#2563eb", alpha=0.15, label="CI")
    ax.set_title(name, fontsize=11)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, frameon=False)


def plot_trajectory(traj: Trajectory, path: Path, metrics: list[str] | None = None) -> Path:
    """Write one PNG with a panel per metric (value against checkpoint step) to ``path``.

    :class:`UserError` when there is nothing to plot."""
    from docketml.extras import require_extra

    require_extra("plots")  # MissingExtra (exit 2) without matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metrics or traj.metrics
    if not names:
        raise UserError(
            f"nothing to plot: {traj.protocol_id} v{traj.version} has no metric recorded with a "
            "checkpoint step"
        )
    with plt.rc_context({"text.parse_math": False}):  # metric names are shown literally
        cols = min(3, len(names))
        rows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            _panel(ax, name, traj.series[name])
        for ax in list(axes.flat)[len(names) :]:
            ax.set_visible(False)
        fig.suptitle(f"{traj.protocol_id} v{traj.version}: metrics by checkpoint step", fontsize=12)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path
