"""The CLI's wiring of ``runners`` into library functions that take a callable.

The CLI is the composition root: library code (``ledger.reproduce``) takes a ``rerun`` callable and
never imports ``runners``; this module builds the one ``docket reproduce`` passes.
"""

from __future__ import annotations

from ..reproduce import Rerun, RerunOutcome
from ..store.db import Ledger


def executor_rerun(*, allow_over_budget: bool = False, reason: str | None = None) -> Rerun:
    """The re-run ``docket reproduce`` uses: ``run_protocol(job=..., force=True)`` of the local
    executor, as a :data:`docketml.ledger.reproduce.Rerun`."""

    def rerun(ledger: Ledger, protocol_id: str, job: str) -> RerunOutcome:
        from docketml.runners.execute.executor import run_protocol  # lazy: torch

        outcomes = run_protocol(
            ledger,
            protocol_id,
            job=job,
            force=True,
            show_progress=False,
            allow_over_budget=allow_over_budget,
            over_budget_reason=reason,
        )
        mine = [o for o in outcomes if o.job == job]
        if not mine:  # pragma: no cover - run_protocol(job=...) runs exactly that job
            return RerunOutcome(None, "not run", f"the executor did not run job {job!r}")
        outcome = mine[-1]
        return RerunOutcome(outcome.run_id, outcome.status, outcome.error)

    return rerun
