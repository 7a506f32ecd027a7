"""Reproduction claims: re-derive a protocol's headline numbers and record every attempt.

A protocol's ``claims:`` binds a named number to a job's metric (:class:`protocols.schema.Claim`:
``job``, ``metric``, ``expected``, ``tolerance``), the way the paper's ``reproduce/`` scripts do.
:func:`reproduce` re-runs the claim's job through the ``rerun`` it is given (the CLI passes
:func:`docketml.ledger.cli.rerun.executor_rerun`, i.e. ``runners.execute.executor.
run_protocol(..., job=claim.job, force=True)``: the latest frozen version, the checkpoints of
the dependencies' selected runs (``select_runs``: by default their first succeeded run), the
budget check; this module never imports ``runners``), reads the metric
from the new run and compares:

    passed  iff  the run succeeded, recorded the metric, and |observed - expected| <= tolerance

The comparison is exact on the numbers as written (each float is read through its shortest
decimal form, so ``expected 0.85, tolerance 0.05`` accepts ``0.90``). The metric is the run's
recorded metric of that name, the row that counts by the store's one rule
(:func:`docketml.ledger.store.results.effective_metrics`: a row without a step is the final value,
else the highest step); failing that, a derived metric of the protocol's ``metrics:`` evaluated
over the run's recorded metrics. Every attempt, passing or not, is a ``reproductions`` row
(append-only), including a re-run the executor refused (budget, missing dependency): it then has
no observed value and the reason in ``detail``.

Claims are looked up in the latest frozen version of each protocol. A claim reference is
``protocol:claim`` or a claim name that is unique across the frozen protocols (optionally within
``--protocol``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from docketml.protocols.schema import Claim, Protocol

from .errors import CheckFailed, UserError
from .store import protocols as store
from .store.db import Ledger
from .store.models import ProtocolRow, ReproductionRow, utcnow
from .store.results import run_metrics

__all__ = [
    "ClaimRef",
    "RerunOutcome",
    "ReproductionResult",
    "find_claims",
    "read_metric",
    "reproduce",
    "reproduce_claim",
    "within_tolerance",
]


@dataclass(frozen=True)
class ClaimRef:
    """A claim of the latest frozen version of a protocol."""

    protocol_id: str
    protocol_pk: int
    version: int
    name: str
    claim: Claim

    @property
    def ref(self) -> str:
        return f"{self.protocol_id}:{self.name}"


@dataclass(frozen=True)
class RerunOutcome:
    """What re-running a claim's job gave: the new run (if one was created) and its status."""

    run_id: int | None
    status: str
    error: str | None = None


# (ledger, protocol_id, job) -> RerunOutcome; raises CheckFailed when the executor refuses
Rerun = Callable[[Ledger, str, str], RerunOutcome]


@dataclass(frozen=True)
class ReproductionResult:
    """One recorded attempt."""

    id: int
    ref: str
    protocol_id: str
    version: int
    claim: str
    job: str
    metric: str
    expected: float
    tolerance: float
    observed: float | None
    difference: float | None
    passed: bool
    run_id: int | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _frozen_versions(session: Session, protocol_id: str | None) -> list[ProtocolRow]:
    """The latest frozen version of each protocol (or of ``protocol_id`` only)."""
    ids = [protocol_id] if protocol_id else store.known_ids(session)
    rows = []
    for pid in ids:
        if protocol_id:
            rows.append(store.latest_frozen(session, pid))  # unknown -> 2, not frozen -> 1
            continue
        frozen = [v for v in store.chain(session, pid) if v.status == "frozen"]
        if frozen:
            rows.append(frozen[-1])
    return rows


def _claims_of(row: ProtocolRow) -> list[ClaimRef]:
    protocol = store.parse_row(row)
    return [
        ClaimRef(row.protocol_id, row.id, row.version, name, claim)
        for name, claim in protocol.claims.items()
    ]


def find_claims(
    session: Session, claim: str | None = None, *, protocol_id: str | None = None
) -> list[ClaimRef]:
    """Resolve ``claim`` (``protocol:claim`` or a unique name) or, when ``None``, every claim of
    the frozen protocols (of ``protocol_id`` only, if given). Raises :class:`UserError` naming
    the known claims when a reference matches none or several."""
    if claim is not None and ":" in claim:
        pid, _, name = claim.partition(":")
        if protocol_id is not None and protocol_id != pid:
            raise UserError(f"claim {claim!r} is not in --protocol {protocol_id}")
        protocol_id, claim = pid, name
    refs = [ref for row in _frozen_versions(session, protocol_id) for ref in _claims_of(row)]
    if claim is None:
        return refs
    matches = [ref for ref in refs if ref.name == claim]
    if len(matches) == 1:
        return matches
    known = ", ".join(ref.ref for ref in refs) or "none (no frozen protocol declares claims:)"
    if not matches:
        raise UserError(f"unknown claim {claim!r}; known claims: {known}")
    raise UserError(
        f"claim {claim!r} is ambiguous: {', '.join(m.ref for m in matches)}; "
        "name it as PROTOCOL:CLAIM"
    )


