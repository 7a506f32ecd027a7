"""Computing, recording and auditing verdicts from the ledger.

Contract of :func:`compute_verdict`:

* The verdict uses the protocol's **latest frozen version** and only runs bound to its exact
  sha256 with status ``succeeded``. Runs bound to any other version of the protocol are ignored;
  the result says how many (per version) and lists the amendment chain.
* Which runs feed a rule (see :func:`ledger.rules.rule_sources`):
    - a rule with ``job: X`` (and each job of a ``non_inferiority`` rule) reads the runs of X
      chosen by X's ``select`` policy, :func:`select_runs` (default ``first``: the **earliest
      succeeded run of X**, never replaced by a rerun; an ingest run recorded with ``--job X``
      counts as a run of X);
    - a rule without ``job:`` reads the chosen runs of **every job with a succeeded run**,
      merged in the order of each job's first used run
      (:func:`docketml.ledger.store.results.load_parts`, which also decides which metric row of
      a run counts and how ``select: all`` pools replicates).
* Reruns are shown: ``selection`` lists, per job, every succeeded run and the ones used;
  ``reruns`` has one sentence per job with more succeeded runs than the protocol declared
  ("3 runs of probe_v7 exist (1 declared); the verdict used #8 under select: first").
* ``silent_noop`` runs taint: if the run of record of a job a source depends on -- the run(s)
  :func:`select_runs` picks from its finished (succeeded or silent_noop) runs, so by default its
  first finished run, never its latest -- is ``silent_noop`` (the jobs: the source's job itself
  and, for runner-produced data, its ``after:`` ancestors; for the merged source, every job with
  runs), each rule reading that source is INCONCLUSIVE, naming the run and the knobs that never
  took effect. A later silent_noop rerun does not taint a verdict that never reads it.
* The verdict is recorded in ``verdicts`` with ``inputs_sha256`` =
  :func:`docketml.ledger.store.inputs_digest.inputs_sha256` of its sources, in the format
  :func:`inputs_format` picks (``details_json["inputs_format"]``). ``details_json`` keeps the
  full result and the run ids of every source (and, in ``inputs.parts``, which of them were
  pooled), so
  :func:`recompute_inputs_sha256` can re-derive the hash from the current observation rows (the
  audit compares the two to detect tampering).
* Reading streams (:func:`read_sources`): each source's effective observations arrive one group
  at a time from one ordered query (:func:`docketml.ledger.store.stream.iter_groups`) and go
  straight into the engine's per-group arrays and into the incremental ``inputs_sha256``
  (:func:`docketml.ledger.store.inputs_digest.inputs_hasher`, the same digest as
  :func:`docketml.ledger.store.inputs_digest.inputs_sha256`). No Python object per observation is
  kept: memory is the engine's arrays (one float per item and signal, one ``str`` per item)
  plus the largest group's rows.
* Locking (:func:`verdict_outside_lock`, what ``docket verdict`` and ``docketml.api.verdict``
  call): the verdict is read and computed in a read-only snapshot, which holds no write lock
  (SQLite's ``BEGIN IMMEDIATE`` would make every other writer wait for the whole verdict), and
  recorded in a short write transaction. If :func:`verdict_stamp` (the version rows and every
  run bound to them, with status and finish time) moved in between, it is computed again inside
  the write transaction, so the result is always that of the ledger it was recorded in.
* ``log_head`` (:func:`docketml.ledger.integrity.heads.head_record`): the Merkle log head the
  verdict was computed at (tree size, root hash, and the signed tree head when a signing key is
  available), stored in ``details_json``. It is not part of the look rule (a repeated look at
  the same inputs stays a look, :mod:`docketml.ledger.store.looks`) nor of the re-derivation the
  audit compares (:func:`rederive_verdict`). A look returns the head it saw as ``log_head`` and
  the recorded verdict's as ``verdict_log_head``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.protocols.schema import Protocol

from .integrity.heads import head_record
from .results import MetricValue
from .store import looks, merkle_log
from .store import protocols as store
from .store.inputs_digest import INPUTS_FORMATS, LATEST_INPUTS_FORMAT, inputs_hasher
from .store.models import ProtocolRow, RunRow, VerdictRow, utcnow
from .store.results import SourcePayload, load_parts, part_metrics
from .store.stream import GroupBlock, flat_runs, iter_groups, payload_blocks, streamable
from .verdict.rules import (
    Dataset,
    GroupSamples,
    SourceData,
    evaluate,
    headline_rule,
    headline_statistic,
    rule_sources,
)
from .verdict.stats import ENGINE_VERSIONS, LATEST_ENGINE

if TYPE_CHECKING:
    from .store.db import Ledger

ALL_RUNS = "*"  # the key of the merged source in details / canonical inputs


def _source_key(job: str | None) -> str:
    return ALL_RUNS if job is None else f"job:{job}"


def _to_source(payload: SourcePayload, name: str, problems: Sequence[str]) -> SourceData:
    rows = [(g, i, lab, s, v) for (g, i, s), (lab, v) in payload.observations.items()]
    metrics = {n: MetricValue(n, v, lo, hi) for n, (v, lo, hi) in payload.metrics.items()}
    return SourceData.from_rows(
        rows, metrics, run_ids=payload.run_ids, problems=problems, name=name
    )


def _group_samples(block: GroupBlock, nonfinite: dict[tuple[str, str], int]) -> GroupSamples | None:
    """One group's engine arrays from its effective observations, as
    :meth:`SourceData.from_rows` shapes them (items sorted, signals sorted, NaN = not recorded,
    non-finite values counted in ``nonfinite`` and stored as NaN); None when an item carries
    different labels on different signals (from_rows then keeps the label of the item's last
    row in dict order: the caller uses that path)."""
    n = len(block)
    new = np.ones(n, dtype=bool)
    new[1:] = block.items[1:] != block.items[:-1]
    index = np.cumsum(new) - 1
    labels = np.where(np.equal(block.labels, None), -1, block.labels).astype(np.int64)
    item_labels = labels[new]
    if n and bool((labels != item_labels[index]).any()):
        return None
    items = tuple(block.items[new].tolist())
    values: dict[str, np.ndarray] = {}
    for signal in sorted(set(block.signals.tolist())):
        mask = block.signals == signal
        got = block.values[mask]
        finite = np.isfinite(got)
        if not finite.all():
            nonfinite[(block.group, signal)] = int((~finite).sum())
        column = np.full(len(items), np.nan)
        column[index[mask]] = np.where(finite, got, np.nan)
        values[signal] = column
    return GroupSamples(items, item_labels.astype(np.int8), values)


@dataclass
class SourceSpec:
    """What to read for one source key: its parts and, when the engine needs it, the name and
    problems of its :class:`SourceData` (``build``)."""

    parts: list[list[int]]
    build: bool = False
    name: str = "the data"
    problems: list[str] = field(default_factory=list)


def read_sources(
    session: Session,
    specs: dict[str, SourceSpec],
    inputs_format: int = LATEST_INPUTS_FORMAT,
    *,
    from_rows: bool = False,
) -> tuple[str, dict[str, SourceData]]:
    """Stream every source of ``specs`` once, in sorted key order: returns the verdict's
    ``inputs_sha256`` in ``inputs_format`` (identical to
    :func:`docketml.ledger.store.inputs_digest.inputs_sha256` of their :func:`load_parts`
    payloads) and the :class:`SourceData` of the keys marked ``build``. A verdict reads the
    runs' stored columns where they exist (:mod:`docketml.ledger.store.stream`); the audit
    passes ``from_rows`` to recompute from the observation rows themselves."""
    hasher = inputs_hasher(inputs_format)
    built: dict[str, SourceData] = {}
    for key in sorted(specs):
        spec = specs[key]
        metrics = part_metrics(session, spec.parts)
        run_ids = flat_runs(spec.parts)
        hasher.begin(key, metrics, run_ids)
        if streamable(spec.parts):
            blocks: Iterable[GroupBlock] = iter_groups(session, spec.parts, from_rows=from_rows)
            payload = None
        else:
            payload = load_parts(session, spec.parts)
            blocks = payload_blocks(payload)
        groups: dict[str, GroupSamples] = {}
        nonfinite: dict[tuple[str, str], int] = {}
        exact = spec.build
        for block in blocks:
            hasher.rows(block.group, block.items, block.signals, block.labels, block.values)
            if exact:
                samples = _group_samples(block, nonfinite)
                if samples is None:
                    exact = False
                    groups.clear()
                else:
                    groups[block.group] = samples
        hasher.end()
        if not spec.build:
            continue
        if exact:
            built[key] = SourceData(
                groups,
                {n: MetricValue(n, v, lo, hi) for n, (v, lo, hi) in metrics.items()},
                tuple(run_ids),
                tuple(spec.problems),
                spec.name,
                nonfinite,
            )
        else:  # labels differ across an item's signals: from_rows' dict-order rule decides
            payload = payload or load_parts(session, spec.parts)
            built[key] = _to_source(payload, spec.name, spec.problems)
    return hasher.hexdigest(), built


def _ancestors(protocol: Protocol, job: str) -> list[str]:
    names = {j.name for j in protocol.jobs}
    seen: list[str] = []
    stack = [job]
    while stack:
        cur = stack.pop()
        if cur not in names:
            continue
        for dep in protocol.job(cur).after:
            if dep not in seen:
                seen.append(dep)
                stack.append(dep)
    return seen


def _aware(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values from SQLite are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _noop_message(run: RunRow) -> str:
    knobs = json.loads(run.silent_noop_knobs) if run.silent_noop_knobs else []
    what = ", ".join(knobs) if knobs else "(unnamed)"
    return (
        f"run #{run.id} of job {run.job!r} is silent_noop: knob(s) {what} were set but never "
        "took effect, so its results cannot support a verdict"
    )


@dataclass
class JobSelection:
    """Which runs of one job feed the verdict, under its ``select`` policy (:func:`select_runs`)."""

    job: str
    select: str
    seeds: list[int] | None  # the declared replicate seeds (None: no replicates declared)
    runs: list[int]  # every succeeded run of the job bound to the version, id order
    parts: list[list[int]] = field(default_factory=list)  # used runs; a part is pooled
    missing_seeds: list[int] = field(default_factory=list)
    headline: dict[str, float | None] = field(default_factory=dict)  # median_of: seed -> value
    problem: str | None = None

    @property
    def used(self) -> list[int]:
        return [rid for part in self.parts for rid in part]

    def note(self) -> str | None:
        """The rerun sentence, e.g. ``3 runs of probe_v7 exist (1 declared); the verdict used #8
        under select: first``, when more succeeded runs exist than the protocol declared (one per
        seed, or one); else None."""
        declared = len(self.seeds) if self.seeds is not None else 1
        if len(self.runs) <= declared:
            return None
        used = ", ".join(f"#{r}" for r in self.used) or "no run"
        return (
            f"{len(self.runs)} runs of {self.job} exist ({declared} declared); the verdict used "
            f"{used} under select: {self.select}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "select": self.select,
            "seeds": self.seeds,
            "runs": self.runs,
            "used": self.used,
            "missing_seeds": self.missing_seeds,
            "headline": self.headline,
            "problem": self.problem,
            "note": self.note(),
        }


def select_runs(
    session: Session, protocol: Protocol, job: str, succeeded: Sequence[RunRow]
) -> JobSelection:
    """THE rule of which succeeded runs of ``job`` feed a verdict (``succeeded``: the version's
    succeeded runs, id order; runs of other jobs are ignored). Defined once, here:

    * no ``replicates``: the job's earliest succeeded run (``select: first``); a rerun (``docket
      run --force``, a second ``docket ingest --job``) never replaces it.
    * ``replicates: {seeds: [...]}``: a run counts for seed S if its ``seed`` is S, and only the
      earliest succeeded run of each declared seed is a replicate (runs of undeclared seeds and
      later runs of a seed are never used).

      - ``first``: the earliest of those replicates.
      - ``all``: every declared seed's replicate, pooled per item
        (:func:`docketml.ledger.store.results.pool_payloads`: the mean of an item's value over the
        replicates); a declared seed without a succeeded run makes the source unavailable (its
        rules INCONCLUSIVE) naming the missing seed(s).
      - ``median_of``: every declared seed needs a replicate (else as ``all``); each replicate's
        headline statistic (:func:`docketml.ledger.verdict.rules.headline_statistic`) is computed
        on its data alone, the replicates are sorted by (value, declared seed order) and the one
        at index ``(n - 1) // 2`` is used (the median for odd n, the lower median for even n).

    A job that is not declared (the default ingest job) is treated as a job without replicates.
    """
    spec = next((j for j in protocol.jobs if j.name == job), None)
    policy = spec.selection() if spec is not None else "first"
    seeds = spec.declared_seeds() if spec is not None else None
    mine = [r for r in succeeded if r.job == job]
    sel = JobSelection(job, policy, seeds, [r.id for r in mine])
    if seeds is None:
        sel.parts = [[mine[0].id]] if mine else []
        return sel
    first: dict[int, RunRow] = {}
    for r in mine:
        if r.seed in seeds and r.seed not in first:
            first[int(r.seed)] = r
    if policy == "first":
        sel.parts = [[min(r.id for r in first.values())]] if first else []
        return sel
    sel.missing_seeds = [s for s in seeds if s not in first]
    if sel.missing_seeds:
        sel.problem = (
            f"job {job!r} declares replicates {seeds} under select: {policy}; no succeeded run "
            f"of seed(s) {', '.join(map(str, sel.missing_seeds))}"
        )
        return sel
    if policy == "all":
        sel.parts = [[first[s].id for s in seeds]]
        return sel
    ranked: list[tuple[float, int, int]] = []
    for k, s in enumerate(seeds):
        rid = first[s].id
        _, built = read_sources(session, {"r": SourceSpec([[rid]], True, f"run #{rid}")})
        src = built["r"]
        value = headline_statistic(protocol, job, src)
        sel.headline[str(s)] = value
        if value is None:
            sel.problem = (
                f"job {job!r} (select: median_of): the headline statistic "
                f"({headline_rule(protocol, job)}) cannot be computed on seed {s} (run #{rid})"
            )
        ranked.append((math.inf if value is None else value, k, rid))
    if sel.problem is None:
        ranked.sort()
        sel.parts = [[ranked[(len(ranked) - 1) // 2][2]]]
    return sel


@dataclass
class LoadedData:
    """What :func:`load_dataset` found for one frozen protocol version."""

    dataset: Dataset
    inputs_sha256: str
    sources: dict[str, list[int]]  # per source key, its run ids (parts flattened)
    runs: list[RunRow]  # every succeeded run of the version, id order
    parts: dict[str, list[list[int]]] = field(default_factory=dict)  # per source key
    selections: dict[str, JobSelection] = field(default_factory=dict)  # per job with runs


def load_dataset(
    session: Session,
    row: ProtocolRow,
    protocol: Protocol,
    *,
    pinned: dict[str, list[list[int]]] | None = None,
    as_of: datetime | None = None,
    inputs_format: int = LATEST_INPUTS_FORMAT,
    from_rows: bool = False,
) -> LoadedData:
    """The engine's input for ``row`` (a frozen version): one source per job a rule reads, each
    job's runs chosen by :func:`select_runs`; the merged source (rules without ``job:``) merges
    the chosen runs of every job with runs, in order of each job's first used run.

    To re-derive a recorded verdict, ``pinned`` (source key -> its recorded parts, see
    :func:`rederive_verdict`) fixes the runs of each source instead, and ``as_of`` (its
    ``computed_at``) limits the runs that count (selection, ``silent_noop`` taints) to those
    finished by then. ``inputs_format``: the format of ``inputs_sha256``
    (:mod:`docketml.ledger.store.inputs_digest`); ``from_rows``: read the observation rows, not
    the runs' stored columns (:func:`read_sources`)."""
    finished = list(
        session.scalars(
            select(RunRow)
            .where(
                RunRow.protocol_sha256 == row.sha256,
                RunRow.status.in_(("succeeded", "silent_noop")),
            )
            .order_by(RunRow.id)
        )
    )
    if as_of is not None:
        cut = _aware(as_of)
        finished = [r for r in finished if r.finished_at and _aware(r.finished_at) <= cut]
    succeeded = [r for r in finished if r.status == "succeeded"]
    latest_finished: dict[str, RunRow] = {}
    for r in finished:
        latest_finished[r.job] = r
    selections: dict[str, JobSelection] = {}

    def selection(job: str) -> JobSelection:
        if job not in selections:
            selections[job] = select_runs(session, protocol, job, succeeded)
        return selections[job]

    of_record: dict[str, list[int]] = {}

    def taints(jobs: Iterable[str]) -> list[str]:
        # the run(s) select_runs picks when silent_noop runs count as finished runs: a taint is
        # about the run of record, not the latest one (a later silent_noop rerun of a job never
        # taints the run it does not replace; a silent_noop run of record is never replaced)
        finished_by_id = {r.id: r for r in finished}
        out = []
        for j in jobs:
            if j not in latest_finished:
                continue
            if j not in of_record:
                of_record[j] = select_runs(session, protocol, j, finished).used
            for rid in of_record[j]:
                if finished_by_id[rid].status == "silent_noop":
                    out.append(_noop_message(finished_by_id[rid]))
        return out

    needed: list[str | None] = []
    for rule in protocol.decision_rules.values():
        for job in rule_sources(rule):
            if job not in needed:
                needed.append(job)
    dataset = Dataset()
    specs: dict[str, SourceSpec] = {}
    all_parts: dict[str, list[list[int]]] = {}
    by_id = {r.id: r for r in succeeded}
    for job in needed:
        if job is None:
            jobs = sorted({r.job for r in finished})
            chosen_parts = sorted(
                (p for j in dict.fromkeys(r.job for r in succeeded) for p in selection(j).parts),
                key=min,
            )
            name = f"the chosen runs of {len({r.job for r in succeeded})} job(s)"
            deps = sorted({a for j in jobs for a in _ancestors(protocol, j)} - set(jobs))
            problems = taints(jobs + deps)
            problems += [
                selection(j).problem or "" for j in dict.fromkeys(r.job for r in succeeded)
            ]
            problems = [p for p in problems if p]
        else:
            sel = selection(job)
            chosen_parts = sel.parts
            ids = sel.used
            if ids:
                how = "" if sel.select == "first" else f" (select: {sel.select})"
                name = (
                    f"job {job!r} run{'s' if len(ids) > 1 else ''} "
                    + ", ".join(f"#{i}" for i in ids)
                    + how
                )
                upstream = [] if by_id[ids[0]].source == "ingest" else _ancestors(protocol, job)
            else:
                name = f"job {job!r}"
                upstream = _ancestors(protocol, job)
            problems = taints([job] + upstream)
            if sel.problem:
                problems.append(sel.problem)
            elif not ids:
                last = latest_finished.get(job)
                if last is None or last.status != "silent_noop":
                    other = session.scalars(
                        select(RunRow)
                        .where(RunRow.protocol_sha256 == row.sha256, RunRow.job == job)
                        .order_by(RunRow.id.desc())
                        .limit(1)
                    ).first()
                    tail = f" (its latest run #{other.id} is {other.status})" if other else ""
                    problems.append(
                        f"job {job!r} has no succeeded run bound to {row.protocol_id} "
                        f"v{row.version}{tail}"
                    )
        key = _source_key(job)
        if pinned is not None:  # re-deriving: the runs the verdict recorded, whatever selects now
            chosen_parts = [list(p) for p in pinned.get(key, [])]
        spec = specs[key] = SourceSpec([list(p) for p in chosen_parts], name=name)
        all_parts[key] = [list(p) for p in chosen_parts]
        if not chosen_parts:
            if job is None:
                problems.append(f"no succeeded run is bound to {row.protocol_id} v{row.version}")
            dataset.unavailable[job] = "; ".join(problems)
        elif job is not None and selections[job].problem:
            dataset.unavailable[job] = "; ".join(problems)
        else:
            spec.build, spec.problems = True, problems
    digest, built = read_sources(session, specs, inputs_format, from_rows=from_rows)
    keyed = {_source_key(job): job for job in needed}
    for key, src in built.items():
        dataset.sources[keyed[key]] = src
    sources = {k: flat_runs(spec.parts) for k, spec in specs.items()}
    return LoadedData(dataset, digest, sources, succeeded, all_parts, selections)


