"""Executing a frozen protocol's jobs and recording every run in the ledger.

``run_protocol`` resolves which jobs to run (all, in dependency order, or one named job whose
dependencies must already have succeeded), checks the budget before each job, and runs them on
the local executor (in this process) or on Ray (runners/ray_executor.py). ``execute_job`` is the
unit both executors share: it records the run (queued -> running with a heartbeat lease ->
succeeded | failed | silent_noop), meters its cost, and writes its results atomically.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import protocol_store as store
from ledger.budget import check_budget
from ledger.costs import meter_run
from ledger.db import Ledger
from ledger.errors import CheckFailed, UserError
from ledger.hardware import HardwareCatalog, UnknownHardwareError, load_catalog
from ledger.models import ProtocolRow
from ledger.runs import complete_run, create_run, heartbeat, latest_succeeded, reap_abandoned, start_run
from protocols.schema import JobSpec, Protocol
from runners.artifacts import artifacts_root, run_dir, store_checkpoint
from runners.context import JobContext, JobResult, KnobAudit
from runners.registry import STRUCTURAL_KEYS, job_kinds

LEASE_S = 30.0
ProgressFn = Callable[[int, int, str], None]


@dataclass
class JobOutcome:
    job: str
    status: str  # succeeded | failed | silent_noop | skipped | up_to_date
    run_id: int | None = None
    wall_s: float | None = None
    cost_micros: int = 0
    error: str | None = None
    silent_noop_knobs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "run_id": self.run_id,
            "wall_s": self.wall_s,
            "cost_micros": self.cost_micros,
            "error": self.error,
            "silent_noop_knobs": self.silent_noop_knobs,
        }


def topological_order(protocol: Protocol) -> list[JobSpec]:
    """Jobs in an order where each comes after its ``after`` dependencies (stable: declaration
    order among ready jobs)."""
    done: set[str] = set()
    order: list[JobSpec] = []
    remaining = list(protocol.jobs)
    while remaining:
        ready = [j for j in remaining if all(d in done for d in j.after)]
        if not ready:  # cycles are refused at validation; defensive
            raise UserError("dependency cycle among jobs: " + ", ".join(j.name for j in remaining))
        for job in ready:
            order.append(job)
            done.add(job.name)
        remaining = [j for j in remaining if j.name not in done]
    return order


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class _Heartbeat(threading.Thread):
    """Extends the run's lease every ``LEASE_S / 3`` seconds until stopped."""

    def __init__(self, ledger: Ledger, run_id: int, lease_s: float) -> None:
        super().__init__(daemon=True, name=f"docket-heartbeat-{run_id}")
        self.ledger, self.run_id, self.lease_s = ledger, run_id, lease_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            try:
                with self.ledger.session() as session:
                    heartbeat(session, self.run_id, self.lease_s)
            except Exception:  # a missed beat is retried; the lease is 3 beats long
                continue


def _inputs(session: Any, row: ProtocolRow, job: JobSpec) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for dep in job.after:
        run = latest_succeeded(session, row.sha256, dep)
        if run is None:
            raise CheckFailed(
                f"job {job.name!r} needs {dep!r} to have succeeded under protocol "
                f"{row.protocol_id} v{row.version}; run it first (docket run {row.protocol_id} --job {dep})"
            )
        extra = json.loads(run.extra_json) if run.extra_json else {}
        path = extra.get("checkpoint_file") or run.checkpoint_path
        if path:
            inputs[dep] = Path(path)
    return inputs