def within_tolerance(observed: float, expected: float, tolerance: float) -> bool:
    """``|observed - expected| <= tolerance``, exact on the shortest decimal forms."""
    values = [Decimal(repr(float(v))) for v in (observed, expected, tolerance)]
    if not all(v.is_finite() for v in values):
        return False
    obs, exp, tol = values
    return abs(obs - exp) <= tol


def read_metric(
    session: Session, run_id: int, metric: str, protocol: Protocol | None = None
) -> tuple[float | None, str | None]:
    """The value of ``metric`` recorded by run ``run_id`` (module docstring) and, when there is
    none, why."""
    latest = run_metrics(session, run_id)
    if metric in latest:
        return float(latest[metric].value), None
    if protocol is not None and metric in protocol.metrics:
        from docketml.protocols.expr import ExprError, parse_expr

        try:
            expr = parse_expr(protocol.metrics[metric].expr)
            value = expr.evaluate({name: float(row.value) for name, row in latest.items()})
        except ExprError as exc:
            return None, f"derived metric {metric!r}: {exc}"
        return value, None
    have = ", ".join(sorted(latest)) or "no metrics"
    return None, f"run {run_id} recorded no metric {metric!r} (it recorded: {have})"


def reproduce_claim(ledger: Ledger, ref: ClaimRef, rerun: Rerun) -> ReproductionResult:
    """Re-run ``ref``'s job, compare its metric, record the attempt (module docstring)."""
    claim = ref.claim
    with ledger.session() as session:
        protocol = store.parse_row(session.get(ProtocolRow, ref.protocol_pk))  # type: ignore[arg-type]
    if claim.job not in {job.name for job in protocol.jobs}:
        jobs = ", ".join(j.name for j in protocol.jobs) or "none"
        raise UserError(f"claim {ref.ref}: job {claim.job!r} is not a job of the protocol ({jobs})")
    observed: float | None = None
    detail: str | None = None
    try:
        outcome = rerun(ledger, ref.protocol_id, claim.job)
    except CheckFailed as exc:
        outcome = RerunOutcome(None, "refused", str(exc))
    run_id = outcome.run_id
    with ledger.session() as session:
        if outcome.status != "succeeded":
            first = (outcome.error or "").strip().splitlines()
            detail = f"re-run of job {claim.job!r} {outcome.status}" + (
                f": {first[0]}" if first else ""
            )
        else:
            assert run_id is not None
            observed, detail = read_metric(session, run_id, claim.metric, protocol)
        passed = observed is not None and within_tolerance(
            observed, claim.expected, claim.tolerance
        )
        difference = None if observed is None else abs(observed - claim.expected)
        if observed is not None and not passed:
            detail = (
                f"|{observed!r} - {claim.expected!r}| = {difference:.6g} > tolerance "
                f"{claim.tolerance!r}"
            )
        row = ReproductionRow(
            protocol_pk=ref.protocol_pk,
            claim=ref.name,
            at=utcnow(),
            expected=float(claim.expected),
            observed=observed,
            tolerance=float(claim.tolerance),
            passed=passed,
            run_id=run_id,
            detail=detail,
        )
        session.add(row)
        session.flush()
        attempt_id = row.id
    return ReproductionResult(
        id=attempt_id,
        ref=ref.ref,
        protocol_id=ref.protocol_id,
        version=ref.version,
        claim=ref.name,
        job=claim.job,
        metric=claim.metric,
        expected=claim.expected,
        tolerance=claim.tolerance,
        observed=observed,
        difference=difference,
        passed=passed,
        run_id=run_id,
        detail=detail,
    )


def reproduce(
    ledger: Ledger,
    claim: str | None = None,
    *,
    protocol_id: str | None = None,
    rerun: Rerun,
) -> list[ReproductionResult]:
    """Reproduce one claim (``claim``) or every claim (``None``), in declaration order."""
    with ledger.session() as session:
        refs = find_claims(session, claim, protocol_id=protocol_id)
    return [reproduce_claim(ledger, ref, rerun) for ref in refs]