def _amendments(session: Session, row: ProtocolRow) -> dict[str, Any]:
    versions = store.chain(session, row.protocol_id)
    items = [
        {
            "version": v.version,
            "sha256": v.sha256,
            "status": v.status,
            "amendment_reason": v.amendment_reason,
            "used": v.id == row.id,
        }
        for v in versions
    ]
    later = [v for v in versions if v.version > row.version]
    note = f"verdict computed on v{row.version} (frozen, sha256 {row.sha256[:12]})"
    if len(versions) > 1:
        others = ", ".join(
            f"v{v.version} ({v.status}{'' if v.id != row.id else ', used'})" for v in versions
        )
        note += f"; the protocol has been amended: versions {others}"
        if later:
            note += (
                "; later version(s) "
                + ", ".join(f"v{v.version}" for v in later)
                + " are not frozen and not used"
            )
    return {"exist": len(versions) > 1, "versions": items, "note": note}


def _ignored_runs(session: Session, row: ProtocolRow) -> dict[str, Any]:
    versions = {v.sha256: v.version for v in store.chain(session, row.protocol_id)}
    runs = session.execute(
        select(RunRow.id, RunRow.protocol_sha256, RunRow.status).where(
            RunRow.protocol_sha256.in_([s for s in versions if s != row.sha256])
        )
    ).all()
    by_version: dict[str, int] = {}
    for _, sha, _status in runs:
        key = f"v{versions[sha]}"
        by_version[key] = by_version.get(key, 0) + 1
    note = (
        f"{len(runs)} run(s) bound to other versions ignored ("
        + ", ".join(f"{k}: {n}" for k, n in sorted(by_version.items()))
        + ")"
        if runs
        else "no runs bound to other versions"
    )
    return {"count": len(runs), "by_version": by_version, "note": note}


