"""Executing a frozen protocol's jobs and recording every run in the ledger.

``run_protocol`` resolves which jobs to run (all, in dependency order, or one named job whose
dependencies must already have succeeded), checks the budget before each job, and runs them on
the local executor (in this process) or on Ray (runners/ray_executor.py). ``execute_job`` is the
unit both executors share: it records the run (queued -> running with a heartbeat lease ->
succeeded | failed | silent_noop), meters its cost, and writes its results atomically. Its two
halves, :func:`open_job` and :func:`finish_job`, are also what the public API
(:func:`docketml.start_run`) uses, so a user's own code gets exactly this lifecycle.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from docketml.extras import require_extra
from docketml.ledger.billing.budget import check_budget, reservation
from docketml.ledger.billing.costs import meter_run, record_late_finish_cost
from docketml.ledger.billing.hardware import (
    Hardware,
    HardwareCatalog,
    UnknownHardwareError,
    load_catalog,
)
from docketml.ledger.billing.hardware import cost_micros as cost_micros_of
from docketml.ledger.errors import CheckFailed, UserError
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import ProtocolRow, RunRow
from docketml.ledger.store.retry import transact
from docketml.ledger.store.runs import (
    complete_run,
    create_run,
    heartbeat,
    latest_succeeded,
    lease_seconds,
    reap_abandoned,
    run_by_worker,
    start_run,
    succeeded_runs,
)
from docketml.protocols.schema import JobSpec, Protocol

from ..context import JobContext, JobResult, KnobAudit
from ..jobs.preflight import model_checks
from ..registry import extra_of, job_kinds
from .artifacts import ensure_artifacts_root, run_dir, store_checkpoint
from .provenance import git_state, provenance

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
    seed: int | None = None  # the replicate seed, for a job that declares replicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "seed": self.seed,
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
    """The commit of the current working directory's git work tree (the user's code), if any."""
    return git_state()["git_commit"]


def _device_for(
    ledger: Ledger,
    protocol_pk: int,
    job_name: str,
    hardware: str | None,
    catalog: HardwareCatalog,
    requested: str,
) -> str:
    """:func:`resolve_device` for a job looked up in a short read (unknown names are left to the
    opening transaction, which reports them)."""
    with ledger.session() as session:
        row = session.get(ProtocolRow, protocol_pk)
        protocol = store.parse_row(row) if row is not None else None
    try:
        job = protocol.job(job_name) if protocol is not None else None
        hw = catalog[hardware or job.hardware] if job is not None else None
    except (KeyError, UnknownHardwareError):
        return requested
    return requested if job is None or hw is None else resolve_device(job, hw, requested)


def resolve_device(job: JobSpec, hw: Hardware, requested: str = "cpu") -> str:
    """The device a job runs on: ``requested`` if it is not ``cpu``; else ``cuda`` when the job
    declares GPUs (``num_gpus > 0``: refused with :class:`UserError` when no CUDA device is
    visible, never a CPU run billed at GPU rates) or its hardware class is a GPU and CUDA is
    available; else ``cpu``. Imports torch only for GPU jobs."""
    if requested != "cpu" or not (job.num_gpus > 0 or hw.is_gpu):
        return requested
    from ..jobs.device import cuda_available

    available = cuda_available()
    if job.num_gpus > 0 and not available:
        raise UserError(
            f"job {job.name!r} declares num_gpus={job.num_gpus:g} but no CUDA device is visible "
            "here; refusing to run it on the CPU (set num_gpus: 0 to allow that)"
        )
    return "cuda" if available else "cpu"


class Heartbeat(threading.Thread):
    """Extends the run's lease every ``lease_s / 3`` seconds until stopped."""

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


