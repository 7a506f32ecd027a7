"""Computing, recording and auditing verdicts from the ledger.

Contract of :func:`compute_verdict`:

* The verdict uses the protocol's **latest frozen version** and only runs bound to its exact
  sha256 with status ``succeeded``. Runs bound to any other version of the protocol are ignored;
  the result says how many (per version) and lists the amendment chain.
* Which runs feed a rule (see :func:`ledger.rules.rule_sources`):
    - a rule with ``job: X`` (and each job of a ``non_inferiority`` rule) reads the **latest
      succeeded run of X** (an ingest run recorded with ``--job X`` counts as a run of X);
    - a rule without ``job:`` reads **every succeeded run** of the version, merged in run-id
      order (:func:`docketml.ledger.store.results.load_payload`, which also decides which metric
      row of a run counts).
* ``silent_noop`` runs taint: if the latest finished (succeeded or silent_noop) run of a job a
  source depends on is ``silent_noop`` -- the source's job itself and, for runner-produced data,
  its ``after:`` ancestors; for the merged source, every job with runs -- each rule reading that
  source is INCONCLUSIVE, naming the run and the knobs that never took effect.
* The verdict is recorded in ``verdicts`` with ``inputs_sha256`` =
  :func:`docketml.ledger.store.results.inputs_sha256` of its sources. ``details_json`` keeps the
  full result and the run ids of every source, so
  :func:`recompute_inputs_sha256` can re-derive the hash from the current observation rows (the
  audit compares the two to detect tampering).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.protocols.schema import Protocol

from .results import MetricValue
from .store import looks
from .store import protocols as store
from .store.models import ProtocolRow, RunRow, VerdictRow, utcnow
from .store.results import SourcePayload, inputs_sha256, load_payload
from .verdict.rules import Dataset, SourceData, evaluate, rule_sources

ALL_RUNS = "*"  # the key of the merged source in details / canonical inputs


def _source_key(job: str | None) -> str:
    return ALL_RUNS if job is None else f"job:{job}"


def _to_source(payload: SourcePayload, name: str, problems: Sequence[str]) -> SourceData:
    rows = [(g, i, lab, s, v) for (g, i, s), (lab, v) in payload.observations.items()]
    metrics = {n: MetricValue(n, v, lo, hi) for n, (v, lo, hi) in payload.metrics.items()}
    return SourceData.from_rows(
        rows, metrics, run_ids=payload.run_ids, problems=problems, name=name
    )


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
class LoadedData:
    """What :func:`load_dataset` found for one frozen protocol version."""

    dataset: Dataset
    payloads: dict[str, SourcePayload]
    runs: list[RunRow]  # every succeeded run of the version, id order


def load_dataset(
    session: Session,
    row: ProtocolRow,
    protocol: Protocol,
    *,
    pinned: dict[str, list[int]] | None = None,
    as_of: datetime | None = None,
) -> LoadedData:
    """The engine's input for ``row`` (a frozen version): one source per job a rule reads.

    By default each source reads the runs the module docstring names. To re-derive a recorded
    verdict, ``pinned`` (its ``details_json["inputs"]["sources"]``: source key -> run ids) fixes
    the runs of each source instead, and ``as_of`` (its ``computed_at``) limits the runs that can
    taint a source (``silent_noop``) to those finished by then."""
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
    pinned_runs: dict[int, RunRow] = {}
    if pinned is not None:
        ids = sorted({int(i) for v in pinned.values() for i in v})
        if ids:
            pinned_runs = {
                r.id: r for r in session.scalars(select(RunRow).where(RunRow.id.in_(ids)))
            }
    latest_finished: dict[str, RunRow] = {}
    for r in finished:
        latest_finished[r.job] = r

    def taints(jobs: Iterable[str]) -> list[str]:
        out = []
        for j in jobs:
            r = latest_finished.get(j)
            if r is not None and r.status == "silent_noop":
                out.append(_noop_message(r))
        return out

    needed: list[str | None] = []
    for rule in protocol.decision_rules.values():
        for job in rule_sources(rule):
            if job not in needed:
                needed.append(job)
    dataset = Dataset()
    payloads: dict[str, SourcePayload] = {}
    for job in needed:
        if pinned is not None:
            chosen = [pinned_runs[i] for i in pinned.get(_source_key(job), []) if i in pinned_runs]
        elif job is None:
            chosen = succeeded
        else:
            chosen = [r for r in succeeded if r.job == job][-1:]
        if job is None:
            name = f"all {len(chosen)} succeeded run(s)"
            jobs = sorted({r.job for r in finished})
            deps = sorted({a for j in jobs for a in _ancestors(protocol, j)} - set(jobs))
            problems = taints(jobs + deps)
        else:
            if chosen:
                name = f"job {job!r} run #{chosen[0].id}"
                upstream = [] if chosen[0].source == "ingest" else _ancestors(protocol, job)
            else:
                name = f"job {job!r}"
                upstream = _ancestors(protocol, job)
            problems = taints([job] + upstream)
            if not chosen:
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
        payload = load_payload(session, [r.id for r in chosen])
        payloads[_source_key(job)] = payload
        if not chosen:
            if job is None:
                problems.append(f"no succeeded run is bound to {row.protocol_id} v{row.version}")
            dataset.unavailable[job] = "; ".join(problems)
        else:
            dataset.sources[job] = _to_source(payload, name, problems)
    return LoadedData(dataset, payloads, succeeded)


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


def compute_verdict(session: Session, protocol_id: str, *, record: bool = True) -> dict[str, Any]:
    """Compute (and by default record) the verdict of ``protocol_id``; see the module docstring.

    Raises :class:`ledger.errors.CheckFailed` if the protocol was never frozen and
    :class:`ledger.errors.UserError` for an unknown protocol.
    """
    row = store.latest_frozen(session, protocol_id)
    protocol = store.parse_row(row)
    loaded = load_dataset(session, row, protocol)
    result = evaluate(protocol, loaded.dataset)
    digest = inputs_sha256(loaded.payloads)
    used = sorted({rid for p in loaded.payloads.values() for rid in p.run_ids})
    runs_by_id = {r.id: r for r in loaded.runs}
    out: dict[str, Any] = {
        "protocol": row.protocol_id,
        "version": row.version,
        "protocol_sha256": row.sha256,
        "verdict": result["verdict"],
        "primary": result["primary"],
        "inputs_sha256": digest,
        "amendments": _amendments(session, row),
        "ignored_runs": _ignored_runs(session, row),
        "runs": [
            {"id": rid, "job": runs_by_id[rid].job, "source": runs_by_id[rid].source}
            for rid in used
            if rid in runs_by_id
        ],
        "inputs": {"sources": {k: p.run_ids for k, p in sorted(loaded.payloads.items())}},
        "hypotheses": result["hypotheses"],
    }
    if record:
        previous = looks.latest_verdict(session, row.id)
        if (
            previous is not None
            and previous.inputs_sha256 == digest
            and previous.verdict == result["verdict"]
        ):
            look = looks.record_look(session, previous)
            out["verdict_id"] = previous.id
            out["computed_at"] = previous.computed_at.isoformat()
            out["recorded"] = "look"
            out["look"] = {"id": look.id, "at": look.at.isoformat(), "who": look.who}
            return out
        now = utcnow()
        verdict_row = VerdictRow(
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            computed_at=now,
            verdict=result["verdict"],
            details_json=json.dumps(out, sort_keys=True, allow_nan=False),
            inputs_sha256=digest,
            run_ids_json=json.dumps(used),
        )
        session.add(verdict_row)
        session.flush()
        out["verdict_id"] = verdict_row.id
        out["computed_at"] = now.isoformat()
        out["recorded"] = "verdict"
    return out


def recompute_inputs_sha256(session: Session, verdict_row: VerdictRow) -> str:
    """Re-derive a recorded verdict's ``inputs_sha256`` from the current observation and metric
    rows of the runs it used (from ``details_json["inputs"]["sources"]``); a difference from
    ``verdict_row.inputs_sha256`` means the inputs changed after the verdict."""
    details = json.loads(verdict_row.details_json)
    sources = details.get("inputs", {}).get("sources", {})
    payloads = {key: load_payload(session, list(ids)) for key, ids in sources.items()}
    return inputs_sha256(payloads)


def rederive_verdict(session: Session, verdict_row: VerdictRow) -> dict[str, Any]:
    """Re-evaluate a recorded verdict with the verdict engine from what it recorded: its protocol
    row, the runs it pinned per source (``details_json["inputs"]["sources"]``) and the ledger as
    of its ``computed_at`` (see :func:`load_dataset`). Returns ``{"verdict", "primary",
    "hypotheses": {id: verdict}, "inputs_sha256", "run_ids"}``; reads only. The audit compares
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
    pinned = {str(k): [int(i) for i in v] for k, v in sources.items()}
    loaded = load_dataset(session, row, protocol, pinned=pinned, as_of=verdict_row.computed_at)
    result = evaluate(protocol, loaded.dataset)
    return {
        "verdict": result["verdict"],
        "primary": result["primary"],
        "hypotheses": {h["id"]: h["verdict"] for h in result["hypotheses"]},
        "inputs_sha256": inputs_sha256(loaded.payloads),
        "run_ids": sorted({rid for p in loaded.payloads.values() for rid in p.run_ids}),
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
    payload = load_payload(session, [run.id])
    if not payload.observations:
        raise UserError(f"--pilot {ref!r}: run #{run.id} recorded no observations")
    return _to_source(payload, f"run #{run.id} (job {run.job!r})", [])
