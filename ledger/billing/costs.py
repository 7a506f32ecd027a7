"""The cost ledger: metered runs and manual entries, append-only and hash-chained.

Rows are linked by the one hash chain of :mod:`docketml.journal.chain` (``entry_hash``,
``GENESIS``, ``verify_chain``) over ``canonical`` = the sorted-key JSON of (seq, run_id,
protocol_pk, hardware, wall_s, billed_s, rate_micros_per_hour, usd_micros, label, note, at).
Money is integer micro-dollars.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ...journal.chain import GENESIS, ChainRow, entry_hash, verify_chain
from ..store import merkle_log
from ..store.chainlock import lock_chain
from ..store.models import CostRow, RunRow, utcnow
from .hardware import (
    Hardware,
    HardwareCatalog,
    UnknownHardwareError,
    billed_seconds,
    cost_micros,
    load_catalog,
)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cost_canonical(row: CostRow) -> str:
    """Canonical JSON of a cost row's content (what its hash covers)."""
    return json.dumps(
        {
            "seq": row.seq,
            "at": _iso(row.at),
            "run_id": row.run_id,
            "protocol_pk": row.protocol_pk,
            "hardware": row.hardware,
            "wall_s": None if row.wall_s is None else repr(float(row.wall_s)),
            "billed_s": row.billed_s,
            "rate_micros_per_hour": row.rate_micros_per_hour,
            "usd_micros": row.usd_micros,
            "label": row.label,
            "note": row.note,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def rate_micros_per_hour(hw: Hardware) -> int:
    return int((hw.usd_per_hour * Decimal(1_000_000)).to_integral_value())


def append_cost(
    session: Session,
    *,
    hardware: str,
    usd_micros: int,
    run_id: int | None = None,
    protocol_pk: int | None = None,
    wall_s: float | None = None,
    billed_s: int | None = None,
    rate_micros: int = 0,
    label: str | None = None,
    note: str | None = None,
) -> CostRow:
    """Append one cost row to the chain (in the caller's transaction)."""
    if not isinstance(usd_micros, int) or isinstance(usd_micros, bool):
        raise TypeError("usd_micros must be an int (micro-dollars)")
    lock_chain(session, "costs")
    last = session.scalars(select(CostRow).order_by(CostRow.seq.desc()).limit(1)).first()
    seq = (last.seq + 1) if last else 1
    prev = last.hash if last else GENESIS
    at = utcnow()  # microsecond precision survives both backends' round trip
    row = CostRow(
        seq=seq,
        at=at,
        run_id=run_id,
        protocol_pk=protocol_pk,
        hardware=hardware,
        wall_s=wall_s,
        billed_s=billed_s,
        rate_micros_per_hour=rate_micros,
        usd_micros=usd_micros,
        label=label,
        note=note,
        prev_hash=prev,
        hash="",
    )
    row.hash = entry_hash(prev, cost_canonical(row))
    session.add(row)
    session.flush()
    merkle_log.queue_leaf(session, "cost", row.id, merkle_log.chain_leaf("cost", row))
    return row


def meter_run(
    session: Session,
    *,
    hw: Hardware,
    wall_s: float,
    run_id: int,
    protocol_pk: int,
    label: str | None = None,
    note: str | None = None,
) -> CostRow:
    """Record the metered cost of a run: billed seconds and dollars from the hardware catalog."""
    return append_cost(
        session,
        hardware=hw.name,
        usd_micros=cost_micros(hw, wall_s),
        run_id=run_id,
        protocol_pk=protocol_pk,
        wall_s=float(wall_s),
        billed_s=billed_seconds(hw, wall_s),
        rate_micros=rate_micros_per_hour(hw),
        label=label,
        note=note,
    )


def settle_run_cost(session: Session, run_id: int) -> int:
    """Set ``runs.cost_micros`` of ``run_id`` to the sum of its cost rows and return it (in the
    caller's transaction): the one rule that keeps a run's cost equal to what the cost chain
    holds for it after a cost is attached later (``docket cost add --run``, ``docket ingest``)."""
    total = int(
        session.scalar(
            select(func.coalesce(func.sum(CostRow.usd_micros), 0)).where(CostRow.run_id == run_id)
        )
        or 0
    )
    session.execute(update(RunRow).where(RunRow.id == run_id).values(cost_micros=total))
    return total


def record_abandoned_costs(
    session: Session, runs: Sequence[RunRow], catalog: HardwareCatalog | None = None
) -> list[CostRow]:
    """Keep the cost of runs just marked ``abandoned`` (in the caller's transaction).

    Each run is metered like a finished run over ``run.wall_s`` (started_at to its last
    heartbeat, set by :func:`ledger.runs.reap_abandoned`: a lower bound of what it ran) at the
    catalog rate of its hardware, with a note saying so; ``runs.cost_micros`` is set to match. A
    run that already has a cost row is skipped (idempotent). Hardware unknown to this machine's
    catalog is recorded at $0 with a note naming it, so the seconds are never lost.
    """
    written: list[CostRow] = []
    if not runs:
        return written
    catalog = catalog if catalog is not None else load_catalog()
    for run in runs:
        already = session.scalar(select(CostRow.id).where(CostRow.run_id == run.id).limit(1))
        if already is not None:
            continue
        wall = float(run.wall_s or 0.0)
        note = "abandoned (lease expired): metered from start to the last heartbeat"
        try:
            hw = catalog[run.hardware]
        except UnknownHardwareError:
            row = append_cost(
                session,
                hardware=run.hardware,
                usd_micros=0,
                run_id=run.id,
                protocol_pk=run.protocol_pk,
                wall_s=wall,
                label=run.job,
                note=f"{note}; hardware {run.hardware!r} is not in this catalog: $0 recorded",
            )
        else:
            row = meter_run(
                session,
                hw=hw,
                wall_s=wall,
                run_id=run.id,
                protocol_pk=run.protocol_pk,
                label=run.job,
                note=note,
            )
        session.execute(
            update(RunRow).where(RunRow.id == run.id).values(cost_micros=row.usd_micros)
        )
        written.append(row)
    return written


def record_late_finish_cost(
    session: Session, *, hw: Hardware, run: RunRow, wall_s: float
) -> tuple[CostRow | None, int]:
    """Cost of a run that finished after it was reaped as abandoned (its process was alive but
    missed its heartbeats): append the remainder so that the run's cost rows add up to
    ``cost_micros(hw, wall_s)``. Returns (the row or None when nothing remains, the run's total
    cost in micro-dollars); ``runs.cost_micros`` is set to the total."""
    spent = int(
        session.scalar(
            select(func.coalesce(func.sum(CostRow.usd_micros), 0)).where(CostRow.run_id == run.id)
        )
        or 0
    )
    billed = int(
        session.scalar(
            select(func.coalesce(func.sum(CostRow.billed_s), 0)).where(CostRow.run_id == run.id)
        )
        or 0
    )
    total = cost_micros(hw, wall_s)
    if total <= spent:
        return None, spent
    row = append_cost(
        session,
        hardware=hw.name,
        usd_micros=total - spent,
        run_id=run.id,
        protocol_pk=run.protocol_pk,
        wall_s=float(wall_s),
        billed_s=max(0, billed_seconds(hw, wall_s) - billed),
        rate_micros=rate_micros_per_hour(hw),
        label=run.job,
        note="finished after its lease expired (abandoned): remainder of its cost",
    )
    session.execute(update(RunRow).where(RunRow.id == run.id).values(cost_micros=total))
    return row, total


def verify_cost_chain(rows: list[CostRow]) -> list[dict[str, Any]]:
    """Problems in the cost chain (rows in seq order), found by ``journal.chain.verify_chain``."""
    chain = [ChainRow(r.seq, cost_canonical(r), r.prev_hash, r.hash) for r in rows]
    problems = []
    for p in verify_chain(chain):
        if p.field == "hash":
            text = f"content changed: stored hash {p.actual[:12]}, recomputed {p.expected[:12]}"
        elif p.field == "prev_hash":
            text = f"prev_hash {p.actual[:12]} != hash of previous row {p.expected[:12]}"
        else:
            text = f"seq {p.actual} follows {int(p.expected) - 1}: a row is missing or reordered"
        problems.append({"table": "costs", "row": p.seq, "problem": text})
    return problems