# --------------------------------------------------------------------------------------------
# Engine version hook (issue 15): which bootstrap engine a verdict runs with. One definition:
# a frozen version's engine is the one recorded by the sign-check that froze it (report_json
# "engine"; absent = 1, frozen before engine versions existed); a version not frozen yet would
# freeze with LATEST_ENGINE. A recorded verdict stores its engine in details_json["engine"]
# (absent = 1) and is re-derived with it. Nothing a user passes at verdict time chooses it.
# --------------------------------------------------------------------------------------------


def engine_version(session: Session, row: ProtocolRow) -> int:
    """The bootstrap engine version verdicts of protocol version ``row`` run with (see above)."""
    if row.status != "frozen":
        return LATEST_ENGINE
    check = store.latest_sign_check(session, row)
    if check is None:
        return 1
    return recorded_engine(json.loads(check.report_json), "sign-check report")


def recorded_engine(details: Any, what: str = "details_json") -> int:
    """The ``engine`` recorded in a verdict's details (or a sign-check report): 1 when absent;
    ``ValueError`` naming ``what`` when it is not a known version."""
    value = details.get("engine", 1) if isinstance(details, dict) else 1
    if isinstance(value, bool) or value not in ENGINE_VERSIONS:
        raise ValueError(f"{what} records engine {value!r}; known versions: {ENGINE_VERSIONS}")
    return int(value)