def _limit_torch_threads() -> None:
    """Torch threads for a job: ``DOCKET_TORCH_THREADS`` (default 1).

    Small models on a few shared cores run faster single-threaded (measured 2-7x under load on
    2 cores: intra-op threads wait for busy cores); set the variable higher for big CPU jobs."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ.get("DOCKET_TORCH_THREADS", "1")))


def _check_job_model(job: JobSpec) -> None:
    """Pre-flight of the job's checkpoint (``runners.jobs.preflight``): :class:`UserError`
    naming the path, before any run is recorded."""
    for _subject, problem in model_checks(job):
        if problem is not None:
            raise UserError(f"job {job.name!r}: {problem}")


def upstream_run(session: Any, row: ProtocolRow, protocol: Protocol, dep: str) -> RunRow:
    """The run of ``dep`` a dependant consumes: the run the verdict's one selection rule
    (:func:`docketml.ledger.verdicts.select_runs`) uses for ``dep`` -- by default its first
    succeeded run, so a later rerun of ``dep`` never changes what downstream jobs read; for
    ``select: all`` the first declared seed's replicate, for ``median_of`` the median one.
    :class:`CheckFailed` when there is none (``dep`` never succeeded, or a seed its ``select``
    needs is missing)."""
    from docketml.ledger.verdicts import select_runs

    runs = succeeded_runs(session, row.sha256, dep)
    sel = select_runs(session, protocol, dep, runs)
    if not sel.used:
        why = f" ({sel.problem})" if sel.problem else ""
        raise CheckFailed(
            f"needs {dep!r} to have succeeded under protocol {row.protocol_id} v{row.version}"
            f"{why}; run it first (docket run {row.protocol_id} --job {dep})"
        )
    by_id = {r.id: r for r in runs}
    return by_id[sel.used[0]]


def _inputs(session: Any, row: ProtocolRow, job: JobSpec, protocol: Protocol) -> dict[str, Path]:
    """Each dependency's checkpoint, from the run :func:`upstream_run` selects."""
    inputs: dict[str, Path] = {}
    for dep in job.after:
        try:
            run = upstream_run(session, row, protocol, dep)
        except CheckFailed as exc:
            raise CheckFailed(f"job {job.name!r} {exc}") from None
        extra = json.loads(run.extra_json) if run.extra_json else {}
        path = extra.get("checkpoint_file") or run.checkpoint_path
        if path:
            inputs[dep] = Path(path)
    return inputs


@dataclass
class OpenedRun:
    """A run opened by :func:`open_job` (plain values, no ORM objects): what the code that
    computes the job and :func:`finish_job` need."""

    run_id: int
    protocol_pk: int
    protocol_id: str
    protocol: Protocol
    job: JobSpec
    hw: Hardware
    inputs: dict[str, Path]
    seed: int
    lease_s: float
    device: str  # the device the job runs on (resolve_device)
    root: Path  # the artifacts root (checkpoints by sha256, run scratch dirs)
    db_url: str  # the ledger URL with its password, for a child process (command jobs)


