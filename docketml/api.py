"""The public Python API: your own code recording into the ledger under a frozen protocol.

``start_run(protocol, job)`` opens a run through the SAME lifecycle the built-in jobs use
(:func:`docketml.runners.execute.executor.open_job` / ``finish_job``): refused unless the latest
version of ``protocol`` is frozen and declares ``job``; the budget is checked before the run
exists; the run is bound to the frozen version's sha256 and holds a lease that a background
heartbeat extends; wall time is metered at the job's hardware rate. Leaving the ``with`` normally
writes every observation, metric and the knob audit in one transaction (``succeeded``, or
``silent_noop`` when a non-default knob never fired); an exception writes ``failed`` with the
error and is re-raised; a killed process is reaped as ``abandoned`` after its lease.

Three ways a :class:`Run` comes to be (one class, see docs/api.md):

* **owned**: ``with start_run("p", job="j")`` in your own script opens and ends the run itself;
* **attached**: a ``python`` job (``entry: "module:function"``) run by ``docket run`` is called
  with the executor's Run; ``start_run()`` inside it returns that same Run;
* **child**: a ``command`` job's subprocess gets ``DOCKET_DB``, ``DOCKET_RUN_ID``,
  ``DOCKET_PROTOCOL``, ``DOCKET_JOB`` and ``DOCKET_SPOOL``; ``start_run()`` there (no arguments
  needed) records into a spool file the parent ``docket run`` writes into the ledger when the
  child exits 0. The parent owns the lease, so a SIGKILLed child fails the run, and a killed
  parent leaves it to be reaped as abandoned.

Validation at write time (:class:`DocketError` naming the field; nothing of that call is kept):
a group the protocol does not declare (when it declares groups), a signal it does not declare, a
label that is not 0/1/its class names or contradicts a regime, a NaN or infinite value, a
duplicate (group, item, signal), or any write after the run ended.
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from docketml.ledger.errors import DocketError, UserError
from docketml.ledger.results import MetricValue
from docketml.protocols.schema import JobSpec, Protocol
from docketml.runners.context import JobResult, KnobAudit

ENV_DB, ENV_RUN_ID, ENV_PROTOCOL, ENV_JOB, ENV_SPOOL = (
    "DOCKET_DB",
    "DOCKET_RUN_ID",
    "DOCKET_PROTOCOL",
    "DOCKET_JOB",
    "DOCKET_SPOOL",
)
SPOOL_NAME = "docket-spool.json"

_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("docket_run", default=None)


def _finite(field: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        try:
            value = float(raw)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise UserError(f"{field}: expected a finite number, found {raw!r}") from None
    else:
        value = float(raw)
    if not math.isfinite(value):
        raise UserError(f"{field}: expected a finite number, found {raw!r} (NaN/inf are refused)")
    return value


class Run:
    """One run of one job of a frozen protocol (see module docstring). ``id`` is the ledger run id.

    Writes are buffered in memory and become visible all at once when the run ends."""

    def __init__(
        self,
        *,
        run_id: int,
        protocol: Protocol,
        job: JobSpec,
        knobs: KnobAudit,
        artifacts_root: Path,
        artifacts_dir: Path,
        seed: int,
        inputs: Mapping[str, Path] | None = None,
    ) -> None:
        from docketml.ledger.ingest import _Labeler

        self._id = run_id
        self.protocol = protocol
        self.job = job
        self.knobs = knobs
        self.seed = seed
        self.inputs = dict(inputs or {})
        self.artifacts_dir = artifacts_dir
        self._root = artifacts_root
        self._groups = frozenset(protocol.groups)
        self._signals = frozenset(protocol.signals)
        self._labeler = _Labeler(protocol)
        self._observations: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._metrics: list[MetricValue] = []
        self._texts: dict[str, str] = {}
        self._checkpoint: Path | None = None
        self._checkpoints: list[dict[str, str]] = []
        self._ended = False
        self.outcome: Any = None  # the executor's JobOutcome once an owned run ended

    @property
    def id(self) -> int:
        """The ledger run id (``docket runs`` / ``docket run-show``)."""
        return self._id

    @property
    def params(self) -> dict[str, Any]:
        """The job's params as declared in the frozen protocol."""
        return dict(self.job.params)

    def _open(self, what: str) -> None:
        if self._ended:
            raise UserError(f"run {self._id}: {what} after the run ended (nothing was written)")

    # ------------------------------------------------------------------ knobs
    def knob(self, name: str, default: Any = None) -> Any:
        """The knob's value from the protocol's ``params`` for this job, else ``default``.

        ``default`` is recorded as the knob's default for the audit: a param set to a different
        value must be :meth:`fire`-d where it takes effect, or the run is ``silent_noop``."""
        self._open(f"knob({name!r})")
        if default is not None and name not in self.knobs.defaults:
            self.knobs.set_defaults({name: default})
        return self.knobs.get(name, default)

    def fire(self, name: str) -> None:
        """Report that the code path where knob ``name`` changes behaviour ran."""
        self._open(f"fire({name!r})")
        self.knobs.fire(name)

    # ------------------------------------------------------------------ observations
    def _row(self, group: Any, item: Any, signal: Any, value: Any, label: Any) -> dict[str, Any]:
        if not isinstance(group, str) or not group:
            raise UserError(f"group: expected a non-empty string, found {group!r}")
        if self._groups and group not in self._groups:
            raise UserError(
                f"group: {group!r} is not declared by protocol {self.protocol.id}; expected one "
                f"of: {', '.join(self.protocol.groups)}"
            )
        if isinstance(item, bool) or not isinstance(item, str | int) or str(item) == "":
            raise UserError(f"item: expected a non-empty string or integer, found {item!r}")
        if not isinstance(signal, str) or not self.protocol.declares_signal(signal):
            known = ", ".join(sorted(self._signals)) or "(none declared)"
            raise UserError(
                f"signal: {signal!r} is not declared by protocol {self.protocol.id}; expected "
                f"one of: {known}"
            )
        number = _finite("value", value)
        lab, why = self._labeler.parse(label, group)
        if why:
            raise UserError(f"label: {why}")
        return {"group": group, "item": str(item), "label": lab, "signal": signal, "value": number}

    def observe(
        self, *, group: str, item: str | int, signal: str, value: float, label: Any = None
    ) -> None:
        """Record one per-sample value of a declared ``signal`` (see module docstring)."""
        self._open("observe()")
        row = self._row(group, item, signal, value, label)
        key = (row["group"], row["item"], signal)
        if key in self._seen:
            raise UserError(f"item: duplicate {key!r} (group, item, signal) in run {self._id}")
        self._seen.add(key)
        self._observations.append(row)

    def observe_many(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """The bulk path: every row (dicts with group, item, signal, value, optional label) is
        validated first; one bad row refuses the whole call (nothing of it kept). Returns the
        number of rows recorded."""
        self._open("observe_many()")
        accepted: list[dict[str, Any]] = []
        seen = self._seen
        fresh: set[tuple[str, str, str]] = set()
        make = self._row
        for n, raw in enumerate(rows):
            try:
                row = make(raw["group"], raw["item"], raw["signal"], raw["value"], raw.get("label"))
            except KeyError as exc:
                raise UserError(
                    f"rows[{n}]: missing key {exc.args[0]!r}; expected group, item, signal, value "
                    "and optionally label"
                ) from None
            except UserError as exc:
                raise UserError(f"rows[{n}].{exc}") from None
            key = (row["group"], row["item"], row["signal"])
            if key in seen or key in fresh:
                raise UserError(f"rows[{n}].item: duplicate {key!r} (group, item, signal)")
            fresh.add(key)
            accepted.append(row)
        seen |= fresh
        self._observations.extend(accepted)
        return len(accepted)

    # ------------------------------------------------------------------ metrics, texts, files
    def metric(
        self,
        name: str,
        value: float,
        *,
        step: int | None = None,
        ci_low: float | None = None,
        ci_high: float | None = None,
    ) -> None:
        """A scalar metric; with ``step`` a point of a trajectory (the highest step counts as the
        final value unless a step-less row exists: docketml.ledger.store.results)."""
        self._open(f"metric({name!r})")
        if not isinstance(name, str) or not name:
            raise UserError(f"metric name: expected a non-empty string, found {name!r}")
        number = _finite(f"metric {name!r} value", value)
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise UserError(f"metric {name!r} step: expected an integer >= 0, found {step!r}")
        lo = None if ci_low is None else _finite(f"metric {name!r} ci_low", ci_low)
        hi = None if ci_high is None else _finite(f"metric {name!r} ci_high", ci_high)
        self._metrics.append(MetricValue(name, number, lo, hi, step))

    def text(self, item: str, text: str) -> None:
        """A generated text for ``item`` (kept with the run)."""
        self._open("text()")
        self._texts[str(item)] = str(text)

    def checkpoint(self, path: str | os.PathLike[str]) -> str:
        """Copy ``path`` into the content-addressed store (``<artifacts>/sha256/``); return its
        sha256. The last checkpoint is the run's (dependants get it as an input)."""
        from docketml.runners.execute.artifacts import store_checkpoint

        self._open("checkpoint()")
        file = Path(path)
        if not file.is_file():
            raise UserError(f"checkpoint: {str(file)!r} is not a file")
        digest, stored = store_checkpoint(self._root, file)
        self._checkpoint = file
        self._checkpoints.append({"file": str(file.resolve()), "sha256": digest})
        return digest

    # ------------------------------------------------------------------ hand-over
    def _result(self) -> JobResult:
        extra: dict[str, Any] = {"source": "docketml.api"}
        if len(self._checkpoints) > 1:
            extra["checkpoints"] = self._checkpoints
        return JobResult(
            metrics=list(self._metrics),
            texts=dict(self._texts),
            checkpoint=self._checkpoint,
            extra=extra,
            extra_observations=self._observations,
        )

    def _spool(self, path: Path, error: str | None = None) -> None:
        """Write everything recorded to ``path`` (child of a command job); ``error``: the
        exception that ended the ``with`` (the parent fails the run with it)."""
        data = {
            "error": error,
            "observations": [
                [o["group"], o["item"], o["label"], o["signal"], o["value"]]
                for o in self._observations
            ],
            "metrics": [m.__dict__ for m in self._metrics],
            "texts": self._texts,
            "checkpoints": self._checkpoints,
            "knob_defaults": self.knobs.defaults,
            "fired": self.knobs.fired_counts,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, default=str))
        tmp.replace(path)