def inputs_format(session: Session, row: ProtocolRow) -> int:
    """THE rule of which format (:mod:`docketml.ledger.store.inputs_digest`) a new verdict of
    protocol version ``row`` hashes its inputs in: the format of the version's latest recorded
    verdict (so a repeated look compares like with like and a version's verdicts stay
    comparable), :data:`LATEST_INPUTS_FORMAT` when none is recorded."""
    previous = looks.latest_verdict(session, row.id)
    if previous is None:
        return LATEST_INPUTS_FORMAT
    try:
        details = json.loads(previous.details_json)
    except json.JSONDecodeError:
        return LATEST_INPUTS_FORMAT  # the audit reports the row; a new verdict is not bound to it
    return recorded_inputs_format(details)


def recorded_inputs_format(details: Any) -> int:
    """The ``inputs_format`` a verdict's details record: 1 when absent (verdicts recorded before
    format 2); ``ValueError`` when it is not a known format."""
    value = details.get("inputs_format", 1) if isinstance(details, dict) else 1
    if isinstance(value, bool) or value not in INPUTS_FORMATS:
        raise ValueError(f"details_json records inputs format {value!r}; known: {INPUTS_FORMATS}")
    return int(value)


@dataclass(frozen=True)
class ComputedVerdict:
    """A verdict computed in one transaction, recordable in another (:func:`record_verdict`):
    the protocol version's key and sha256, the result ``out``, its ``inputs_sha256`` and the
    run ids it used."""

    protocol_pk: int
    protocol_sha256: str
    out: dict[str, Any]
    digest: str
    used: list[int]