def open_job(
    ledger: Ledger,
    protocol_pk: int,
    job_name: str,
    *,
    hardware: str | None = None,
    catalog: HardwareCatalog | None = None,
    worker: str = "local",
    lease_s: float | None = None,
    allow_over_budget: bool = False,
    over_budget_reason: str | None = None,
    device: str = "cpu",
    token: str | None = None,
    seed: int | None = None,
) -> OpenedRun:
    """Open a run of one job of a frozen protocol version: reap abandoned runs, check the kind,
    hardware, dependencies and budget, create the run bound to the version's sha256 with its
    budget reservation and start its lease (queued -> running), in one retried transaction (the
    budget lock is held until it commits, so concurrent openers never overcommit the budget).
    Raises :class:`UserError` / :class:`CheckFailed` before any run is recorded. The caller must
    keep the lease alive (:class:`Heartbeat`) and end the run with :func:`finish_job`.

    Shared by :func:`execute_job` (built-in executors) and :func:`docketml.start_run` (user code).
    ``seed``: the replicate seed to run with (one of the job's declared ``replicates`` seeds;
    :class:`UserError` otherwise); None = the job's seed, else the protocol's (for a job with
    replicates: its first declared seed).
    """
    catalog = catalog or load_catalog()
    lease_s = lease_seconds() if lease_s is None else lease_s
    kinds = job_kinds()
    worker_id = f"{worker}#{token or uuid.uuid4().hex[:12]}"
    seed_override = seed
    device = _device_for(ledger, protocol_pk, job_name, hardware, catalog, device)
    where = provenance(device)  # git calls and the torch import stay outside the transaction
    attempts = 0

    def open_run(session: Any) -> tuple[Any, ...]:
        nonlocal attempts
        attempts += 1
        reap_abandoned(session, catalog=catalog)
        row = session.get(ProtocolRow, protocol_pk)
        assert row is not None and row.status == "frozen", "runs bind to frozen protocols only"
        protocol = store.parse_row(row)
        job = protocol.job(job_name)
        if job.kind not in kinds:
            raise UserError(
                f"job {job.name!r}: unknown kind {job.kind!r}; "
                f"known kinds: {', '.join(sorted(kinds))}"
            )
        _check_job_model(job)
        hw_name = hardware or job.hardware
        try:
            hw = catalog[hw_name]
        except UnknownHardwareError as exc:
            raise UserError(str(exc.args[0])) from None
        inputs = _inputs(session, row, job, protocol)
        declared = job.declared_seeds()
        if seed_override is not None and declared is not None and seed_override not in declared:
            raise UserError(
                f"job {job.name!r}: seed {seed_override} is not one of its replicates {declared}"
            )
        if seed_override is not None:
            seed = int(seed_override)
        elif declared is not None:
            seed = declared[0]
        else:
            seed = int(job.seed if job.seed is not None else protocol.seed)
        existing = run_by_worker(session, worker_id) if attempts > 1 else None
        if existing is not None:  # an earlier attempt of this unit committed
            return existing.id, row.protocol_id, protocol, job, hw, inputs, seed
        budget = check_budget(session, row.protocol_id, protocol, job, hw)
        if not budget.ok and not allow_over_budget:
            raise CheckFailed(budget.message(job.name))
        if not budget.ok:
            message = budget.message(job.name)
            _journal_over_budget(session, row, job.name, message, over_budget_reason)
        config = {
            "job": job.model_dump(mode="json"),
            "hardware": hw.name,
            "device": device,
            "provenance": where,
        }
        run = create_run(
            session,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job=job.name,
            kind=job.kind,
            config=config,
            hardware=hw.name,
            seed=seed,
            git_sha=where["git_commit"],
            extra=reservation(budget),  # counted by check_budget until the run ends
        )
        start_run(session, run.id, worker=worker_id, lease_s=lease_s)
        return run.id, row.protocol_id, protocol, job, hw, inputs, seed

    db_url = str(ledger.engine.url.render_as_string(hide_password=False))
    root = ensure_artifacts_root(db_url)  # before the run exists: a bad root orphans nothing
    run_id, protocol_id, protocol, job, hw, inputs, seed = transact(ledger, open_run)
    return OpenedRun(
        run_id=run_id,
        protocol_pk=protocol_pk,
        protocol_id=protocol_id,
        protocol=protocol,
        job=job,
        hw=hw,
        inputs=inputs,
        seed=seed,
        lease_s=lease_s,
        device=device,
        root=root,
        db_url=db_url,
    )


def finish_job(
    ledger: Ledger,
    opened: OpenedRun,
    *,
    result: JobResult | None,
    knobs: KnobAudit,
    wall_s: float,
    error: str | None = None,
) -> JobOutcome:
    """End a run opened by :func:`open_job`: ``result`` None -> ``failed`` with ``error``; a
    non-default knob that never fired -> ``silent_noop``; else ``succeeded``. Results, knob audit,
    checkpoint (content-addressed) and the metered cost are written in one retried transaction;
    a run reaped as abandoned meanwhile keeps only its cost (status ``abandoned``)."""
    run_id, job, hw, root = opened.run_id, opened.job, opened.hw, opened.root
    structural = job_kinds().structural_keys(job.kind)
    silent = knobs.silent_noops(ignore=structural) if result is not None else []
    status = "failed" if result is None else ("silent_noop" if silent else "succeeded")
    ckpt_sha = ckpt_path = None
    extra: dict[str, Any] = dict(result.extra) if result is not None else {}
    if result is not None and result.checkpoint is not None:
        ckpt_sha, stored = store_checkpoint(root, Path(result.checkpoint))
        ckpt_path = str(stored)
        extra["checkpoint_file"] = str(Path(result.checkpoint).resolve())
    observations = [o.__dict__ for o in result.observations] if result else []
    observations += result.extra_observations if result else []
    metrics = [m.__dict__ for m in result.metrics] if result else []
    if silent:
        error = f"knobs set but never took effect: {', '.join(silent)}"

    def finish_run(session: Any) -> tuple[str, int]:
        # lock the run row (PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock) so
        # that a concurrent reaper either ran before us or waits for our commit
        run = session.scalars(select(RunRow).where(RunRow.id == run_id).with_for_update()).one()
        if run.status == status:  # an earlier attempt of this unit committed
            return status, int(run.cost_micros)
        if run.status not in ("running", "queued"):  # reaped meanwhile: results refused
            _, total = record_late_finish_cost(session, hw=hw, run=run, wall_s=wall_s)
            return "abandoned", total
        usd_micros = cost_micros_of(hw, wall_s)
        written = complete_run(
            session,
            run_id,
            status=status,
            observations=observations,
            metrics=metrics,
            texts=result.texts if result else None,
            wall_s=wall_s,
            checkpoint_sha256=ckpt_sha,
            checkpoint_path=ckpt_path,
            knob_audit=knobs.report(),
            silent_noop_knobs=silent,
            error=error,
            extra=extra or None,
            cost_micros=usd_micros,
        )
        assert written, "the run row is locked: it cannot have been reaped in between"
        # the cost row last: the cost chain's lock is then held only until this commit
        meter_run(
            session,
            hw=hw,
            wall_s=wall_s,
            run_id=run_id,
            protocol_pk=opened.protocol_pk,
            label=job.name,
        )
        return status, usd_micros

    final, cost_micros = transact(ledger, finish_run)
    if final == "abandoned":
        error = (
            f"the run's lease ({opened.lease_s:g} s) expired before it finished (missed "
            "heartbeats): it was marked abandoned and its results were refused; its cost is kept"
            + (f"\n{error}" if error else "")
        )
    return JobOutcome(job.name, final, run_id, wall_s, cost_micros, error, silent)