def read_spool(path: Path, knobs: KnobAudit) -> JobResult:
    """The parent's side of a command job: the child's spool as a JobResult; its knob defaults
    and fire counts are merged into ``knobs``. A spool recording an exception raises (the run
    fails) even when the child exited 0."""
    data = json.loads(path.read_text())
    if data.get("error"):
        raise RuntimeError(f"the command's docketml run ended with an exception: {data['error']}")
    knobs.set_defaults(data["knob_defaults"])
    for name, count in data["fired"].items():
        knobs.fired_counts[name] = knobs.fired_counts.get(name, 0) + int(count)
    cols = ("group", "item", "label", "signal", "value")
    observations = [dict(zip(cols, row, strict=True)) for row in data["observations"]]
    metrics = [MetricValue(**m) for m in data["metrics"]]
    ckpts = data["checkpoints"]
    extra: dict[str, Any] = {"source": "docketml.api (command child)"}
    if len(ckpts) > 1:
        extra["checkpoints"] = ckpts
    return JobResult(
        metrics=metrics,
        texts=data["texts"],
        checkpoint=Path(ckpts[-1]["file"]) if ckpts else None,
        extra=extra,
        extra_observations=observations,
    )


# ---------------------------------------------------------------------- ledger + protocol lookups


def _ledger(ledger: Any) -> Any:
    from docketml.ledger.store.db import Ledger, LedgerError, open_ledger

    if isinstance(ledger, Ledger):
        return ledger
    try:
        return open_ledger(ledger)
    except LedgerError as exc:
        raise UserError(str(exc)) from None


