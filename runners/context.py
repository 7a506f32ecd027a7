"""The contract between the job executors and the job implementations.

``Observation`` and ``MetricValue`` are :mod:`docketml.ledger.results`' (re-exported here).

A job implementation is a plain function ``run(ctx: JobContext) -> JobResult``. It knows nothing
about the ledger: the executor builds the context from the frozen protocol, calls the function,
and records the result (run row, observations, metrics, checkpoint, knob audit, cost).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docketml.ledger.results import MetricValue, Observation


class KnobAudit:
    """Tracks whether every knob a job sets to a non-default value really took effect.

    Contract: a job implementation calls ``fire(name)`` at the exact code path where the knob
    changes behaviour (not where it is read). After the job, ``silent_noops()`` lists the knobs
    that were set to a value different from their default but never fired; such a run is marked
    ``silent_noop`` and verdicts built on it are INCONCLUSIVE.
    """

    def __init__(self, params: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        self.params = dict(params)
        self.defaults = dict(defaults or {})
        self.fired_counts: dict[str, int] = {}

    def set_defaults(self, defaults: dict[str, Any]) -> None:
        """Declare the defaults of the knobs a job kind understands (called by the job)."""
        self.defaults.update(defaults)

    def get(self, name: str, default: Any = None) -> Any:
        """The knob's value from the protocol, else its declared default, else ``default``."""
        if name in self.params:
            return self.params[name]
        return self.defaults.get(name, default)

    def fire(self, name: str) -> None:
        """Report that the code path using knob ``name`` ran."""
        self.fired_counts[name] = self.fired_counts.get(name, 0) + 1

    def non_default(self) -> dict[str, Any]:
        """Knobs set by the protocol to a value different from the declared default."""
        return {
            k: v for k, v in self.params.items() if k not in self.defaults or self.defaults[k] != v
        }

    def silent_noops(self, ignore: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Non-default knobs that never fired (``ignore`` holds structural keys, e.g. ``model``)."""
        return sorted(
            k for k in self.non_default() if k not in ignore and self.fired_counts.get(k, 0) == 0
        )

    def report(self) -> dict[str, Any]:
        """JSON-able audit: value, default and fire count per knob."""
        return {
            k: {"value": v, "default": self.defaults.get(k), "fired": self.fired_counts.get(k, 0)}
            for k, v in sorted(self.params.items())
        }


@dataclass
class JobResult:
    """What a job returns to the executor."""

    metrics: list[MetricValue] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # item -> generated text
    checkpoint: Path | None = None  # file written under ctx.artifacts_dir
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able details kept with the run
    # already-validated observation dicts (group, item, label, signal, value): the bulk path the
    # public API (docketml.api.Run.observe_many) fills without building Observation objects
    extra_observations: list[dict[str, Any]] = field(default_factory=list)


ProgressFn = Callable[[int, int, str], None]  # (done, total, description)


def _no_progress(done: int, total: int, description: str) -> None:
    return None


@dataclass
class JobContext:
    """Everything a job needs; built by the executor from the protocol's ``jobs:`` entry."""

    job: str  # the job's name in the protocol, e.g. "v8b"
    kind: str  # the job kind, e.g. "joint_finetune"
    params: dict[str, Any]  # the job's knobs as declared in the protocol
    seed: int
    artifacts_dir: Path  # directory this run may write into (created by the executor)
    inputs: dict[str, Path] = field(default_factory=dict)  # dependency job name -> its checkpoint
    knobs: KnobAudit = field(default_factory=lambda: KnobAudit({}))
    progress: ProgressFn = _no_progress
    hardware: str = "cpu"
    device: str = "cpu"
    run_id: int | None = None  # the ledger run this job records into (set by the executor)
    protocol_id: str | None = None
    db_url: str | None = None  # the ledger URL, handed to child processes of command jobs
    spec: Any = None  # the protocol's JobSpec (entry/command of python and command jobs)
    protocol: Any = None  # the frozen Protocol the run is bound to


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


JobFn = Callable[[JobContext], JobResult]