def execute_job(
    ledger: Ledger,
    protocol_pk: int,
    job_name: str,
    *,
    hardware: str | None = None,
    catalog: HardwareCatalog | None = None,
    progress: ProgressFn | None = None,
    worker: str = "local",
    lease_s: float | None = None,
    allow_over_budget: bool = False,
    over_budget_reason: str | None = None,
    device: str = "cpu",
    token: str | None = None,
    seed: int | None = None,
) -> JobOutcome:
    """Run one job of a frozen protocol version and record it (see module docstring).
    ``seed``: the replicate seed (see :func:`open_job`).

    The run is stored with ``worker = "<worker>#<token>"`` (``token``: a fresh random id unless
    given; the Ray executor passes its own so the driver can find the run of a task whose worker
    died). The two ledger writes (open the run; write its results and cost) are idempotent
    transaction units retried on a dropped connection (:func:`ledger.retry.transact`): a retry
    after a committed attempt finds the run by its worker token, and never completes or meters a
    run twice. Raises :class:`UserError` / :class:`CheckFailed` before any run is recorded (unknown
    kind or hardware, unmet dependency, budget). A run reaped as abandoned while its job was still
    computing gets status ``abandoned``: its results are refused, the rest of its cost is kept.
    """
    catalog = catalog or load_catalog()
    opened = open_job(
        ledger,
        protocol_pk,
        job_name,
        hardware=hardware,
        catalog=catalog,
        worker=worker,
        lease_s=lease_s,
        allow_over_budget=allow_over_budget,
        over_budget_reason=over_budget_reason,
        device=device,
        token=token,
        seed=seed,
    )
    job, hw = opened.job, opened.hw
    knobs = KnobAudit(job.params)
    ctx = JobContext(
        job=job.name,
        kind=job.kind,
        params=dict(job.params),
        seed=opened.seed,
        artifacts_dir=run_dir(opened.root, opened.run_id),
        inputs=opened.inputs,
        knobs=knobs,
        progress=progress or (lambda done, total, desc: None),
        hardware=hw.name,
        device=opened.device,
        run_id=opened.run_id,
        protocol_id=opened.protocol_id,
        db_url=opened.db_url,
        spec=job,
        protocol=opened.protocol,
    )
    beat = Heartbeat(ledger, opened.run_id, opened.lease_s)
    beat.start()
    started = time.perf_counter()
    result: JobResult | None = None
    error: str | None = None
    try:
        job_fn = job_kinds()[job.kind]
        _limit_torch_threads()
        result = job_fn(ctx)
    except Exception as exc:  # the job failed: record it, never lose the cost
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=8))
    finally:
        wall_s = time.perf_counter() - started
        beat.stopped.set()
        beat.join(timeout=5)
    outcome = finish_job(ledger, opened, result=result, knobs=knobs, wall_s=wall_s, error=error)
    if job.replicates is not None:
        outcome.seed = opened.seed
    return outcome