def compute_verdict(session: Session, protocol_id: str, *, record: bool = True) -> dict[str, Any]:
    """Compute (and by default record) the verdict of ``protocol_id`` in ``session``'s
    transaction; see the module docstring.

    Raises :class:`ledger.errors.CheckFailed` if the protocol was never frozen and
    :class:`ledger.errors.UserError` for an unknown protocol.
    """
    computed = prepare_verdict(session, protocol_id)
    return record_verdict(session, computed) if record else computed.out


def verdict_stamp(session: Session, protocol_id: str) -> tuple[Any, ...]:
    """Everything a verdict of ``protocol_id`` reads that can change, as one comparable value:
    each version row ``(id, status)`` and each run bound to any version ``(id, status,
    finished_at)``. A finished run's observations, metrics and texts never change after it
    finished (its Merkle leaf holds their sha256), so equal stamps mean equal inputs."""
    versions = session.execute(
        select(ProtocolRow.id, ProtocolRow.status, ProtocolRow.sha256)
        .where(ProtocolRow.protocol_id == protocol_id)
        .order_by(ProtocolRow.id)
    ).all()
    runs = session.execute(
        select(RunRow.id, RunRow.status, RunRow.finished_at)
        .where(RunRow.protocol_sha256.in_([v.sha256 for v in versions]))
        .order_by(RunRow.id)
    ).all()
    return (tuple(tuple(v[:2]) for v in versions), tuple(tuple(r) for r in runs))


