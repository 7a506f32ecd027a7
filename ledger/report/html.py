"""The HTML report of one protocol: what was pre-registered, what happened, what it cost.

Contract of :func:`build_report`:

* Writes ``<out_dir>/index.html`` and PNG figures under ``<out_dir>/figures/`` (the previous
  report's ``figures/*.png`` are removed first; nothing else in ``out_dir`` is touched). The page
  loads nothing from the network: CSS and a tiny script are inlined from the package-data files
  ``assets/report.css`` and ``assets/report.js``, a Content-Security-Policy forbids every remote
  origin, and images are referenced relatively (or inlined as ``data:`` URIs
  with ``embed_images=True``, making ``index.html`` a single portable file).
* Sections, in order: header (protocol id, title, version, status, sha256, frozen_at and the
  primary hypothesis' verdict), pre-registration (hypotheses, sign-check table, amendment chain,
  the frozen version's receipt in the Merkle log -- leaf index, tree size, root, whether its
  inclusion proof verifies against the current head, the head the verdict was computed at and
  how a reader checks it with ``docket verify`` -- the stored YAML), results (verdict per
  hypothesis with its group table, a forest plot of each group's delta CI against the margin,
  per-group ROC curves of the best candidate against the best baseline), checkpoint
  trajectories (metrics with a step), runs and cost (table and bar chart), journal entries. A
  section with nothing to show says "none recorded"; it never disappears.
* Figures need the ``plots`` extra (matplotlib). Without it the report is written with every
  table and no figures, and the footer says which extra draws them.
* The report describes the **latest frozen version** (the latest version when none is frozen).
  The verdict is computed by :func:`ledger.verdict.compute_verdict` without recording it, and
  the page says whether it matches the latest recorded verdict of that sha256 (same
  ``inputs_sha256``) or is not recorded yet.
* Every user-supplied string goes through :func:`html.escape`.
* ROC points are computed with numpy (:func:`roc_points`, the same points as scikit-learn's
  ``roc_curve(..., drop_intermediate=False)``) from the observations of the run(s) the rule uses;
  the AUROCs in the legends come from :func:`ledger.stats.auroc` (the verdict engine's).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.extras import has_extra
from docketml.protocols.schema import Protocol, RegimeWinsRule

from ..billing.money import format_usd
from ..store import protocols as store
from ..store.db import Ledger
from ..store.models import ProtocolRow, RunRow, SignCheckRow, VerdictRow
from ..store.results import load_payload
from ..verdict.rules import VERDICTS
from ..verdict.signcheck import describe_null
from ..verdict.stats import auroc
from .trajectory import Trajectory, TrajectoryPoint, trajectory

__all__ = ["Report", "build_report", "collect", "roc_points"]


def _asset(name: str) -> str:
    """The text of package-data file ``assets/<name>`` (the report's stylesheet and script)."""
    return (importlib.resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


NONE = '<p class="none">none recorded</p>'
FIGURES_NOTE = 'Figures: matplotlib PNGs in <span class="mono">figures/</span>.'
NO_FIGURES_NOTE = (
    "Figures omitted: they need the plots extra: "
    "<span class=\"mono\">pip install 'docketml[plots]'</span>."
)
FIG_DPI = 110
CANDIDATE_COLOUR = "#2563eb"
BASELINE_COLOUR = "#ea580c"
WIN_COLOUR = "#15803d"
LOSS_COLOUR = "#6b7280"


# --------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------


def roc_points(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, ...]:
    """``(fpr, tpr, thresholds)`` of the empirical ROC curve, one point per distinct score.

    Higher score = more likely positive (label 1). The first point is ``(0, 0)`` at threshold
    ``+inf``; then, for each distinct score ``t`` in decreasing order, the rates of samples with
    score ``>= t``. Identical to ``sklearn.metrics.roc_curve(labels, scores,
    drop_intermediate=False)``. Raises ValueError unless both classes are present.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both classes")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    return fpr, tpr, thresholds


# --------------------------------------------------------------------------------------------
# Data collection
# --------------------------------------------------------------------------------------------


@dataclass
class RocCurve:
    signal: str
    role: str  # "candidate" | "baseline"
    auroc: float
    fpr: list[float]
    tpr: list[float]


@dataclass
class RocGroup:
    """The ROC comparison of one group of one ``regime_wins`` hypothesis."""

    hypothesis: str
    group: str
    n_pos: int
    n_neg: int
    curves: list[RocCurve] = field(default_factory=list)
    missing: str | None = None  # why no curve could be drawn


@dataclass
class Report:
    """Everything the page shows, gathered in one read of the ledger."""

    row: dict[str, Any]
    protocol: Protocol
    yaml_text: str
    chain: list[dict[str, Any]]
    sign_check: dict[str, Any] | None
    verdict: dict[str, Any] | None
    verdict_source: str
    runs: list[dict[str, Any]]
    ignored_runs: int
    costs: list[dict[str, Any]]
    cost_total_micros: int
    journal: list[dict[str, Any]]
    roc: list[RocGroup]
    traj: Trajectory | None
    generated_at: str
    receipt: dict[str, Any] | None = None  # the freeze's inclusion in the log (_receipt)


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _report_row(session: Session, protocol_id: str) -> ProtocolRow:
    versions = store.chain(session, protocol_id)
    if not versions:
        store.latest(session, protocol_id)  # raises UserError naming the known ids
    frozen = [v for v in versions if v.status == "frozen"]
    return frozen[-1] if frozen else versions[-1]


def _sign_check(session: Session, row: ProtocolRow) -> dict[str, Any] | None:
    check = session.scalars(
        select(SignCheckRow)
        .where(SignCheckRow.protocol_pk == row.id)
        .order_by(SignCheckRow.id.desc())
        .limit(1)
    ).first()
    if check is None:
        return None
    report = json.loads(check.report_json)
    report.setdefault("checks", [])
    report["passed"] = bool(check.passed)
    report["ran_at"] = _iso(check.ran_at)
    return report


def _verdict(session: Session, row: ProtocolRow) -> tuple[dict[str, Any] | None, str]:
    """The verdict to show and a sentence saying where it comes from.

    For a frozen version the engine computes it now without recording it
    (:func:`ledger.verdict.compute_verdict` with ``record=False``); when the latest recorded
    verdict of the same sha256 has the same ``inputs_sha256`` the page says it matches that
    record, otherwise it says the computed verdict is not recorded yet."""
    recorded = _recorded_verdict(session, row)
    if row.status != "frozen":
        return None, "not computed: the protocol is not frozen"
    from ..verdicts import compute_verdict

    computed = compute_verdict(session, row.protocol_id, record=False)
    if recorded is not None and recorded.get("inputs_sha256") == computed["inputs_sha256"]:
        computed["computed_at"] = recorded.get("computed_at")
        computed["log_head"] = recorded.get("log_head")  # the head it was recorded at
        return computed, f"matches the verdict recorded at {_when(recorded.get('computed_at'))}"
    if recorded is not None:
        return computed, (
            f"computed for this report: the inputs changed since the verdict recorded at "
            f"{_when(recorded.get('computed_at'))} ({recorded.get('verdict')}); "
            f"run `docket verdict {row.protocol_id}` to record it"
        )
    return computed, (
        f"computed for this report, not recorded yet (run `docket verdict {row.protocol_id}`)"
    )


def _receipt(session: Session, row: ProtocolRow) -> dict[str, Any] | None:
    """The frozen version's place in the Merkle log and whether its inclusion proof verifies
    against the current head (:func:`ledger.integrity.receipt.protocol_inclusion`); None for a
    version that is not frozen; ``{"problem": ...}`` when the freeze is not in the log."""
    if row.status != "frozen":
        return None
    from ..errors import IntegrityViolation
    from ..integrity.receipt import protocol_inclusion

    try:
        return protocol_inclusion(session, row.protocol_id, row.version)
    except IntegrityViolation as exc:
        return {"problem": str(exc)}


def _recorded_verdict(session: Session, row: ProtocolRow) -> dict[str, Any] | None:
    rec = session.scalars(
        select(VerdictRow)
        .where(VerdictRow.protocol_sha256 == row.sha256)
        .order_by(VerdictRow.id.desc())
        .limit(1)
    ).first()
    if rec is None:
        return None
    try:
        head = json.loads(rec.details_json).get("log_head")
    except (ValueError, AttributeError):
        head = None
    return {
        "verdict": rec.verdict,
        "inputs_sha256": rec.inputs_sha256,
        "computed_at": _iso(rec.computed_at),
        "log_head": head if isinstance(head, dict) else None,
    }


def _runs(session: Session, row: ProtocolRow) -> tuple[list[dict[str, Any]], int]:
    versions = {v.id: v.version for v in store.chain(session, row.protocol_id)}
    runs = list(
        session.scalars(
            select(RunRow).where(RunRow.protocol_pk.in_(list(versions))).order_by(RunRow.id)
        )
    )
    out = []
    for run in runs:
        out.append(
            {
                "id": run.id,
                "job": run.job,
                "kind": run.kind,
                "source": run.source,
                "status": run.status,
                "version": versions.get(run.protocol_pk),
                "current": run.protocol_pk == row.id,
                "hardware": run.hardware,
                "wall_s": run.wall_s,
                "cost_micros": int(run.cost_micros or 0),
                "finished_at": _iso(run.finished_at),
                "error": (run.error or "").strip().splitlines()[0] if run.error else None,
            }
        )
    ignored = sum(1 for r in out if not r["current"])
    return out, ignored


def _costs(session: Session, protocol_id: str) -> tuple[list[dict[str, Any]], int]:
    from ..billing.bill import bill

    the_bill = bill(session, "run", protocol_id=protocol_id)
    lines = [
        {
            "entry": g.key,
            "run_id": g.lines[0].run_id,
            "job": g.lines[0].job,
            "hardware": ", ".join(dict.fromkeys(line.hardware for line in g.lines)),
            "hardware_class": g.lines[0].hardware_class,
            "wall_s": sum(line.wall_s or 0.0 for line in g.lines)
            if any(line.wall_s is not None for line in g.lines)
            else None,
            "billed_s": sum(line.billed_s or 0 for line in g.lines)
            if any(line.billed_s is not None for line in g.lines)
            else None,
            "usd_micros": g.total_micros,
            "note": "; ".join(line.note for line in g.lines if line.note) or None,
        }
        for g in the_bill.groups
    ]
    return lines, the_bill.total_micros


def _journal(session: Session, row: ProtocolRow) -> list[dict[str, Any]]:
    from ..store.journal import corrections_index, list_entries, row_summary

    rows = list_entries(session, protocol_pk=row.id)
    index = corrections_index(session)
    return [row_summary(r, index.get(r.seq, ()), full=True) for r in rows]


def _when(value: Any) -> str:
    """An ISO timestamp (or datetime) as ``YYYY-MM-DD HH:MM UTC``; ``–`` for None."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


Samples = dict[str, tuple[list[str], dict[str, int | None], dict[str, dict[str, float]]]]


def _group_samples(session: Session, run_ids: Sequence[int], signals: Sequence[str]) -> Samples:
    """Per group: items, label per item, and per signal of ``signals`` the finite value per item,
    merged over ``run_ids`` by the store's one merge rule
    (:func:`docketml.ledger.store.results.load_payload`; only those signals are read)."""
    payload = load_payload(session, list(run_ids), signals)
    out: Samples = {}
    for (group, item, signal), (label, value) in payload.observations.items():
        items, labels, values = out.setdefault(group, ([], {}, {}))
        if item not in labels:
            items.append(item)
        labels[item] = label
        if np.isfinite(value):
            values.setdefault(signal, {})[item] = float(value)
    return out


def _best_named(rows: list[dict[str, Any]], key: str, score_key: str) -> list[str]:
    """The signal named in ``key`` of the row with the highest ``score_key`` (or [])."""
    scored = [r for r in rows if r.get(key) and _num(r.get(score_key)) is not None]
    if not scored:
        return []
    return [str(max(scored, key=lambda r: float(r[score_key]))[key])]


def _contest_items(samples: Samples, protocol: Protocol, group: str) -> list[tuple[str, str, int]]:
    """``(group, item, label)`` of one contest: for ``labels.source: regime`` the group's items
    are positives and the reference group's negatives; for ``judged`` each item's own label."""
    spec = protocol.labels
    assert spec is not None
    members = [(group, 1), (spec.reference or "", 0)] if spec.source == "regime" else [(group, -1)]
    keyed: list[tuple[str, str, int]] = []
    for g, fixed in members:
        items, labels, _ = samples.get(g, ([], {}, {}))
        for item in items:
            lab = fixed if fixed >= 0 else labels.get(item)
            if lab is not None and lab >= 0:
                keyed.append((g, item, int(lab)))
    return keyed


def _curve(
    samples: Samples, protocol: Protocol, keyed: list[tuple[str, str, int]], signal: str, role: str
) -> RocCurve | None:
    pairs = [(samples[g][2].get(signal, {}).get(item), lab) for g, item, lab in keyed]
    kept = [(v, lab) for v, lab in pairs if v is not None]
    ys = np.array([lab for _, lab in kept], dtype=int)
    if not kept or ys.all() or not ys.any():
        return None
    spec = protocol.signal_spec(signal)
    sign = -1.0 if spec is not None and spec.higher_means == "negative" else 1.0
    scores = sign * np.array([v for v, _ in kept])
    fpr, tpr, _ = roc_points(scores, ys)
    return RocCurve(signal, role, auroc(scores, ys), fpr.tolist(), tpr.tolist())


def _roc_groups(
    session: Session, protocol: Protocol, verdict: dict[str, Any] | None
) -> list[RocGroup]:
    """ROC curves of every ``regime_wins`` hypothesis, per contest group: the best candidate
    (highest AUROC among the verdict's rows of that group) against the best baseline the verdict
    names, from the observations of the runs the verdict says the rule read. Scores are oriented
    by each signal's declared polarity, as in the verdict."""
    out: list[RocGroup] = []
    vh = {h.get("id"): h for h in (verdict or {}).get("hypotheses", [])}
    spec = protocol.labels
    for hyp in protocol.hypotheses:
        rule = protocol.decision_rules.get(hyp.rule)
        if not isinstance(rule, RegimeWinsRule) or spec is None:
            continue
        hv = vh.get(hyp.id, {})
        run_ids = [int(r) for r in hv.get("runs", []) or []]
        wanted = [*rule.candidates, *protocol.baselines_for(rule)]
        samples = _group_samples(session, run_ids, wanted) if run_ids else {}
        rows_by_group: dict[str, list[dict[str, Any]]] = {}
        for grow in hv.get("groups", []) or []:
            rows_by_group.setdefault(str(grow.get("group")), []).append(grow)
        groups = list(protocol.groups) or sorted(samples)
        for group in groups:
            if spec.source == "regime" and group == spec.reference:
                continue
            keyed = _contest_items(samples, protocol, group)
            n_pos = sum(k[2] for k in keyed)
            rg = RocGroup(hyp.id, group, n_pos, len(keyed) - n_pos)
            out.append(rg)
            if not run_ids:
                rg.missing = "the verdict read no run for this rule"
                continue
            if rg.n_pos == 0 or rg.n_neg == 0:
                rg.missing = f"one class only ({rg.n_pos} positive, {rg.n_neg} negative)"
                continue
            named = rows_by_group.get(group, [])
            cand = _best_named(named, "candidate", "auroc") or list(rule.candidates)
            base = _best_named(named, "baseline", "baseline_auroc") or protocol.baselines_for(rule)
            for signal, role in ((cand[0], "candidate"), (base[0] if base else "", "baseline")):
                curve = _curve(samples, protocol, keyed, signal, role) if signal else None
                if curve is not None:
                    rg.curves.append(curve)
            if not rg.curves:
                rg.missing = "none of the rule's signals was recorded for this group"
    return out


def collect(session: Session, protocol_id: str) -> Report:
    """Read everything the report shows for ``protocol_id`` (see module docstring)."""
    row = _report_row(session, protocol_id)
    protocol = store.parse_row(row)
    verdict, source = _verdict(session, row)
    runs, ignored = _runs(session, row)
    costs, total = _costs(session, row.protocol_id)
    traj = None
    if row.status == "frozen":
        traj = trajectory(session, row.protocol_id)
    chain = [store.describe(session, v) for v in store.chain(session, row.protocol_id)]
    return Report(
        row=store.describe(session, row),
        protocol=protocol,
        yaml_text=row.yaml_text,
        chain=chain,
        sign_check=_sign_check(session, row),
        verdict=verdict,
        verdict_source=source,
        runs=runs,
        ignored_runs=ignored,
        costs=costs,
        cost_total_micros=total,
        journal=_journal(session, row),
        roc=_roc_groups(session, protocol, verdict),
        traj=traj,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        receipt=_receipt(session, row),
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


# Figure style, applied with ``rc_context`` (never mutating the process-wide rcParams).
# ``text.parse_math: False``: user strings (cost labels, metric names) are shown literally,
# a "$" never starts mathtext.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "text.parse_math": False,
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _needs_plots(fn: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """A figure function (first argument the :class:`FigureWriter`) that returns None when the
    writer is disabled (no ``plots`` extra), so the page keeps its tables and omits the figure."""

    @functools.wraps(fn)
    def wrapper(writer: FigureWriter, *args: Any, **kwargs: Any) -> Figure | None:
        return fn(writer, *args, **kwargs) if writer.enabled else None

    return wrapper


def _slug(*parts: str) -> str:
    text = "_".join(parts)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "figure"


@dataclass
class Figure:
    file: str  # relative to out_dir
    alt: str
    caption: str


class FigureWriter:
    """Saves matplotlib figures under ``out_dir/figures`` with unique, safe file names."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()
        self.used: set[str] = set()
        #: False without the plots extra: every figure function then returns None (no figure).
        self.enabled = has_extra("plots")

    def save(self, fig: Any, name: str, alt: str, caption: str) -> Figure:
        plt = _plt()
        stem = _slug(name)
        candidate, i = stem, 2
        while candidate in self.used:
            candidate, i = f"{stem}-{i}", i + 1
        self.used.add(candidate)
        rel = f"figures/{candidate}.png"
        fig.savefig(self.out_dir / rel, dpi=FIG_DPI, bbox_inches="tight")
        plt.close(fig)
        return Figure(rel, alt, caption)


@_needs_plots
def _roc_figure(writer: FigureWriter, rg: RocGroup) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.0, 3.9))
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9ca3af", linewidth=1, label="chance (0.5)")
    for curve in rg.curves:
        colour = CANDIDATE_COLOUR if curve.role == "candidate" else BASELINE_COLOUR
        ax.plot(  # straight segments: ties give the diagonal the AUROC's half credit
            curve.fpr,
            curve.tpr,
            color=colour,
            linewidth=2 if curve.role == "candidate" else 1.6,
            linestyle="-" if curve.role == "candidate" else "--",
            label=f"{curve.role}: {curve.signal} ({curve.auroc:.3f})",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{rg.hypothesis} · {rg.group}  (n+ {rg.n_pos}, n- {rg.n_neg})")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="lower right", title="signal (AUROC)", title_fontsize=8, fontsize=8)
    names = " vs ".join(c.signal for c in rg.curves)
    return writer.save(
        fig,
        f"roc_{rg.hypothesis}_{rg.group}",
        f"ROC curves for group {rg.group}: {names}",
        f"{rg.group}: {names}",
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@_needs_plots
def _forest_figure(
    writer: FigureWriter, hyp_id: str, rows: list[dict[str, Any]], margin: float | None
) -> Figure | None:
    pts = [
        r
        for r in rows
        if _num(r.get("delta")) is not None
        and _num(r.get("ci_low")) is not None
        and _num(r.get("ci_high")) is not None
    ]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(pts) + 1.6))
    ys = np.arange(len(pts))[::-1]
    for y, r in zip(ys, pts, strict=True):
        win = bool(r.get("win"))
        colour = WIN_COLOUR if win else LOSS_COLOUR
        lo, hi, d = _num(r["ci_low"]), _num(r["ci_high"]), _num(r["delta"])
        ax.plot([lo, hi], [y, y], color=colour, linewidth=2.2, solid_capstyle="butt")
        ax.plot([d], [y], marker="D" if win else "o", color=colour, markersize=7)
    ax.axvline(0.0, color="#111827", linewidth=1, label="no difference (0)")
    if margin is not None:
        ax.axvline(
            margin, color="#dc2626", linestyle="--", linewidth=1.3, label=f"margin {margin:+g}"
        )
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r.get('group')} · {r.get('candidate', '')}" for r in pts])
    ax.set_xlabel("AUROC delta: candidate − best baseline (95% CI)")
    ax.set_title(f"{hyp_id}: per-group delta against the margin")
    ax.plot([], [], marker="D", color=WIN_COLOUR, linestyle="-", label="win")
    ax.plot([], [], marker="o", color=LOSS_COLOUR, linestyle="-", label="no win")
    ax.grid(True, axis="x", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return writer.save(
        fig,
        f"forest_{hyp_id}",
        f"Forest plot of AUROC deltas with confidence intervals for {hyp_id}",
        "Each row: the delta of a candidate over the best baseline with its CI. A win needs the "
        "delta at or past the margin and a CI that excludes 0.",
    )


@_needs_plots
def _estimate_figure(writer: FigureWriter, hyp_id: str, h: dict[str, Any]) -> Figure | None:
    """For ``threshold`` (value vs bound) and ``non_inferiority`` (difference vs -margin)
    hypotheses: the point estimate and its CI against the pre-registered line."""
    kind = h.get("kind")
    lo, hi = _num(h.get("ci_low")), _num(h.get("ci_high"))
    if kind == "threshold":
        est, line = _num(h.get("value")), _num(h.get("bound"))
        what = (
            str(h.get("metric"))
            if h.get("statistic") == "metric"
            else f"{h.get('statistic')}({h.get('signal')})"
        )
        line_label = f"bound {h.get('op', '')} {line:g}" if line is not None else ""
    elif kind == "non_inferiority":
        est = _num(h.get("difference"))
        margin = _num(h.get("margin"))
        line = -margin if margin is not None else None
        what = f"{h.get('statistic')}({h.get('signal')}): {h.get('candidate_job')} − " + str(
            h.get("reference_job")
        )
        line_label = f"non-inferiority margin {line:g}" if line is not None else ""
    else:
        return None
    if est is None or line is None:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 1.9))
    colour = {"PROVEN": WIN_COLOUR, "PARTIAL": "#b45309", "DISPROVEN": "#b91c1c"}.get(
        str(h.get("verdict")), LOSS_COLOUR
    )
    if lo is not None and hi is not None:
        ax.plot([lo, hi], [0, 0], color=colour, linewidth=2.6, label="CI")
    ax.plot([est], [0], marker="D", color=colour, markersize=8, linestyle="", label=f"{est:.4g}")
    ax.axvline(line, color="#dc2626", linestyle="--", linewidth=1.3, label=line_label)
    if kind == "non_inferiority":
        ax.axvline(0.0, color="#111827", linewidth=1, label="no difference")
    ax.set_yticks([])
    ax.set_ylim(-1, 1)
    ax.set_xlabel(what)
    ax.set_title(f"{hyp_id}: estimate and CI against the pre-registered line")
    ax.grid(True, axis="x", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return writer.save(
        fig,
        f"estimate_{hyp_id}",
        f"Estimate and confidence interval for {hyp_id} against its line",
        "The point estimate with its CI; the dashed red line is the pre-registered bound "
        "(threshold) or the margin (non-inferiority).",
    )


@_needs_plots
def _cost_figure(writer: FigureWriter, costs: list[dict[str, Any]]) -> Figure | None:
    if not costs:
        return None
    plt = _plt()
    shown = costs[-40:]
    labels = [c["entry"] for c in shown]
    dollars = [c["usd_micros"] / 1_000_000 for c in shown]  # display only
    colours = ["#7c3aed" if c["hardware_class"] == "gpu" else "#0ea5e9" for c in shown]
    fig, ax = plt.subplots(figsize=(7.6, 0.34 * len(shown) + 1.5))
    ys = np.arange(len(shown))[::-1]
    ax.barh(ys, dollars, color=colours, height=0.65)
    for y, c, d in zip(ys, shown, dollars, strict=True):
        ax.text(d, y, " " + format_usd(c["usd_micros"]), va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_xlabel("cost (USD)")
    top = max(dollars) if dollars else 0.0
    ax.set_xlim(0, top * 1.25 if top > 0 else 1.0)
    title = "Cost per run and manual entry"
    if len(shown) < len(costs):
        title += f" (last {len(shown)} of {len(costs)})"
    ax.set_title(title)
    ax.bar([0], [0], color="#7c3aed", label="GPU")
    ax.bar([0], [0], color="#0ea5e9", label="CPU / other")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(True, axis="x", alpha=0.25)
    return writer.save(
        fig,
        "cost_per_run",
        "Bar chart of the cost of each run and manual cost entry",
        "Dollars per run (metered) and per manual entry; CPU runs are $0 unless configured.",
    )


@_needs_plots
def _trajectory_figure(writer: FigureWriter, traj: Trajectory, metric: str) -> Figure:
    plt = _plt()
    points: list[TrajectoryPoint] = traj.series[metric]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    steps = [p.step for p in points]
    values = [p.value for p in points]
    ax.plot(
        steps, values, marker="o", markersize=4, linewidth=1.8, color=CANDIDATE_COLOUR, label=metric
    )
    lows = [p.ci_low for p in points]
    highs = [p.ci_high for p in points]
    if points and all(v is not None for v in lows + highs):
        ax.fill_between(steps, lows, highs, color=CANDIDATE_COLOUR, alpha=0.15, label="CI")
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by checkpoint step")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="best", frameon=False)
    return writer.save(
        fig,
        f"trajectory_{metric}",
        f"Line chart of {metric} against checkpoint step",
        f"{metric}: {len(points)} checkpoint(s), steps {steps[0]}–{steps[-1]}",
    )


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def e(value: Any) -> str:
    """HTML-escape any value (None -> empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    num = _num(value)
    if num is None:
        return e(value) if value is not None else "–"
    return f"{num:.{digits}f}"


def badge(verdict: Any, big: bool = False) -> str:
    name = str(verdict or "NOT COMPUTED").upper()
    cls = name if name in VERDICTS else "NONE"
    return f'<span class="badge {cls}{" big" if big else ""}">{e(name)}</span>'


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table from already-escaped cell HTML (callers escape with :func:`e`)."""
    head = "".join(
        f'<th class="num">{e(h)}</th>' if i in numeric else f"<th>{e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    if not body:
        return NONE
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


class Images:
    """Turns a :class:`Figure` into an ``<img>``: relative file reference or data URI."""

    def __init__(self, out_dir: Path, embed: bool) -> None:
        self.out_dir, self.embed = out_dir, embed

    def src(self, fig: Figure) -> str:
        if self.embed:
            data = base64.b64encode((self.out_dir / fig.file).read_bytes()).decode("ascii")
            return f"data:image/png;base64,{data}"
        return quote(fig.file)

    def figure(self, fig: Figure | None, wide: bool = False) -> str:
        if fig is None:
            return ""
        cls = ' class="wide"' if wide else ""
        return (
            f'<figure{cls}><img src="{e(self.src(fig))}" alt="{e(fig.alt)}" loading="eager">'
            f"<figcaption>{e(fig.caption)}</figcaption></figure>"
        )


CSS = _asset("report.css")

# Records script errors and whether every image loaded, on <body data-*> (read by the browser
# test through --dump-dom; a broken image also gets a red outline for a human reader).
SCRIPT = _asset("report.js")

CSP = (
    "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def _hypothesis_rows(report: Report) -> dict[str, dict[str, Any]]:
    return {str(h.get("id")): h for h in (report.verdict or {}).get("hypotheses", []) or []}


def _hero(report: Report) -> str:
    r, p = report.row, report.protocol
    primary = p.primary_hypothesis()
    hv = _hypothesis_rows(report).get(primary, {})
    overall = (report.verdict or {}).get("verdict") if report.verdict else None
    shown = hv.get("verdict") or overall
    status = "frozen" if r["status"] == "frozen" else "registered (not frozen)"
    return f"""
<header class="hero"><div class="wrap hero-grid">
  <div>
    <div class="eyebrow">docket report · pre-registered protocol</div>
    <h1>{e(p.title)}</h1>
    <div class="meta">
      <span><b class="mono">{e(p.id)}</b></span>
      <span>version <b>{e(r["version"])}</b></span>
      <span>status <b>{e(status)}</b></span>
      <span>frozen <b>{e(_when(r["frozen_at"]))}</b></span>
    </div>
    <div class="sha mono">sha256 {e(r["sha256"])}</div>
  </div>
  <div class="hero-verdict">
    <div class="label">verdict · primary hypothesis {e(primary)}</div>
    {badge(shown, big=True)}
    <div class="sub">{e(report.verdict_source)}</div>
  </div>
</div></header>"""


def _summary(report: Report) -> str:
    p = report.protocol
    hv = _hypothesis_rows(report)
    cards = []
    for h in p.hypotheses:
        v = hv.get(h.id, {})
        verdict = v.get("verdict")
        cls = str(verdict).upper() if str(verdict).upper() in VERDICTS else "NONE"
        wins = ""
        if isinstance(v.get("wins"), int):
            n_groups = len({g.get("group") for g in v.get("groups", []) or []})
            wins = f'<span class="note"> · {v["wins"]} of {n_groups} groups won</span>'
        primary = '<span class="primary">primary</span>' if h.id == p.primary_hypothesis() else ""
        why = f'<p class="card-why">{e(v["why"])}</p>' if v.get("why") else ""
        cards.append(
            f'<div class="hcard {cls}"><span class="hid">{e(h.id)}</span>{badge(verdict)}'
            f"{primary}{wins}<p>{e(h.statement)}</p>{why}</div>"
        )
    succeeded = sum(1 for r in report.runs if r["status"] == "succeeded" and r["current"])
    current = sum(1 for r in report.runs if r["current"])
    sc = report.sign_check
    sc_text = "never run" if sc is None else ("passed" if sc["passed"] else "FAILED")
    stats = [
        (f"{succeeded} / {current}", "runs succeeded (this version)"),
        (format_usd(report.cost_total_micros), "total cost, all versions"),
        (sc_text, "sign-check"),
        (str(len(report.journal)), "journal entries"),
    ]
    stat_html = "".join(
        f'<div class="stat"><div class="v">{e(v)}</div><div class="k">{e(k)}</div></div>'
        for v, k in stats
    )
    return f'<div class="summary">{"".join(cards)}</div><div class="stats">{stat_html}</div>'


def _sign_check_html(report: Report) -> str:
    sc = report.sign_check
    if sc is None:
        return NONE
    rows, classes = [], []
    for c in sc.get("checks", []):
        ok = bool(c.get("passed"))
        rows.append(
            [
                f'<span class="pill {"ok" if ok else "bad"}">{"PASS" if ok else "FAIL"}</span>',
                e(c.get("check")),
                f'<span class="mono">{e(c.get("target"))}</span>',
                e(c.get("expected")),
                e(c.get("found")),
                e(c.get("cause") or ""),
            ]
        )
        classes.append("" if ok else "fail")
    head = (
        f'<p class="note">Ran {e(_when(sc.get("ran_at")))}: '
        f'<span class="pill {"ok" if sc["passed"] else "bad"}">'
        f"{'passed' if sc['passed'] else 'FAILED'}</span> · {len(rows)} check(s) · "
        f"bootstrap engine {e(sc.get('engine', 1))}</p>"
    )
    null_line = describe_null(sc.get("null_proven"))
    if null_line:
        head += f'<p class="note">{e(null_line)}</p>'
    return head + _table(
        ["", "check", "target", "expected", "found", "likely cause"], rows, row_classes=classes
    )


def _chain_html(report: Report) -> str:
    rows, classes = [], []
    for v in report.chain:
        sc = v.get("sign_check")
        sc_text = "never run" if sc is None else ("passed" if sc["passed"] else "failed")
        rows.append(
            [
                e(v["version"]),
                e(v["status"]),
                f'<span class="mono">{e(v["sha256"][:16])}…</span>',
                e(_when(v["registered_at"])),
                e(_when(v["frozen_at"])),
                e(sc_text),
                e(v["amendment_reason"] or ("original" if v["parent_version"] is None else "")),
            ]
        )
        classes.append("win" if v["version"] == report.row["version"] else "")
    table = _table(
        ["version", "status", "sha256", "registered", "frozen", "sign-check", "amendment reason"],
        rows,
        numeric=[0],
        row_classes=classes,
    )
    note = ""
    if len(report.chain) > 1:
        note = (
            f'<div class="warn">This protocol was amended: {len(report.chain)} versions. The '
            f"report uses version {e(report.row['version'])} (highlighted).</div>"
        )
    return note + table


def _receipt_html(report: Report) -> str:
    """The freeze's receipt: leaf index, tree size, root, whether the proof verifies, and how a
    reader checks it offline."""
    rc = report.receipt
    if rc is None:
        return '<p class="note">none: the protocol is not frozen, so it is not in the log.</p>'
    if "problem" in rc:
        return f'<div class="warn">{e(rc["problem"])}: run <code>docket audit</code>.</div>'
    ok = bool(rc["verifies"])
    pill = f'<span class="pill {"ok" if ok else "bad"}">{"verifies" if ok else "FAILS"}</span>'
    rows = [
        ["freeze leaf index", f'<span class="mono">{e(rc["leaf_index"])}</span>'],
        ["tree size (leaves)", f'<span class="mono">{e(rc["tree_size"])}</span>'],
        ["root hash", f'<span class="mono">{e(rc["root_hash"])}</span>'],
        ["inclusion proof", f"{pill} · {len(rc['inclusion_proof'])} hash(es), RFC 9162"],
        ["leaf", f'<span class="mono">{e(rc["leaf"])}</span>'],
    ]
    pid = e(rc["protocol_id"])
    how = (
        '<p class="note">How a reader checks it, offline: the ledger\'s owner runs '
        f"<code>docket log receipt {pid} --version {e(rc['version'])} --out receipt.json</code> "
        "(it signs the current head) and publishes the receipt and the public key "
        "(<code>docket log key</code>); the reader runs <code>docket verify receipt.json "
        "--protocol FILE.yaml --public-key KEY.pem</code>, which needs no ledger. A later "
        "rewrite shows up as <code>docket log consistency</code> / <code>docket audit "
        "--against</code> failing against a kept head.</p>"
    )
    head = (report.verdict or {}).get("log_head")
    at = ""
    if isinstance(head, dict):
        signed = "signed" if head.get("sth") else "unsigned"
        at = (
            f'<p class="note">The verdict was computed at log head size '
            f'<span class="mono">{e(head.get("tree_size"))}</span>, root '
            f'<span class="mono">{e(str(head.get("root_hash"))[:16])}…</span> ({signed}).</p>'
        )
    return _table(["", "value"], rows) + at + how


def _hypotheses_html(report: Report) -> str:
    p = report.protocol
    rows = []
    for h in p.hypotheses:
        rule = p.decision_rules.get(h.rule)
        rows.append(
            [
                f"<b>{e(h.id)}</b>",
                e(h.statement),
                f'<span class="mono">{e(h.rule)}</span>',
                e(getattr(rule, "kind", "?")),
            ]
        )
    return _table(["id", "statement", "rule", "kind"], rows)


def _signals_html(report: Report) -> str:
    p = report.protocol
    rows = [
        [
            f'<span class="mono">{e(name)}</span>',
            e(spec.role),
            e(f"high = {spec.higher_means}"),
            e(spec.description or ""),
        ]
        for name, spec in p.signals.items()
    ]
    return _table(["signal", "role", "polarity", "description"], rows)


def _rule_summary(rule: Any) -> str:
    if rule is None:
        return ""
    data = rule.model_dump(mode="json", exclude_none=True)
    keep = {k: v for k, v in data.items() if k not in ("verdicts", "ci", "kind")}
    parts = [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in keep.items()]
    return '<p class="note mono">' + e(" · ".join(parts)) + "</p>"


def _group_table(hv: dict[str, Any]) -> str:
    rows, classes = [], []
    for g in hv.get("groups", []) or []:
        win = g.get("win")
        ci = (
            f"[{_fmt(g.get('ci_low'))}, {_fmt(g.get('ci_high'))}]"
            if _num(g.get("ci_low")) is not None
            else "–"
        )
        mark = (
            '<span class="pill ok">win</span>'
            if win
            else ('<span class="pill muted">no</span>' if win is not None else "–")
        )
        rows.append(
            [
                e(g.get("group")),
                f'<span class="mono">{e(g.get("candidate"))}</span>',
                _fmt(g.get("auroc")),
                f'<span class="mono">{e(g.get("baseline"))}</span>',
                _fmt(g.get("baseline_auroc")),
                _fmt(g.get("delta")),
                ci,
                mark,
            ]
        )
        classes.append("win" if win else "")
    return _table(
        ["group", "candidate", "AUROC", "best baseline", "baseline AUROC", "delta", "CI", "win"],
        rows,
        numeric=[2, 4, 5, 6],
        row_classes=classes,
    )


def _scalar_table(hv: dict[str, Any]) -> str:
    """The numbers of a ``threshold`` / ``non_inferiority`` result."""
    kind = hv.get("kind")
    ci = (
        f"[{_fmt(hv.get('ci_low'), 4)}, {_fmt(hv.get('ci_high'), 4)}]"
        if _num(hv.get("ci_low")) is not None and _num(hv.get("ci_high")) is not None
        else "–"
    )
    rows: list[list[str]] = []
    if kind == "threshold":
        what = (
            hv.get("metric")
            if hv.get("statistic") == "metric"
            else f"{hv.get('statistic')}({hv.get('signal')})"
        )
        rows = [
            ["statistic", f'<span class="mono">{e(what)}</span>'],
            ["estimate", _fmt(hv.get("value"), 4)],
            ["CI", ci + (" (shown, not used)" if hv.get("decide") == "observed" else "")],
            ["pre-registered bound", e(f"{hv.get('op', '')} {hv.get('bound')}")],
        ]
        if hv.get("decide") is not None:
            how = {"observed": "on the observed value", "ci": "on the CI"}[hv["decide"]]
            rows.append(["decided", e(how)])
        for key in ("n", "n_pos", "n_neg"):
            if hv.get(key) is not None:
                rows.append([e(key), e(hv[key])])
    elif kind == "non_inferiority":
        rows = [
            [
                "statistic",
                f'<span class="mono">{e(hv.get("statistic"))}({e(hv.get("signal"))})</span>',
            ],
            [f"candidate ({e(hv.get('candidate_job'))})", _fmt(hv.get("candidate_value"), 4)],
            [f"reference ({e(hv.get('reference_job'))})", _fmt(hv.get("reference_value"), 4)],
            ["difference", _fmt(hv.get("difference"), 4)],
            ["CI", ci],
            ["margin", e(hv.get("margin"))],
            ["paired", e(hv.get("paired"))],
        ]
    elif kind in ("all_of", "any_of"):
        rows = [[e(kind), e(", ".join(map(str, hv.get("of", []) or [])))]]
    info = hv.get("ci")
    if isinstance(info, dict) and info:
        rows.append(["CI method", e(", ".join(f"{k} {v}" for k, v in info.items()))])
    if hv.get("runs"):
        rows.append(["runs read", e(", ".join(f"#{r}" for r in hv["runs"]))])
    return _table(["quantity", "value"], rows, numeric=[1])


def _pooled_table(hv: dict[str, Any]) -> str:
    rows = []
    for p in hv.get("pooled", []) or []:
        ci = p.get("delong_ci95")
        rows.append(
            [
                f'<span class="mono">{e(p.get("signal"))}</span>',
                e(p.get("role", "")),
                _fmt(p.get("auroc")),
                f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else "–",
                e(p.get("missing") or ""),
            ]
        )
    return _table(["signal", "role", "AUROC", "DeLong 95% CI", "missing"], rows, numeric=[2, 3])


def _notes(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, dict):
        return [str(value["note"])] if value.get("note") else []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _results_html(report: Report, writer: FigureWriter, images: Images) -> str:
    p = report.protocol
    out: list[str] = []
    v = report.verdict
    if v is None:
        out.append(
            f'<div class="warn">No verdict: {e(report.verdict_source)}. Freeze the protocol '
            f"(<code>docket protocol freeze {e(p.id)}</code>), run it, then "
            f"<code>docket verdict {e(p.id)}</code>.</div>"
        )
    else:
        out.append(
            f'<p class="note">Primary hypothesis {e(v.get("primary") or p.primary_hypothesis())}'
            f" {badge(v.get('verdict'))} · {e(report.verdict_source)} · inputs sha256 "
            f'<span class="mono">{e(str(v.get("inputs_sha256") or "–")[:16])}</span></p>'
        )
        amend = v.get("amendments") or {}
        if isinstance(amend, dict) and amend.get("exist"):
            out.append(f'<div class="warn">{e(amend.get("note"))}</div>')
        ignored = v.get("ignored_runs") or {}
        if isinstance(ignored, dict) and ignored.get("count"):
            out.append(f'<p class="note">{e(ignored.get("note"))}</p>')
        for note in v.get("reruns") or []:  # runs beyond what the protocol declared
            out.append(f'<div class="warn rerun">{e(note)}</div>')
    hv_all = _hypothesis_rows(report)
    roc_by_h: dict[str, list[RocGroup]] = {}
    for rg in report.roc:
        roc_by_h.setdefault(rg.hypothesis, []).append(rg)
    for h in p.hypotheses:
        rule = p.decision_rules.get(h.rule)
        hv = hv_all.get(h.id, {})
        wins = ""
        if isinstance(hv.get("wins"), int) and hv.get("contests"):
            wins = (
                f'<span class="note">{e(hv["wins"])} of {len(hv["contests"])} group(s) won</span>'
            )
        out.append(
            f'<h3 id="h-{e(_slug(h.id))}">{e(h.id)} {badge(hv.get("verdict"))} '
            f'<span class="note mono">{e(h.rule)} ({e(getattr(rule, "kind", "?"))})</span>'
            f"{wins}</h3>"
        )
        out.append(f'<p class="statement">{e(h.statement)}</p>')
        if hv.get("why"):
            out.append(f'<p class="why"><b>Why:</b> {e(hv["why"])}</p>')
        out.append(_rule_summary(rule))
        missing = _notes(hv.get("missing"))
        if missing:
            items = "".join(f"<li>{e(m)}</li>" for m in missing)
            out.append(f'<div class="warn"><b>Missing data</b><ul>{items}</ul></div>')
        if isinstance(rule, RegimeWinsRule):
            out.append("<h4>Per-group comparison</h4>")
            out.append(_group_table(hv) if hv else NONE)
            out.append("<h4>Forest plot: delta and CI against the margin</h4>")
            fig = _forest_figure(writer, h.id, hv.get("groups", []) or [], rule.margin)
            out.append(images.figure(fig, wide=True) if fig else NONE)
            out.append("<h4>ROC curves: best candidate vs best baseline, per group</h4>")
            figs, absent = [], []
            for rg in roc_by_h.get(h.id, []):
                if rg.curves:
                    figs.append(images.figure(_roc_figure(writer, rg)))
                else:
                    absent.append(f"{rg.group}: {rg.missing}")
            out.append(f'<div class="grid">{"".join(figs)}</div>' if figs else NONE)
            if absent:
                out.append('<p class="note">No curve for ' + e("; ".join(absent)) + "</p>")
            out.append("<h4>Pooled across groups (informational)</h4>")
            out.append(_pooled_table(hv))
        else:
            out.append(_scalar_table(hv) if hv else NONE)
            fig = _estimate_figure(writer, h.id, hv) if hv else None
            if fig is not None:
                out.append(images.figure(fig, wide=True))
    return "".join(out)


def _trajectory_html(report: Report, writer: FigureWriter, images: Images) -> str:
    traj = report.traj
    if traj is None or not traj.series:
        return NONE
    figs = [images.figure(_trajectory_figure(writer, traj, m)) for m in traj.metrics]
    table_rows = [
        [e(row["step"])] + [_fmt(row[m], 4) for m in traj.metrics] for row in traj.table()
    ]
    table = _table(["step", *traj.metrics], table_rows, numeric=list(range(len(traj.metrics) + 1)))
    return (
        f'<div class="grid">{"".join(figs)}</div>'
        f"<details><summary>Table: {len(traj.steps)} step(s) × {len(traj.metrics)} metric(s)"
        f"</summary>{table}</details>"
    )


def _status_class(status: str) -> str:
    if status == "succeeded":
        return "ok"
    return "bad" if status in ("failed", "abandoned", "silent_noop") else "muted"


def _runs_costs_html(report: Report, writer: FigureWriter, images: Images) -> str:
    out = ["<h4>Runs</h4>"]
    rows, classes = [], []
    for r in report.runs:
        rows.append(
            [
                e(r["id"]),
                e(r["job"]),
                e(r["kind"]),
                f'<span class="pill {_status_class(r["status"])}">{e(r["status"])}</span>',
                e(r["version"]),
                e(r["hardware"]),
                _fmt(r["wall_s"], 1),
                e(format_usd(r["cost_micros"])),
                e(_when(r["finished_at"])),
                e(r["error"] or ""),
            ]
        )
        classes.append("" if r["current"] else "muted")
    out.append(
        _table(
            [
                "run",
                "job",
                "kind",
                "status",
                "version",
                "hardware",
                "wall s",
                "cost",
                "finished",
                "note",
            ],
            rows,
            numeric=[0, 4, 6, 7],
            row_classes=classes,
        )
    )
    if report.ignored_runs:
        out.append(
            f'<p class="note">{report.ignored_runs} run(s) bound to other versions (greyed) '
            "are not used by this version's verdict.</p>"
        )
    out.append("<h4>Cost per run</h4>")
    crows = [
        [
            e(c["entry"]),
            e(c["hardware"]),
            _fmt(c["wall_s"], 1),
            e(c["billed_s"] if c["billed_s"] is not None else "–"),
            e(format_usd(c["usd_micros"], precise=c["usd_micros"] % 10_000 != 0)),
            e(c["note"] or ""),
        ]
        for c in report.costs
    ]
    if crows:
        crows.append(
            ["<b>total</b>", "", "", "", f"<b>{e(format_usd(report.cost_total_micros))}</b>", ""]
        )
    out.append(
        _table(
            ["entry", "hardware", "wall s", "billed s", "cost", "note"], crows, numeric=[2, 3, 4]
        )
    )
    fig = _cost_figure(writer, report.costs)
    if fig is not None:
        out.append(images.figure(fig, wide=True))
    return "".join(out)


def _journal_html(report: Report) -> str:
    if not report.journal:
        return NONE
    out = []
    for j in report.journal:
        entry = j.get("entry", {})
        links = []
        if j.get("corrects_seq") or j.get("corrects"):
            links.append(f"corrects #{e(j.get('corrects_seq') or j.get('corrects'))}")
        if j.get("corrected_by"):
            links.append("corrected by " + ", ".join(f"#{e(s)}" for s in j["corrected_by"]))
        tag = f" · tag {e(j['tag'])}" if j.get("tag") else ""
        parts = [
            f'<div class="entry"><div class="head"><span class="title">#{e(j["seq"])} '
            f"{e(j.get('title') or '')}</span>"
            f'<span class="when">{e(j.get("date"))}{tag}'
            f"{' · ' + ' · '.join(links) if links else ''}</span></div>"
        ]
        if entry.get("context"):
            parts.append(f"<p><b>Context.</b> {e(entry['context'])}</p>")
        if entry.get("hypothesis"):
            parts.append(f"<p><b>Hypothesis.</b> {e(entry['hypothesis'])}</p>")
        if entry.get("observations"):
            items = "".join(f"<li>{e(o)}</li>" for o in entry["observations"])
            parts.append(f"<b>Observations</b><ul>{items}</ul>")
        if entry.get("inferences"):
            items = "".join(
                f'<li>{e(i["text"])} <span class="note">credence {i["credence"]:.2f}</span>'
                f'<span class="cred"><span style="width:{100 * float(i["credence"]):.0f}%">'
                f"</span></span>{' — ' + e(i['reason']) if i.get('reason') else ''}</li>"
                for i in entry["inferences"]
            )
            parts.append(f"<b>Inferences</b><ul>{items}</ul>")
        if entry.get("failure_modes"):
            items = "".join(
                f"<li>{'<b>' + e(f['label']) + ':</b> ' if f.get('label') else ''}{e(f['text'])} "
                f'<span class="note">prior {float(f["prior"]):.2f}</span>'
                f"{' — check: ' + e(f['check']) if f.get('check') else ''}</li>"
                for f in entry["failure_modes"]
            )
            parts.append(f"<b>Failure modes considered</b><ul>{items}</ul>")
        if entry.get("next_action"):
            parts.append(f"<p><b>Next action.</b> {e(entry['next_action'])}</p>")
        if entry.get("notes"):
            parts.append(f"<p><b>Notes.</b> {e(entry['notes'])}</p>")
        parts.append(f'<div class="note mono">hash {e(str(j.get("hash"))[:16])}…</div></div>')
        out.append("".join(parts))
    return "".join(out)


def render(report: Report, writer: FigureWriter, images: Images) -> str:
    """The page's HTML (figures are written through ``writer`` as a side effect)."""
    p = report.protocol
    sections = [
        (
            "preregistration",
            "Pre-registration",
            "What was committed before any number came in: the hypotheses, the sign-check that "
            "allowed the freeze, the amendment chain and the exact YAML whose sha256 is above.",
            "<h4>Hypotheses</h4>"
            + _hypotheses_html(report)
            + "<h4>Signals and their declared polarity</h4>"
            + _signals_html(report)
            + "<h4>Sign-check</h4>"
            + _sign_check_html(report)
            + "<h4>Amendment chain</h4>"
            + _chain_html(report)
            + "<h4>Transparency log receipt</h4>"
            + _receipt_html(report)
            + f"<details><summary>Protocol YAML (version {e(report.row['version'])}, as stored)"
            f"</summary><pre>{e(report.yaml_text)}</pre></details>",
        ),
        (
            "results",
            "Results",
            "Each hypothesis decided by its pre-registered rule, from the succeeded runs bound to "
            "this version.",
            _results_html(report, writer, images),
        ),
        (
            "trajectory",
            "Checkpoint trajectories",
            "Metrics recorded per training checkpoint (metrics with a step).",
            _trajectory_html(report, writer, images),
        ),
        (
            "cost",
            "Runs and cost",
            "Every run of every version of this protocol, and what it cost (metered runs and "
            "manual entries).",
            _runs_costs_html(report, writer, images),
        ),
        (
            "journal",
            "Journal",
            "Entries linked to this protocol (append-only, hash-chained).",
            _journal_html(report),
        ),
    ]
    toc = "".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title, _, _ in sections)
    body = "".join(
        f'<section class="card" id="{sid}"><h2>{e(title)}</h2><p class="lede">{e(lede)}</p>'
        f"{content}</section>"
        for sid, title, lede, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">
<title>{e(p.id)} v{e(report.row["version"])} · docket report</title>
<style>{CSS}</style>
<script>{SCRIPT}</script>
</head>
<body>
{_hero(report)}
<nav class="toc"><div class="wrap">{toc}</div></nav>
<main><div class="wrap">
{_summary(report)}
{body}
</div></main>
<footer><div class="wrap">Generated by docket at {e(_when(report.generated_at))} from the ledger.
{FIGURES_NOTE if has_extra("plots") else NO_FIGURES_NOTE}</div></footer>
</body>
</html>
"""


def build_report(
    ledger: Ledger, protocol_id: str, out_dir: Path | str, *, embed_images: bool = False
) -> Path:
    """Write the report of ``protocol_id`` to ``out_dir`` and return the path of index.html.

    Raises :class:`~ledger.errors.UserError` for an unknown protocol. See the module docstring
    for what the page contains."""
    out = Path(out_dir)
    with ledger.read_session() as session:
        report = collect(session, protocol_id)
    out.mkdir(parents=True, exist_ok=True)  # only once the protocol is known
    writer = FigureWriter(out)
    images = Images(out, embed_images)
    style = _plt().rc_context(STYLE) if writer.enabled else contextlib.nullcontext()
    with style:
        page = render(report, writer, images)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