def _frozen_row(session: Any, protocol_id: str) -> Any:
    from docketml.ledger.store import protocols as store

    row = store.latest_frozen(session, protocol_id)  # unknown -> UserError, unfrozen -> CheckFailed
    newest = store.latest(session, protocol_id)
    if newest.id != row.id:
        raise UserError(
            f"protocol {protocol_id!r}: frozen v{row.version} was amended (v{newest.version} is "
            f"not frozen); freeze it first (docket protocol freeze {protocol_id})"
        )
    return row


def _declared_job(protocol: Protocol, version: int, job: str | None) -> JobSpec:
    names = [j.name for j in protocol.jobs]
    if job is None:
        raise UserError(
            f"start_run({protocol.id!r}): job is required; protocol declares: "
            + (", ".join(names) or "(no jobs)")
        )
    try:
        return protocol.job(job)
    except KeyError:
        raise UserError(
            f"job: protocol {protocol.id!r} v{version} declares no job {job!r}; expected one of: "
            + (", ".join(names) or "(no jobs)")
        ) from None


# ---------------------------------------------------------------------- start_run


@contextmanager
def start_run(
    protocol: str | None = None,
    job: str | None = None,
    *,
    ledger: Any = None,
    hardware: str | None = None,
    seed: int | None = None,
) -> Iterator[Run]:
    """Open a run of ``job`` under the latest frozen version of ``protocol`` (module docstring).

    ``seed``: for a job that declares ``replicates``, which of its seeds this run is (default:
    its first declared seed; another value is refused); for other jobs leave it unset.

    ``ledger``: a URL, an open ``Ledger``, or None for ``DOCKET_DB`` / the default SQLite ledger.
    With no arguments inside a ``python`` job or a ``command`` job's child, attaches to that run
    (given arguments must then match it). Raises :class:`DocketError` for an unknown, unfrozen or
    amended protocol, an undeclared job, or a budget refusal (before any run is recorded)."""
    current = _CURRENT.get()
    if current is not None:
        _check_match(protocol, job, current.protocol.id, current.job.name)
        yield current
        return
    if os.environ.get(ENV_RUN_ID) and os.environ.get(ENV_SPOOL):
        with _child_run(protocol, job, ledger) as run:
            yield run
        return
    with _owned_run(protocol, job, ledger, hardware, seed) as run:
        yield run