def verdict_outside_lock(ledger: Ledger, protocol_id: str) -> dict[str, Any]:
    """Compute the verdict of ``protocol_id`` in a read-only snapshot, then record it in a short
    write transaction: the reading and the engine (seconds to minutes on a large ledger) hold no
    write lock, so other writers (runs finishing, heartbeats, costs) go on; on SQLite they would
    otherwise wait for the whole verdict. If :func:`verdict_stamp` differs between the two (a run
    finished, a version was frozen meanwhile), the verdict is computed again inside the write
    transaction. Same result and record as :func:`compute_verdict` in one transaction."""
    with ledger.read_session() as session:
        computed = prepare_verdict(session, protocol_id)
        stamp = verdict_stamp(session, protocol_id)
    with ledger.session() as session:
        if verdict_stamp(session, protocol_id) != stamp:
            return compute_verdict(session, protocol_id)
        return record_verdict(session, computed)


def prepare_verdict(session: Session, protocol_id: str) -> ComputedVerdict:
    """Compute the verdict of ``protocol_id`` (reads only)."""
    row = store.latest_frozen(session, protocol_id)
    protocol = store.parse_row(row)
    fmt = inputs_format(session, row)
    loaded = load_dataset(session, row, protocol, inputs_format=fmt)
    engine = engine_version(session, row)
    result = evaluate(protocol, loaded.dataset, engine=engine)
    digest = loaded.inputs_sha256
    used = sorted({rid for ids in loaded.sources.values() for rid in ids})
    runs_by_id = {r.id: r for r in loaded.runs}
    out: dict[str, Any] = {
        "protocol": row.protocol_id,
        "version": row.version,
        "protocol_sha256": row.sha256,
        "verdict": result["verdict"],
        "primary": result["primary"],
        "engine": engine,
        "inputs_format": fmt,
        "inputs_sha256": digest,
        "amendments": _amendments(session, row),
        "ignored_runs": _ignored_runs(session, row),
        "runs": [
            {"id": rid, "job": runs_by_id[rid].job, "source": runs_by_id[rid].source}
            for rid in used
            if rid in runs_by_id
        ],
        "inputs": {
            "sources": {k: ids for k, ids in sorted(loaded.sources.items())},
            "parts": {k: v for k, v in sorted(loaded.parts.items())},
        },
        "selection": [s.as_dict() for _, s in sorted(loaded.selections.items())],
        "reruns": [n for _, s in sorted(loaded.selections.items()) if (n := s.note())],
        "hypotheses": result["hypotheses"],
        "log_head": head_record(session),
    }
    return ComputedVerdict(row.id, row.sha256, out, digest, used)


