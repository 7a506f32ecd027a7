"""The Ray executor: each job of a protocol becomes a Ray task; workers record their own runs.

Contract of :func:`run_with_ray` (called by :func:`runners.executor.run_protocol`):

- Each job runs as one Ray task (``max_retries=0``) per run (a job that declares
  ``replicates`` runs once per declared seed, each seed its own task, as on the local executor:
  a seed with a succeeded run is ``up_to_date`` unless ``force``) with the resources its
  protocol declares (``num_cpus``, ``num_gpus``; ``device="cuda"`` when it asks for a GPU).
  The task calls :func:`runners.executor.execute_job` inside the worker, which opens its *own*
  ledger connection from the URL string (never a pickled engine) and records the run (queued ->
  running with a heartbeat lease -> succeeded | failed | silent_noop), its cost and its results.
- Scheduling is Ray's: the driver only keeps the ready set. A job is launched once every
  dependency of this plan succeeded (or was already up to date), every seed of a replicated
  dependency included; independent jobs (and the seeds of one job) run in
  parallel; completions are taken with ``ray.wait`` on the in-flight refs.
- A job that raises on a worker is recorded by ``execute_job`` as failed with its error and cost.
  A worker process that dies (``WorkerCrashedError``, node died, out of memory) leaves its run
  ``running`` until its lease expires; any later docket command then marks it ``abandoned`` and
  keeps its cost. The outcome says ``abandoned`` and why. Dependants of a job that did not
  succeed are ``skipped`` with the reason (``dependency 'x' failed``).
- A pre-run refusal raised by ``execute_job`` on a worker (:class:`UserError`: unknown kind or
  hardware; :class:`CheckFailed`: budget, unmet dependency) stops new launches; in-flight jobs
  finish and are recorded, then the refusal is raised as on the local executor.
- Ledger rule: PostgreSQL for a cluster; SQLite only when every worker is on this machine (no
  address, ``"local"``, or an address whose nodes all turn out to be this machine). A SQLite
  ledger with a remote address is refused with :class:`UserError` (exit 2) before connecting.
- Ray: without an address (or ``"local"``) and no Ray already initialised in this process, a
  local Ray is started (``num_cpus`` = ``DOCKET_RAY_NUM_CPUS`` or the machine's CPU count, no
  dashboard) and shut down afterwards; an existing Ray connection is used and left running.
- Workers get ``DOCKET_ARTIFACTS`` (the driver's artifacts root, made absolute), ``DOCKET_LEASE_S``
  and ``DOCKET_HARDWARE`` when set, and the driver's working directory on ``PYTHONPATH`` (where a
  user's own job modules import from) and as ``DOCKET_WORKDIR`` (where ``command`` jobs run), via
  ``runtime_env``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from docketml.ledger.billing.hardware import hardware_config_path
from docketml.ledger.errors import CheckFailed, UserError
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import RunRow
from docketml.ledger.store.runs import lease_seconds
from docketml.protocols.schema import JobSpec, Protocol

from .artifacts import artifacts_root
from .executor import JobOutcome

OK_STATUSES = ("succeeded", "up_to_date")
LOCAL_ADDRESSES = (None, "", "local")


# --------------------------------------------------------------------------- the Ray task


def _job_task(
    url: str,
    protocol_pk: int,
    job_name: str,
    hardware: str | None,
    token: str,
    allow_over_budget: bool,
    over_budget_reason: str | None,
    device: str,
    seed: int | None = None,
) -> JobOutcome:
    """Runs inside a Ray worker: open the ledger from ``url`` and execute one job (with the
    replicate ``seed``, or None for a job without replicates)."""
    from docketml.ledger.store.db import open_ledger

    from .executor import execute_job

    ledger = open_ledger(url)
    try:
        return execute_job(
            ledger,
            protocol_pk,
            job_name,
            hardware=hardware,
            worker=f"ray:{socket.gethostname()}:{os.getpid()}",
            token=token,
            allow_over_budget=allow_over_budget,
            over_budget_reason=over_budget_reason,
            device=device,
            seed=seed,
        )
    finally:
        ledger.engine.dispose()


_remote_job = ray.remote(max_retries=0)(_job_task)


# --------------------------------------------------------------------------- ledger / cluster rules


def worker_url(ledger: Ledger) -> str:
    """The ledger URL workers connect with: password kept, a relative SQLite path made absolute
    (a Ray worker's working directory is not the driver's)."""
    url = ledger.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    return url.render_as_string(hide_password=False)


def _address_host(address: str) -> str | None:
    """The host an address names (``ray://host:port``, ``host:port``), None for ``auto``."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):  # [v6]:port
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def _local_ips() -> set[str]:
    ips = {"127.0.0.1", "::1", "localhost", socket.gethostname()}
    for name in (socket.gethostname(), socket.getfqdn()):
        try:
            ips.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    try:
        ips.add(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - best effort; loopback is always there
        pass
    return ips


def _is_loopback(host: str | None, local: set[str]) -> bool:
    if host in (None, ""):
        return False
    if host in local:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _sqlite_refusal(ledger: Ledger, address: str, why: str) -> UserError:
    return UserError(
        f"the ledger is SQLite ({ledger.url}), which only works when every Ray worker runs on "
        f"this machine, but --address {address} {why}. Use a PostgreSQL ledger every node can "
        "reach (DOCKET_DB=postgresql+psycopg://user@host:5432/db, see docs/distributed.md), or "
        "drop --address to run on a local Ray."
    )


def check_ledger_for_address(ledger: Ledger, address: str | None) -> None:
    """Refuse, before connecting, a SQLite ledger with an address on another machine."""
    if ledger.dialect != "sqlite" or address in LOCAL_ADDRESSES or address == "auto":
        return
    assert address is not None
    if not _is_loopback(_address_host(address), _local_ips()):
        raise _sqlite_refusal(ledger, address, "points to a remote Ray cluster")


def _remote_nodes() -> list[str]:
    local = _local_ips()
    return sorted(
        {
            str(node.get("NodeManagerAddress"))
            for node in ray.nodes()
            if node.get("Alive") and not _is_loopback(node.get("NodeManagerAddress"), local)
        }
    )


def check_cluster(ledger: Ledger, address: str | None) -> None:
    """After connecting: SQLite needs every node on this machine; a PostgreSQL URL on loopback
    cannot be reached by workers on other machines."""
    if address in LOCAL_ADDRESSES:
        return
    remote = _remote_nodes()
    if not remote:
        return
    if ledger.dialect == "sqlite":
        raise _sqlite_refusal(ledger, str(address), f"has nodes on other machines ({remote[0]})")
    host = ledger.engine.url.host
    if host is None or _is_loopback(host, _local_ips()):
        raise UserError(
            f"the ledger URL {ledger.url} points to this machine ({host or 'a local socket'}), "
            f"which the cluster's other nodes ({', '.join(remote[:3])}) cannot reach: use the "
            "PostgreSQL server's network address in DOCKET_DB"
        )


def _worker_env(url: str) -> dict[str, str]:
    """Environment for the workers (see module docstring)."""
    env = {"DOCKET_ARTIFACTS": str(artifacts_root(url).expanduser().resolve())}
    for name in ("DOCKET_LEASE_S",):
        if os.environ.get(name):
            env[name] = os.environ[name]
    hw_file = hardware_config_path()
    if hw_file is not None:
        env["DOCKET_HARDWARE"] = str(hw_file.expanduser().resolve())
    # the driver's working directory: a user's own job code imports from there, as it does locally
    paths = [str(Path.cwd())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["DOCKET_WORKDIR"] = str(Path.cwd())  # where command / python jobs run (runners/jobs/user)
    return env


def _ray_num_cpus() -> int:
    value = os.environ.get("DOCKET_RAY_NUM_CPUS")
    return int(value) if value else max(1, os.cpu_count() or 1)


def _check_feasible(jobs: Iterable[JobSpec], *, local: bool) -> None:
    """A job asking for more CPUs/GPUs than any node has would wait forever: refuse it on a
    local Ray; on an existing cluster (which may autoscale) only warn."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for job in jobs:
        fits = any(
            r.get("CPU", 0) >= job.num_cpus and r.get("GPU", 0) >= job.num_gpus for r in nodes
        )
        if fits:
            continue
        best = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        message = (
            f"job {job.name!r} asks for num_cpus={job.num_cpus:g}, num_gpus={job.num_gpus:g} but "
            f"no Ray node has that much (largest: CPU {best.get('CPU', 0):g}, GPU "
            f"{best.get('GPU', 0):g})"
        )
        if local:
            raise UserError(message)
        print(f"docket: warning: {message}; it waits until the cluster grows", file=sys.stderr)


# --------------------------------------------------------------------------- progress


class _RayProgress:
    """One rich bar of jobs completed, listing the jobs in flight; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
            )
            self.task = self.progress.add_task("jobs", total=total)
            self.progress.start()

    def running(self, names: Iterable[str]) -> None:
        if self.progress is not None:
            names = sorted(names)
            shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
            self.progress.update(self.task, description=f"jobs (running: {shown or '-'})"[:70])

    def done(self, outcome: JobOutcome) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)
            self.progress.console.print(f"  {outcome.job}: {outcome.status}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# --------------------------------------------------------------------------- the driver


def _run_of_token(ledger: Ledger, token: str) -> RunRow | None:
    try:
        with ledger.session() as session:
            return session.scalars(
                select(RunRow).where(RunRow.worker.endswith(f"#{token}")).limit(1)
            ).first()
    except Exception:  # noqa: BLE001 - only used to enrich a failure report
        return None


def _crash_outcome(ledger: Ledger, spec: JobSpec, token: str, exc: BaseException) -> JobOutcome:
    """Outcome of a task whose worker died or that failed outside the job function."""
    run = _run_of_token(ledger, token)
    kind = type(exc).__name__
    first = (str(exc).strip().splitlines() or [kind])[0]
    if isinstance(exc, RayTaskError):  # execute_job itself raised (e.g. the ledger was unreachable)
        status = run.status if run is not None and run.status != "running" else "failed"
        detail = f"the Ray task raised {kind}: {first}"
    else:
        status = "abandoned"
        detail = f"the Ray worker died ({kind}: {first})"
    if run is not None and run.status == "running":
        detail += (
            f"; run {run.id} stays running until its lease expires (<= {lease_seconds():g} s "
            "after its last heartbeat), then the next docket writer marks it abandoned and keeps "
            "its cost"
        )
    elif run is None:
        detail += "; no run was recorded"
    return JobOutcome(
        spec.name,
        status,
        run_id=run.id if run is not None else None,
        wall_s=run.wall_s if run is not None else None,
        cost_micros=int(run.cost_micros or 0) if run is not None else 0,
        error=detail,
    )


def _refusal(exc: RayTaskError) -> BaseException | None:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, UserError | CheckFailed) else None


def run_with_ray(
    ledger: Ledger,
    protocol_pk: int,
    protocol: Protocol,
    jobs: list[JobSpec],
    *,
    done_before: set[Any],
    force: bool,
    hardware: str | None = None,
    address: str | None = None,
    show_progress: bool = True,
    allow_over_budget: bool = False,
    over_budget_reason: str | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Run ``jobs`` (a dependency-ordered plan of ``protocol``) on Ray; outcomes in plan order.

    ``done_before``: jobs (and ``(job, seed)`` pairs of replicated jobs) that already succeeded
    under this protocol version (``up_to_date`` unless ``force``). Outcomes come in plan order,
    a replicated job's in declared seed order. See the module docstring for the full contract.
    """
    check_ledger_for_address(ledger, address)
    url = worker_url(ledger)
    env = _worker_env(url)
    started = False
    if not ray.is_initialized():
        if address in LOCAL_ADDRESSES:
            ray.init(
                num_cpus=_ray_num_cpus(),
                include_dashboard=False,
                runtime_env={"env_vars": env},
                logging_level="warning",
            )
        else:
            try:
                ray.init(address=address, runtime_env={"env_vars": env}, logging_level="warning")
            except (ConnectionError, RuntimeError) as exc:
                raise UserError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        started = True
    try:
        check_cluster(ledger, address)
        _check_feasible(jobs, local=address in LOCAL_ADDRESSES)
        return _schedule(
            ledger,
            url,
            env,
            protocol_pk,
            jobs,
            done_before=done_before,
            force=force,
            hardware=hardware,
            show_progress=show_progress,
            allow_over_budget=allow_over_budget,
            over_budget_reason=over_budget_reason,
            on_outcome=on_outcome,
        )
    finally:
        if started:
            ray.shutdown()


def _schedule(
    ledger: Ledger,
    url: str,
    env: dict[str, str],
    protocol_pk: int,
    jobs: list[JobSpec],
    *,
    done_before: set[Any],
    force: bool,
    hardware: str | None,
    show_progress: bool,
    allow_over_budget: bool,
    over_budget_reason: str | None,
    on_outcome: Callable[[JobOutcome], None] | None,
) -> list[JobOutcome]:
    """The ready-set loop: launch what is ready, ``ray.wait`` for one completion, repeat. A unit
    is one run: ``(job, seed)``, seed None for a job without replicates."""
    in_plan = {job.name for job in jobs}
    units: list[tuple[JobSpec, int | None]] = [
        (spec, seed) for spec in jobs for seed in (spec.declared_seeds() or [None])
    ]
    left = {spec.name: len(spec.declared_seeds() or [None]) for spec in jobs}  # units not done
    outcomes: dict[tuple[str, int | None], JobOutcome] = {}
    why_not: dict[str, str] = {}  # job that did not succeed -> how dependants describe it
    pending = list(units)
    in_flight: dict[Any, tuple[JobSpec, int | None, str]] = {}
    refusal: BaseException | None = None
    bars = _RayProgress(show_progress, len(units))

    def record(outcome: JobOutcome, seed: int | None) -> None:
        outcomes[(outcome.job, seed)] = outcome
        left[outcome.job] -= 1
        if outcome.status not in OK_STATUSES and outcome.job not in why_not:
            why_not[outcome.job] = {
                "skipped": "was skipped",
                "abandoned": "was abandoned (its worker died)",
            }.get(outcome.status, outcome.status)
        bars.done(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        while pending or in_flight:
            progressed = True
            while progressed and refusal is None:
                progressed = False
                for spec, seed in list(pending):
                    deps = [d for d in spec.after if d in in_plan]
                    blocked = [d for d in deps if d in why_not]
                    if blocked:
                        error = f"dependency {blocked[0]!r} {why_not[blocked[0]]}"
                        record(JobOutcome(spec.name, "skipped", error=error, seed=seed), seed)
                    elif any(left[d] for d in deps):
                        continue  # a dependency (one of its seeds) is still pending or running
                    elif (spec.name if seed is None else (spec.name, seed)) in done_before and (
                        not force
                    ):
                        record(JobOutcome(spec.name, "up_to_date", seed=seed), seed)
                    else:
                        token = uuid.uuid4().hex[:12]
                        label = spec.name if seed is None else f"{spec.name}@seed{seed}"
                        ref = _remote_job.options(
                            num_cpus=spec.num_cpus,
                            num_gpus=spec.num_gpus,
                            runtime_env={"env_vars": env},
                            name=f"docket:{label}",
                        ).remote(
                            url,
                            protocol_pk,
                            spec.name,
                            hardware,
                            token,
                            allow_over_budget,
                            over_budget_reason,
                            "cuda" if spec.num_gpus > 0 else "cpu",
                            seed,
                        )
                        in_flight[ref] = (spec, seed, token)
                    pending.remove((spec, seed))
                    progressed = True
            if not in_flight:
                if pending and refusal is None:  # cannot happen for a validated (acyclic) plan
                    names = ", ".join(dict.fromkeys(s.name for s, _ in pending))
                    raise UserError(f"jobs whose dependencies can never run: {names}")
                break
            bars.running(spec.name for spec, _, _ in in_flight.values())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                spec, seed, token = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayTaskError as exc:
                    cause = _refusal(exc)
                    if cause is not None:
                        refusal = refusal or cause
                        continue
                    outcome = _crash_outcome(ledger, spec, token, exc)
                except RayError as exc:  # the worker process or its node died
                    outcome = _crash_outcome(ledger, spec, token, exc)
                if seed is not None:
                    outcome.seed = seed
                record(outcome, seed)
    finally:
        bars.close()
        if in_flight:  # only on an error of the driver itself: do not leave tasks behind
            for ref in in_flight:
                ray.cancel(ref, force=True)
    if refusal is not None:
        raise refusal
    return [outcomes[(spec.name, seed)] for spec, seed in units if (spec.name, seed) in outcomes]