def _check_match(protocol: str | None, job: str | None, have_p: str, have_j: str) -> None:
    if (protocol is not None and protocol != have_p) or (job is not None and job != have_j):
        raise UserError(
            f"start_run({protocol!r}, job={job!r}) inside the run of job {have_j!r} of "
            f"{have_p!r}: call start_run() without arguments there"
        )


@contextmanager
def _owned_run(
    protocol_id: str | None,
    job_name: str | None,
    ledger_arg: Any,
    hardware: str | None,
    seed: int | None = None,
) -> Iterator[Run]:
    from docketml.ledger.store import protocols as store
    from docketml.runners.execute.artifacts import run_dir
    from docketml.runners.execute.executor import Heartbeat, finish_job, open_job

    if not protocol_id:
        raise UserError("start_run: protocol is required (outside a docket job)")
    ledger = _ledger(ledger_arg)
    with ledger.session() as session:
        row = _frozen_row(session, protocol_id)
        protocol = store.parse_row(row)
        _declared_job(protocol, row.version, job_name)
        pk = row.id
    opened = open_job(
        ledger,
        pk,
        str(job_name),
        hardware=hardware,
        worker=f"api:{socket.gethostname()}",
        seed=seed,
    )
    knobs = KnobAudit(opened.job.params)
    run = Run(
        run_id=opened.run_id,
        protocol=protocol,
        job=opened.job,
        knobs=knobs,
        artifacts_root=opened.root,
        artifacts_dir=run_dir(opened.root, opened.run_id),
        seed=opened.seed,
        inputs=opened.inputs,
    )
    beat = Heartbeat(ledger, opened.run_id, opened.lease_s)
    beat.start()
    started = time.perf_counter()
    token = _CURRENT.set(run)

    def stop() -> float:
        wall = time.perf_counter() - started
        beat.stopped.set()
        beat.join(timeout=5)
        run._ended = True
        _CURRENT.reset(token)
        return wall

    try:
        yield run
    except BaseException as exc:
        wall = stop()
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=8))
        run.outcome = finish_job(ledger, opened, result=None, knobs=knobs, wall_s=wall, error=error)
        raise
    wall = stop()
    run.outcome = finish_job(ledger, opened, result=run._result(), knobs=knobs, wall_s=wall)