def execute_job(
    ledger: Ledger,
    protocol_pk: int,
    job_name: str,
    *,
    hardware: str | None = None,
    catalog: HardwareCatalog | None = None,
    progress: ProgressFn | None = None,
    worker: str = "local",
    lease_s: float = LEASE_S,
    allow_over_budget: bool = False,
    over_budget_reason: str | None = None,
    device: str = "cpu",
) -> JobOutcome:
    """Run one job of a frozen protocol version and record it (see module docstring)."""
    catalog = catalog or load_catalog()
    kinds = job_kinds()
    with ledger.session() as session:
        reap_abandoned(session)
        row = session.get(ProtocolRow, protocol_pk)
        assert row is not None and row.status == "frozen", "runs bind to frozen protocols only"
        protocol = store.parse_row(row)
        job = protocol.job(job_name)
        if job.kind not in kinds:
            raise UserError(f"job {job.name!r}: unknown kind {job.kind!r}; known kinds: {', '.join(sorted(kinds))}")
        hw_name = hardware or job.hardware
        try:
            hw = catalog[hw_name]
        except UnknownHardwareError as exc:
            raise UserError(str(exc.args[0])) from None
        budget = check_budget(session, row.protocol_id, protocol, job, hw)
        if not budget.ok and not allow_over_budget:
            raise CheckFailed(budget.message(job.name))
        if not budget.ok:
            _journal_over_budget(session, row, job.name, budget.message(job.name), over_budget_reason)
        inputs = _inputs(session, row, job)
        seed = job.seed if job.seed is not None else protocol.seed
        config = {"job": job.model_dump(mode="json"), "hardware": hw.name, "device": device}
        run = create_run(
            session,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job=job.name,
            kind=job.kind,
            config=config,
            hardware=hw.name,
            seed=seed,
            git_sha=git_sha(),
        )
        run_id = run.id
        start_run(session, run_id, worker=worker, lease_s=lease_s)
    root = artifacts_root(str(ledger.engine.url.render_as_string(hide_password=False)))
    knobs = KnobAudit(job.params)
    ctx = JobContext(
        job=job.name,
        kind=job.kind,
        params=dict(job.params),
        seed=int(seed),
        artifacts_dir=run_dir(root, run_id),
        inputs=inputs,
        knobs=knobs,
        progress=progress or (lambda done, total, desc: None),
        hardware=hw.name,
        device=device,
    )
    beat = _Heartbeat(ledger, run_id, lease_s)
    beat.start()
    started = time.perf_counter()
    result: JobResult | None = None
    error: str | None = None
    try:
        result = kinds[job.kind](ctx)
    except Exception as exc:  # the job failed: record it, never lose the cost
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=8))
    finally:
        wall_s = time.perf_counter() - started
        beat.stopped.set()
        beat.join(timeout=5)
    silent = knobs.silent_noops(ignore=STRUCTURAL_KEYS) if result is not None else []
    status = "failed" if result is None else ("silent_noop" if silent else "succeeded")
    ckpt_sha = ckpt_path = None
    extra: dict[str, Any] = dict(result.extra) if result is not None else {}
    if result is not None and result.checkpoint is not None:
        ckpt_sha, stored = store_checkpoint(root, Path(result.checkpoint))
        ckpt_path = str(stored)
        extra["checkpoint_file"] = str(Path(result.checkpoint).resolve())
    with ledger.session() as session:
        cost = meter_run(session, hw=hw, wall_s=wall_s, run_id=run_id, protocol_pk=protocol_pk, label=job.name)
        written = complete_run(
            session,
            run_id,
            status=status,
            observations=[o.__dict__ for o in result.observations] if result else (),
            metrics=[m.__dict__ for m in result.metrics] if result else (),
            texts=result.texts if result else None,
            wall_s=wall_s,
            checkpoint_sha256=ckpt_sha,
            checkpoint_path=ckpt_path,
            knob_audit=knobs.report(),
            silent_noop_knobs=silent,
            error=error if error else (f"knobs set but never took effect: {', '.join(silent)}" if silent else None),
            extra=extra or None,
            cost_micros=cost.usd_micros,
        )
        if not written:
            status = "abandoned"
    return JobOutcome(job.name, status, run_id, wall_s, cost.usd_micros, error, silent)


