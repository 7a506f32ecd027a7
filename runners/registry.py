"""The job kinds the runners know, and the params that are structure rather than knobs."""

from __future__ import annotations

from runners.context import JobFn

# Params that select *what* runs (model config, which checkpoint) rather than tuning it: the knob
# audit ignores them (they take effect by construction: a wrong one fails loudly).
STRUCTURAL_KEYS = frozenset({"model", "checkpoint", "base", "donor"})


def job_kinds() -> dict[str, JobFn]:
    """Every job kind, imported lazily (torch is heavy)."""
    from runners.jobs import poe, routed

    kinds: dict[str, JobFn] = {}
    kinds.update(routed.JOBS)
    kinds.update(poe.JOBS)
    kinds.update(_test_kinds())
    return kinds


def _test_kinds() -> dict[str, JobFn]:
    from runners.jobs import builtin

    return builtin.JOBS