@contextmanager
def _child_run(protocol_id: str | None, job_name: str | None, ledger_arg: Any) -> Iterator[Run]:
    """Inside a command job's subprocess: a Run over the parent's run, spooled to a file."""
    from docketml.ledger.store import protocols as store
    from docketml.ledger.store.models import ProtocolRow, RunRow
    from docketml.runners.execute.artifacts import artifacts_root

    run_id = int(os.environ[ENV_RUN_ID])
    spool = Path(os.environ[ENV_SPOOL])
    _check_match(
        protocol_id, job_name, os.environ.get(ENV_PROTOCOL, ""), os.environ.get(ENV_JOB, "")
    )
    ledger = _ledger(ledger_arg or os.environ.get(ENV_DB))
    with ledger.session() as session:
        row = session.get(RunRow, run_id)
        if row is None or row.status != "running":
            raise UserError(f"{ENV_RUN_ID}={run_id}: no running run with that id in the ledger")
        prow = session.get(ProtocolRow, row.protocol_pk)
        protocol = store.parse_row(prow)
        spec = protocol.job(row.job)
        seed = int(row.seed if row.seed is not None else protocol.seed)
    url = str(ledger.engine.url.render_as_string(hide_password=False))
    run = Run(
        run_id=run_id,
        protocol=protocol,
        job=spec,
        knobs=KnobAudit(spec.params),
        artifacts_root=artifacts_root(url),
        artifacts_dir=spool.parent,
        seed=seed,
    )
    token = _CURRENT.set(run)
    try:
        yield run
    except BaseException as exc:
        # recorded even if the script catches it and exits 0: the parent then fails the run
        run._spool(spool, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        run._ended = True
        _CURRENT.reset(token)
    run._spool(spool)


@contextmanager
def attach(run: Run) -> Iterator[Run]:
    """Make ``run`` the current run (``start_run()`` returns it) while a python job runs."""
    token = _CURRENT.set(run)
    try:
        yield run
    finally:
        _CURRENT.reset(token)


# ---------------------------------------------------------------------- verdict, protocols


def verdict(protocol: str, *, ledger: Any = None) -> dict[str, Any]:
    """Compute and record the verdict of ``protocol``'s latest frozen version: the same dict
    ``docket verdict PROTOCOL --json`` prints."""
    from docketml.ledger.verdicts import verdict_outside_lock

    return verdict_outside_lock(_ledger(ledger), protocol)


def load_protocol(source: str | os.PathLike[str], *, ledger: Any = None) -> Protocol:
    """A validated :class:`Protocol`: from a YAML file if ``source`` is an existing path, else
    the latest version of that protocol id in the ledger. An invalid file raises
    ``InvalidProtocol`` (a :class:`DocketError`) listing every problem with its line."""
    from docketml.ledger.errors import InvalidProtocol
    from docketml.protocols import load_protocol_file
    from docketml.protocols.errors import ProtocolErrors

    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            return load_protocol_file(path).protocol
        except ProtocolErrors as exc:
            raise InvalidProtocol(exc.errors) from None
    from docketml.ledger.store import protocols as store

    led = _ledger(ledger)
    with led.session() as session:
        return store.parse_row(store.latest(session, str(source)))


__all__ = ["DocketError", "Run", "attach", "load_protocol", "read_spool", "start_run", "verdict"]