def _journal_over_budget(session: Any, row: ProtocolRow, job: str, message: str, reason: str | None) -> None:
    if not reason or not reason.strip():
        raise UserError("--allow-over-budget needs --reason \"...\" (it is written to the journal)")
    from journal.schema import JournalEntry
    from ledger.journal_store import append_entry
    from ledger.models import utcnow

    entry = JournalEntry(
        date=utcnow().date(),
        title=f"Over budget: ran {job} of {row.protocol_id} anyway",
        context=message,
        observations=[],
        inferences=[],
        failure_modes=[],
        next_action=None,
        notes=f"Reason given: {reason.strip()}",
        protocol=row.protocol_id,
    )
    append_entry(session, entry, protocol_pk=row.id)


def plan(protocol: Protocol, only: str | None) -> list[JobSpec]:
    if only is None:
        return topological_order(protocol)
    try:
        return [protocol.job(only)]
    except KeyError:
        names = ", ".join(j.name for j in protocol.jobs) or "(the protocol declares no jobs)"
        raise UserError(f"unknown job {only!r}; jobs: {names}") from None


def run_protocol(
    ledger: Ledger,
    protocol_id: str,
    *,
    job: str | None = None,
    force: bool = False,
    hardware: str | None = None,
    executor: str = "local",
    address: str | None = None,
    show_progress: bool = True,
    allow_over_budget: bool = False,
    over_budget_reason: str | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Run the jobs of the latest frozen version of ``protocol_id`` (see module docstring).

    Jobs that already succeeded under this version are skipped (``up_to_date``) unless ``force``
    or the job is named with ``job``. A failed job's dependants are skipped and say why.
    """
    if allow_over_budget and not (over_budget_reason or "").strip():
        raise UserError("--allow-over-budget needs --reason \"...\" (it is written to the journal)")
    with ledger.session() as session:
        reap_abandoned(session)
        row = store.latest_frozen(session, protocol_id)
        protocol = store.parse_row(row)
        jobs = plan(protocol, job)
        done_before = {
            j.name for j in protocol.jobs if latest_succeeded(session, row.sha256, j.name) is not None
        }
        protocol_pk = row.id
    if not jobs:
        raise UserError(f"protocol {protocol_id} declares no jobs (use `docket ingest` for results produced elsewhere)")
    catalog = load_catalog()
    if executor == "ray":
        from runners.ray_executor import run_with_ray

        return run_with_ray(
            ledger, protocol_pk, protocol, jobs, done_before=done_before, force=force or job is not None,
            hardware=hardware, address=address, show_progress=show_progress,
            allow_over_budget=allow_over_budget, over_budget_reason=over_budget_reason, on_outcome=on_outcome,
        )
    if executor != "local":
        raise UserError(f"unknown executor {executor!r}; expected local or ray")
    from runners.progress import JobProgress

    outcomes: list[JobOutcome] = []
    failed: dict[str, str] = {}
    with JobProgress(enabled=show_progress, total_jobs=len(jobs)) as bars:
        for spec in jobs:
            blocked = [d for d in spec.after if d in failed]
            if blocked:
                outcome = JobOutcome(spec.name, "skipped", error=f"dependency {blocked[0]!r} {failed[blocked[0]]}")
                failed[spec.name] = "was skipped"
            elif spec.name in done_before and not force and job is None:
                outcome = JobOutcome(spec.name, "up_to_date")
            else:
                bars.start_job(spec.name)
                outcome = execute_job(
                    ledger, protocol_pk, spec.name, hardware=hardware, catalog=catalog,
                    progress=bars.update, worker=f"local:{os.getpid()}",
                    allow_over_budget=allow_over_budget, over_budget_reason=over_budget_reason,
                )
                if outcome.status not in ("succeeded",):
                    failed[spec.name] = outcome.status
            bars.finish_job(spec.name, outcome.status)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return outcomes