def record_verdict(session: Session, computed: ComputedVerdict) -> dict[str, Any]:
    """Record ``computed`` (module docstring): a look when the latest verdict of its version has
    the same inputs and result, else a new verdict row and its Merkle leaf. Returns ``out`` with
    ``verdict_id``, ``computed_at`` and ``recorded``."""
    out, digest = dict(computed.out), computed.digest
    previous = looks.latest_verdict(session, computed.protocol_pk)
    if (
        previous is not None
        and previous.inputs_sha256 == digest
        and previous.verdict == out["verdict"]
    ):
        look = looks.record_look(session, previous)
        out["verdict_id"] = previous.id
        out["computed_at"] = previous.computed_at.isoformat()
        out["recorded"] = "look"
        out["verdict_log_head"] = _stored_log_head(previous)
        out["look"] = {"id": look.id, "at": look.at.isoformat(), "who": look.who}
        return out
    now = utcnow()
    verdict_row = VerdictRow(
        protocol_pk=computed.protocol_pk,
        protocol_sha256=computed.protocol_sha256,
        computed_at=now,
        verdict=out["verdict"],
        details_json=json.dumps(out, sort_keys=True, allow_nan=False),
        inputs_sha256=digest,
        run_ids_json=json.dumps(computed.used),
    )
    session.add(verdict_row)
    session.flush()
    merkle_log.queue_leaf(session, "verdict", verdict_row.id, merkle_log.verdict_leaf(verdict_row))
    out["verdict_id"] = verdict_row.id
    out["computed_at"] = now.isoformat()
    out["recorded"] = "verdict"
    return out


def _stored_log_head(row: VerdictRow) -> dict[str, Any] | None:
    """The ``log_head`` a recorded verdict stored (None for verdicts recorded before heads)."""
    try:
        details = json.loads(row.details_json)
    except json.JSONDecodeError:
        return None
    head = details.get("log_head") if isinstance(details, dict) else None
    return head if isinstance(head, dict) else None


