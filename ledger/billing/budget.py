"""Budget enforcement: before a job starts, spent + estimate must stay within ``budget.usd``.

spent = every cost row of every version of the protocol (runs and manual entries).
estimate = cost_micros(hardware, seconds) where seconds is the job's declared
``estimate_seconds``, else the median wall time of earlier runs of that job (any version), else 0
(a job never run before with no estimate is only bounded by what was already spent).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docketml.protocols.schema import JobSpec, Protocol

from ..errors import UserError
from ..store.models import CostRow, ProtocolRow, RunRow
from .hardware import Hardware, cost_micros
from .money import format_usd, usd_to_micros


@dataclass(frozen=True)
class BudgetCheck:
    budget_micros: int | None
    spent_micros: int
    estimate_micros: int
    estimate_seconds: float
    estimate_source: str
    ok: bool

    def message(self, job: str) -> str:
        assert self.budget_micros is not None
        return (
            f"budget exceeded for job {job!r}: spent {format_usd(self.spent_micros)} + estimate "
            f"{format_usd(self.estimate_micros)} "
            f"({self.estimate_seconds:.0f} s, {self.estimate_source}) = "
            f"{format_usd(self.spent_micros + self.estimate_micros)} > "
            f"budget {format_usd(self.budget_micros)}; "
            'rerun with --allow-over-budget --reason "..." to proceed (a journal entry records it)'
        )


def protocol_pks(session: Session, protocol_id: str) -> list[int]:
    return list(
        session.scalars(select(ProtocolRow.id).where(ProtocolRow.protocol_id == protocol_id))
    )


def spent_micros(session: Session, protocol_id: str) -> int:
    pks = protocol_pks(session, protocol_id)
    if not pks:
        return 0
    return int(
        session.scalar(
            select(func.coalesce(func.sum(CostRow.usd_micros), 0)).where(
                CostRow.protocol_pk.in_(pks)
            )
        )
        or 0
    )


def estimate_seconds(session: Session, protocol_id: str, job: JobSpec) -> tuple[float, str]:
    if job.estimate_seconds is not None:
        return float(job.estimate_seconds), "declared estimate"
    pks = protocol_pks(session, protocol_id)
    walls = [
        w
        for w in session.scalars(
            select(RunRow.wall_s).where(
                RunRow.protocol_pk.in_(pks), RunRow.job == job.name, RunRow.wall_s.is_not(None)
            )
        )
    ]
    if walls:
        return float(statistics.median(walls)), f"median of {len(walls)} earlier run(s)"
    return 0.0, "no estimate and no earlier runs"


def check_budget(
    session: Session, protocol_id: str, protocol: Protocol, job: JobSpec, hw: Hardware
) -> BudgetCheck:
    spent = spent_micros(session, protocol_id)
    seconds, source = estimate_seconds(session, protocol_id, job)
    try:
        estimate = cost_micros(hw, seconds) if seconds > 0 else 0
    except ValueError as exc:  # past the billing bounds (hardware.MAX_WALL_S, money.MAX_MICROS)
        raise UserError(
            f"protocol {protocol_id}: job {job.name!r}: estimate_seconds ({source}): {exc}"
        ) from None
    if protocol.budget is None:
        return BudgetCheck(None, spent, estimate, seconds, source, True)
    try:
        budget = usd_to_micros(protocol.budget.usd)
    except ValueError as exc:
        raise UserError(f"protocol {protocol_id}: budget.usd: {exc}") from None
    return BudgetCheck(budget, spent, estimate, seconds, source, spent + estimate <= budget)
