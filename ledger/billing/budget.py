"""Budget enforcement: before a job starts, spent + reserved + estimate must stay within
``budget.usd``.

spent = every cost row of every version of the protocol (runs and manual entries).
reserved = the estimates of the protocol's runs that are still ``queued`` or ``running``: a run
opened by the executor stores its estimate in its ``extra_json`` under :data:`RESERVATION_KEY`
(:func:`reservation`); the reservation ends when the run leaves ``queued``/``running`` (finished:
its metered cost row replaces it in the same transaction; reaped as abandoned: the cost of the
time it ran replaces it), so committed spend + open reservations never exceed the budget.
estimate = cost_micros(hardware, seconds) where seconds is the job's declared
``estimate_seconds``, else the median wall time of earlier runs of that job (any version), else 0
(a job never run before with no estimate is only bounded by what was already spent).

Concurrency: :func:`check_budget` first takes the protocol's budget lock (:func:`lock_budget`),
held until the caller's transaction ends, and the caller records the new run with its
reservation in that same transaction. So of several concurrent ``docket run`` of one protocol,
each sees the reservations of those that passed before it: at most the budget is committed.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docketml.protocols.schema import JobSpec, Protocol

from ..errors import UserError
from ..store.chainlock import lock_chain
from ..store.models import CostRow, ProtocolRow, RunRow
from .hardware import Hardware, cost_micros
from .money import format_usd, usd_to_micros


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of :func:`check_budget`; ``ok`` is spent + reserved + estimate <= budget
    (always True without a budget)."""

    budget_micros: int | None
    spent_micros: int
    estimate_micros: int
    estimate_seconds: float
    estimate_source: str
    ok: bool
    reserved_micros: int = 0
    reserved_runs: int = 0

    def message(self, job: str) -> str:
        """The one-line refusal, naming each term of the sum."""
        assert self.budget_micros is not None
        running = (
            f" + reserved {format_usd(self.reserved_micros)} by {self.reserved_runs} running run(s)"
            if self.reserved_runs
            else ""
        )
        total = self.spent_micros + self.reserved_micros + self.estimate_micros
        return (
            f"budget exceeded for job {job!r}: spent {format_usd(self.spent_micros)}{running} + "
            f"estimate {format_usd(self.estimate_micros)} "
            f"({self.estimate_seconds:.0f} s, {self.estimate_source}) = "
            f"{format_usd(total)} > "
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


RESERVATION_KEY = "budget_reservation_micros"
OPEN_STATUSES = ("queued", "running")


def lock_budget(session: Session, protocol_id: str) -> None:
    """Hold ``protocol_id``'s budget lock until the current transaction ends.

    PostgreSQL: a transaction-scoped advisory lock keyed on the protocol id (all its versions
    share one budget). SQLite: every writing transaction is ``BEGIN IMMEDIATE`` (ledger/db.py),
    which already holds the database's write lock."""
    lock_chain(session, f"budget:{protocol_id}")


def reservation(check: BudgetCheck) -> dict[str, int]:
    """What a run opened after ``check`` stores in its ``extra_json`` to reserve its estimate."""
    return {RESERVATION_KEY: int(check.estimate_micros)}


def reserved_micros(session: Session, protocol_id: str) -> tuple[int, int]:
    """(sum of reservations, number of runs holding one) over the protocol's runs that are still
    queued or running (any version)."""
    pks = protocol_pks(session, protocol_id)
    if not pks:
        return 0, 0
    total = count = 0
    for extra in session.scalars(
        select(RunRow.extra_json).where(
            RunRow.protocol_pk.in_(pks),
            RunRow.status.in_(OPEN_STATUSES),
            RunRow.extra_json.is_not(None),
        )
    ):
        try:
            value = json.loads(extra).get(RESERVATION_KEY)
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            total += value
            count += 1
    return total, count


def check_budget(
    session: Session, protocol_id: str, protocol: Protocol, job: JobSpec, hw: Hardware
) -> BudgetCheck:
    """Whether ``job`` on ``hw`` fits ``protocol``'s budget (see module docstring).

    With a budget, takes the budget lock first (:func:`lock_budget`): the caller must record the
    run and its :func:`reservation` in the same transaction for the check to be serialised."""
    if protocol.budget is not None:
        lock_budget(session, protocol_id)
    spent = spent_micros(session, protocol_id)
    reserved, runs = reserved_micros(session, protocol_id)
    seconds, source = estimate_seconds(session, protocol_id, job)
    try:
        estimate = cost_micros(hw, seconds) if seconds > 0 else 0
    except ValueError as exc:  # past the billing bounds (hardware.MAX_WALL_S, money.MAX_MICROS)
        raise UserError(
            f"protocol {protocol_id}: job {job.name!r}: estimate_seconds ({source}): {exc}"
        ) from None
    if protocol.budget is None:
        return BudgetCheck(None, spent, estimate, seconds, source, True, reserved, runs)
    try:
        budget = usd_to_micros(protocol.budget.usd)
    except ValueError as exc:
        raise UserError(f"protocol {protocol_id}: budget.usd: {exc}") from None
    ok = spent + reserved + estimate <= budget
    return BudgetCheck(budget, spent, estimate, seconds, source, ok, reserved, runs)