def _journal_over_budget(
    session: Any, row: ProtocolRow, job: str, message: str, reason: str | None
) -> None:
    if not reason or not reason.strip():
        raise UserError('--allow-over-budget needs --reason "..." (it is written to the journal)')
    from docketml.journal.schema import JournalEntry
    from docketml.ledger.store.journal import append_entry
    from docketml.ledger.store.models import utcnow

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


def require_extras(jobs: list[JobSpec], executor: str) -> None:
    """:class:`~docketml.extras.MissingExtra` (exit 2) if a planned job's kind, or the
    executor, needs an optional extra that is not installed (checked without importing it)."""
    if executor == "ray":
        require_extra("ray")
    for spec in jobs:
        require_extra(extra_of(spec.kind))


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
    A job that declares ``replicates`` is run once per declared seed (one outcome each); a seed
    that already has a succeeded run is ``up_to_date`` unless ``force`` (which runs every seed
    again; the verdict still uses each seed's first run, ``ledger.verdicts.select_runs``).
    The Ray executor does the same, one Ray task per seed (``ray_executor.run_with_ray``).
    """
    if allow_over_budget and not (over_budget_reason or "").strip():
        raise UserError('--allow-over-budget needs --reason "..." (it is written to the journal)')

    def resolve(session: Any) -> tuple[int, Protocol, list[JobSpec], set[Any]]:
        reap_abandoned(session)
        row = store.latest_frozen(session, protocol_id)
        protocol = store.parse_row(row)
        jobs = plan(protocol, job)
        require_extras(jobs, executor)  # before anything runs; raising rolls the reap back
        done = {j.name for j in protocol.jobs if latest_succeeded(session, row.sha256, j.name)}
        for j in protocol.jobs:
            if j.replicates is not None:
                have = {r.seed for r in succeeded_runs(session, row.sha256, j.name)}
                done |= {(j.name, s) for s in j.replicates.seeds if s in have}  # type: ignore[misc]
        return row.id, protocol, jobs, done

    protocol_pk, protocol, jobs, done_before = transact(ledger, resolve)
    if not jobs:
        raise UserError(
            f"protocol {protocol_id} declares no jobs "
            "(use `docket ingest` for results produced elsewhere)"
        )
    catalog = load_catalog()
    ensure_artifacts_root(ledger.engine.url.render_as_string(hide_password=False))
    if executor == "ray":
        from .ray_executor import run_with_ray

        return run_with_ray(
            ledger,
            protocol_pk,
            protocol,
            jobs,
            done_before=done_before,
            force=force or job is not None,
            hardware=hardware,
            address=address,
            show_progress=show_progress,
            allow_over_budget=allow_over_budget,
            over_budget_reason=over_budget_reason,
            on_outcome=on_outcome,
        )
    if executor != "local":
        raise UserError(f"unknown executor {executor!r}; expected local or ray")
    from .progress import JobProgress

    outcomes: list[JobOutcome] = []
    failed: dict[str, str] = {}
    with JobProgress(enabled=show_progress, total_jobs=len(jobs)) as bars:
        for spec in jobs:
            blocked = [d for d in spec.after if d in failed]
            if blocked:
                outcome = JobOutcome(
                    spec.name, "skipped", error=f"dependency {blocked[0]!r} {failed[blocked[0]]}"
                )
                failed[spec.name] = "was skipped"
            elif spec.replicates is None and spec.name in done_before and not force and job is None:
                outcome = JobOutcome(spec.name, "up_to_date")
            else:
                outcome = None
                for seed in spec.declared_seeds() or [None]:
                    again = force or job is not None
                    if seed is not None and (spec.name, seed) in done_before and not again:
                        one = JobOutcome(spec.name, "up_to_date", seed=seed)
                    else:
                        bars.start_job(spec.name)
                        one = execute_job(
                            ledger,
                            protocol_pk,
                            spec.name,
                            hardware=hardware,
                            catalog=catalog,
                            progress=bars.update,
                            worker=f"local:{os.getpid()}",
                            allow_over_budget=allow_over_budget,
                            over_budget_reason=over_budget_reason,
                            seed=seed,
                        )
                        if one.status not in ("succeeded",):
                            failed[spec.name] = one.status
                    if outcome is not None:  # every replicate but the last is reported here
                        outcomes.append(outcome)
                        if on_outcome:
                            on_outcome(outcome)
                    outcome = one
            assert outcome is not None
            bars.finish_job(spec.name, outcome.status)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return outcomes
