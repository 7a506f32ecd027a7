"""The rows of one protocol (every version) as flat tables for pandas, R or a spreadsheet.

Tables and columns (documented in docs/export.md; one file per table):

* ``runs``: id, protocol_version, protocol_sha256, job, kind, source, status, seed, hardware,
  started_at, finished_at (ISO 8601 UTC), wall_s, cost_micros, checkpoint_sha256, error.
* ``observations``: run_id, job, group, item, label (1, 0 or empty), signal, value.
* ``metrics``: run_id, job, name, step (empty = final), value, ci_low, ci_high, effective
  (true for the row that counts under the store's one rule, :mod:`.results`).
* ``verdicts``: id, protocol_version, protocol_sha256, computed_at, verdict, inputs_sha256,
  run_ids (JSON list), details (JSON).

Values are written exactly: floats with ``repr`` in CSV (shortest round-trip form), float64 in
Parquet. Only reads.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import protocols as store
from .models import MetricRow, ObservationRow, RunRow, VerdictRow
from .results import effective_metrics

__all__ = ["FORMATS", "TABLES", "collect_tables", "write_tables"]

TABLES: dict[str, tuple[str, ...]] = {
    "runs": (
        "id", "protocol_version", "protocol_sha256", "job", "kind", "source", "status", "seed",
        "hardware", "started_at", "finished_at", "wall_s", "cost_micros", "checkpoint_sha256",
        "error",
    ),
    "observations": ("run_id", "job", "group", "item", "label", "signal", "value"),
    "metrics": ("run_id", "job", "name", "step", "value", "ci_low", "ci_high", "effective"),
    "verdicts": (
        "id", "protocol_version", "protocol_sha256", "computed_at", "verdict", "inputs_sha256",
        "run_ids", "details",
    ),
}  # fmt: skip
FORMATS = ("csv", "parquet")


def _iso(at: Any) -> str | None:
    return at.isoformat() if at is not None else None


def collect_tables(session: Session, protocol_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every table of ``protocol_id`` (all versions) as lists of row dicts, ordered by id."""
    versions = {row.id: row.version for row in store.chain(session, protocol_id)}
    if not versions:
        store.latest(session, protocol_id)  # raises the unknown-protocol error naming known ids
    runs = list(
        session.scalars(select(RunRow).where(RunRow.protocol_pk.in_(versions)).order_by(RunRow.id))
    )
    job_of = {r.id: r.job for r in runs}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for r in runs:
        out["runs"].append(
            {
                "id": r.id, "protocol_version": versions[r.protocol_pk],
                "protocol_sha256": r.protocol_sha256, "job": r.job, "kind": r.kind,
                "source": r.source, "status": r.status, "seed": r.seed, "hardware": r.hardware,
                "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
                "wall_s": r.wall_s, "cost_micros": r.cost_micros,
                "checkpoint_sha256": r.checkpoint_sha256, "error": r.error,
            }
        )  # fmt: skip
    run_ids = list(job_of)
    obs = session.execute(
        select(
            ObservationRow.run_id, ObservationRow.group, ObservationRow.item,
            ObservationRow.label, ObservationRow.signal, ObservationRow.value,
        )
        .where(ObservationRow.run_id.in_(run_ids))
        .order_by(ObservationRow.id)
    )  # fmt: skip
    for run_id, group, item, label, signal, value in obs:
        out["observations"].append(
            {"run_id": run_id, "job": job_of[run_id], "group": group, "item": item,
             "label": label, "signal": signal, "value": value}
        )  # fmt: skip
    metric_rows = list(
        session.scalars(
            select(MetricRow).where(MetricRow.run_id.in_(run_ids)).order_by(MetricRow.id)
        )
    )
    counted: set[int] = set()
    for run_id in run_ids:
        mine = [m for m in metric_rows if m.run_id == run_id]
        counted.update(m.id for m in effective_metrics(mine).values())
    for m in metric_rows:
        out["metrics"].append(
            {"run_id": m.run_id, "job": job_of[m.run_id], "name": m.name, "step": m.step,
             "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
             "effective": m.id in counted}
        )  # fmt: skip
    verdicts = session.scalars(
        select(VerdictRow).where(VerdictRow.protocol_pk.in_(versions)).order_by(VerdictRow.id)
    )
    for v in verdicts:
        out["verdicts"].append(
            {"id": v.id, "protocol_version": versions[v.protocol_pk],
             "protocol_sha256": v.protocol_sha256, "computed_at": _iso(v.computed_at),
             "verdict": v.verdict, "inputs_sha256": v.inputs_sha256,
             "run_ids": v.run_ids_json, "details": v.details_json}
        )  # fmt: skip
    return out


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_tables(
    tables: dict[str, list[dict[str, Any]]], out_dir: Path, fmt: str
) -> dict[str, dict[str, Any]]:
    """Write one file per table into ``out_dir``; return ``{table: {"path", "rows"}}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Any]] = {}
    for name, columns in TABLES.items():
        rows = tables[name]
        path = out_dir / f"{name}.{fmt}"
        if fmt == "csv":
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows([_csv_cell(row[c]) for c in columns] for row in rows)
        else:
            _write_parquet(path, columns, rows)
        written[name] = {"path": str(path), "rows": len(rows)}
    (out_dir / "manifest.json").write_text(
        json.dumps({"format": fmt, "tables": written}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    return written


def _write_parquet(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    from docketml.extras import require_extra

    require_extra("parquet", "--format parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [row[c] for row in rows] for c in columns})
    pq.write_table(table, path)
