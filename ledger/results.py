"""The value types of recorded results, shared by the runners, the store and the verdict engine.

Pure dataclasses (no SQL, no numpy), so that every layer can import them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Observation:
    """One per-sample number: signal ``signal`` of item ``item`` in group ``group``.

    ``label`` is 1 (the protocol's positive class, e.g. failure / OOD), 0, or None when the sample
    is not judged.
    """

    group: str
    item: str
    signal: str
    value: float
    label: int | None = None


@dataclass(frozen=True)
class MetricValue:
    """A scalar result ``name`` = ``value`` of a run, with an optional CI and checkpoint ``step``.

    Which of several rows of one name counts is decided in one place:
    :func:`docketml.ledger.store.results.effective_metrics`."""

    name: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    step: int | None = None