def recompute_inputs_sha256(session: Session, verdict_row: VerdictRow) -> str:
    """Re-derive a recorded verdict's ``inputs_sha256`` from the current observation and metric
    rows of the runs it used (from ``details_json["inputs"]["sources"]``), in the format it
    recorded (``details_json["inputs_format"]``, absent = 1); a difference from
    ``verdict_row.inputs_sha256`` means the inputs changed after the verdict."""
    details = json.loads(verdict_row.details_json)
    sources = details.get("inputs", {}).get("sources", {})
    parts = details.get("inputs", {}).get("parts", {})
    specs = {
        key: SourceSpec([list(p) for p in parts[key]] if key in parts else [[int(i)] for i in ids])
        for key, ids in sources.items()
    }
    return read_sources(session, specs, recorded_inputs_format(details), from_rows=True)[0]


def rederive_verdict(session: Session, verdict_row: VerdictRow) -> dict[str, Any]:
    """Re-evaluate a recorded verdict with the verdict engine from what it recorded: its protocol
    row, the runs it pinned per source (``details_json["inputs"]["sources"]``), the engine
    version it recorded (``details_json["engine"]``, absent = 1), its inputs format
    (``details_json["inputs_format"]``, absent = 1) and the ledger as of its
    ``computed_at`` (see :func:`load_dataset`). Returns ``{"verdict", "primary", "engine",
    "inputs_format", "frozen_engine" (:func:`engine_version` of its protocol row),
    "hypotheses": {id: verdict}, "hypotheses_full" (the engine's per-hypothesis results),
    "inputs_sha256", "run_ids"}``; reads only. The audit compares
    this with the stored row: a forged or edited verdict differs.

    Raises ``ValueError`` when the row's ``details_json`` names no inputs (not JSON, no sources)
    and the protocol layer's errors when its protocol row no longer parses."""
    try:
        details = json.loads(verdict_row.details_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"details_json is not JSON ({exc.msg})") from None
    sources = details.get("inputs", {}).get("sources") if isinstance(details, dict) else None
    if not isinstance(sources, dict):
        raise ValueError("details_json names no inputs (inputs.sources)")
    row = session.get(ProtocolRow, verdict_row.protocol_pk)
    if row is None:
        raise ValueError(f"protocol row {verdict_row.protocol_pk} does not exist")
    protocol = store.parse_row(row)
    parts = details.get("inputs", {}).get("parts") or {}
    pinned = {
        str(k): [[int(i) for i in p] for p in parts[k]] if k in parts else [[int(i)] for i in v]
        for k, v in sources.items()
    }
    fmt = recorded_inputs_format(details)
    loaded = load_dataset(
        session,
        row,
        protocol,
        pinned=pinned,
        as_of=verdict_row.computed_at,
        inputs_format=fmt,
        from_rows=True,
    )
    engine = recorded_engine(details)
    result = evaluate(protocol, loaded.dataset, engine=engine)
    return {
        "verdict": result["verdict"],
        "primary": result["primary"],
        "engine": engine,
        "inputs_format": fmt,
        "frozen_engine": engine_version(session, row),
        "hypotheses_full": result["hypotheses"],
        "hypotheses": {h["id"]: h["verdict"] for h in result["hypotheses"]},
        "inputs_sha256": loaded.inputs_sha256,
        "run_ids": sorted({rid for ids in loaded.sources.values() for rid in ids}),
    }


def load_pilot(session: Session, ref: str) -> SourceData:
    """The observations of one run, ``run:ID`` (or ``ID``), as a pilot data model for
    :func:`docketml.ledger.verdict.simulate.simulate_protocol` (effective rows, via
    :func:`load_payload`). Raises :class:`UserError` naming what is wrong."""
    from .errors import UserError

    text = ref[4:] if ref.startswith("run:") else ref
    if not text.isdigit():
        raise UserError(f"--pilot {ref!r}: expected run:ID, e.g. run:12")
    run = session.get(RunRow, int(text))
    if run is None:
        raise UserError(f"--pilot {ref!r}: no run #{text} in this ledger")
    _, built = read_sources(
        session, {"r": SourceSpec([[run.id]], True, f"run #{run.id} (job {run.job!r})")}
    )
    if not built["r"].groups:
        raise UserError(f"--pilot {ref!r}: run #{run.id} recorded no observations")
    return built["r"]
