"""The streamed verdict read (ledger.verdicts.read_sources, ledger.store.stream) against the
dict-based reference it replaces (ledger.store.results.load_parts + inputs_sha256 +
SourceData.from_rows), on both backends.

The fixture is built to hit every rule the stream restates: several runs merged (a later run
overrides), a duplicate row within one run (the later id wins), pooled replicates (fsum mean,
label of the first replicate), ties, labels missing (None), infinite values, text that sorts
differently under a locale collation than by code point (upper/lower case, accents, astral
characters, JSON escapes), an item whose label differs across signals (the reference's
dict-order rule, handled by falling back) and a pinned record that repeats a run.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from docketml.ledger.store import protocols as store
from docketml.ledger.store import stream
from docketml.ledger.store.inputs_digest import INPUTS_FORMATS, inputs_sha256
from docketml.ledger.store.results import load_parts
from docketml.ledger.store.runs import complete_run, create_run
from docketml.ledger.verdict.rules import SourceData, evaluate
from docketml.ledger.verdicts import (
    SourceSpec,
    _to_source,
    compute_verdict,
    load_dataset,
    read_sources,
    recompute_inputs_sha256,
)
from docketml.protocols.loader import load_protocol_text

PROTOCOL = """docket: 1
id: stream-study
title: streamed reads
hypotheses:
  - {id: H1, statement: cand beats base, rule: wins}
  - {id: H2, statement: probe mean is high, rule: high}
signals:
  cand: {higher_means: positive}
  base: {higher_means: positive, role: baseline}
labels: {source: judged, positive: failure}
groups: [G, a, Z]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand]
    baselines: [base]
    margin: 0.0
    ci: {method: delong, level: 0.9}
    verdicts:
      PROVEN: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
  high: {kind: threshold, statistic: mean, signal: cand, job: probe, bound: 0.1}
jobs:
  - name: probe
    kind: python
    entry: "x:y"
    replicates: {seeds: [1, 2, 3]}
    select: all
  - {name: other, kind: python, entry: "x:z"}
"""

ITEMS = ["A", "a", "B", "b", "é", "e\u0301", "z", "😀", 'q"uote', "back\\slash", "tab\tx", "i10"]


def _rows(seed: int, *, conflict: bool = False, shift: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for g in ["G", "a", "Z", "é"]:  # é: not a protocol group, still hashed
        for k, item in enumerate(ITEMS):
            label = None if item == "z" else k % 2
            for signal in ["cand", "base"]:
                v = float(np.round(rng.normal() + 0.8 * (label or 0) + shift, 1))  # ties
                if item == "i10" and signal == "base":
                    v = math.inf
                lab = label
                if conflict and item == "A" and signal == "base":
                    lab = 1 - (label or 0)
                out.append({"group": g, "item": item, "label": lab, "signal": signal, "value": v})
    return out


@pytest.fixture
def runs(ledger):
    return _seed_runs(ledger)


@pytest.fixture
def pg_runs(pg_schema_url: str):
    """The same runs on PostgreSQL only (for the collation test: SQLite compares bytes)."""
    from docketml.ledger.store.db import init_ledger

    led = init_ledger(pg_schema_url)
    yield _seed_runs(led)
    led.engine.dispose()


def _seed_runs(ledger):
    loaded = load_protocol_text(PROTOCOL, "stream.yaml")
    ids: dict[str, int] = {}
    with ledger.session() as s:
        row = store.register(s, loaded).row
        row, _, _ = store.freeze(s, row.protocol_id, lambda _p: {"passed": True, "checks": []})

        def run(name: str, job: str, rows: list[dict], seed: int | None = None) -> None:
            r = create_run(
                s, protocol_pk=row.id, protocol_sha256=row.sha256, job=job, kind="python",
                config={"n": name}, status="running", seed=seed,
            )  # fmt: skip
            metrics = [{"name": "acc", "value": 0.5 + seed / 10 if seed else 0.7}]
            complete_run(s, r.id, status="succeeded", observations=rows, metrics=metrics)
            ids[name] = r.id

        run("p1", "probe", _rows(1), seed=1)
        run("p2", "probe", _rows(2, shift=0.3)[:-7], seed=2)  # fewer rows: pooled over 2 of 3
        dup = _rows(3)
        dup.append({**dup[0], "value": 9.5, "label": 1})  # same key, later id: it counts
        run("p3", "probe", dup, seed=3)
        run("o1", "other", _rows(4))
        run("o2", "other", _rows(5, conflict=True))
    return ledger, ids


def _same_source(a: SourceData, b: SourceData) -> None:
    assert list(a.groups) == list(b.groups)
    for g in a.groups:
        x, y = a.groups[g], b.groups[g]
        assert x.items == y.items
        assert x.labels.dtype == y.labels.dtype and np.array_equal(x.labels, y.labels)
        assert list(x.values) == list(y.values)
        for s in x.values:
            assert np.array_equal(x.values[s], y.values[s], equal_nan=True)
    assert a.nonfinite == b.nonfinite
    assert a.metrics == b.metrics and a.run_ids == b.run_ids


def _parts_cases(ids: dict[str, int]) -> list[dict[str, list[list[int]]]]:
    p1, p2, p3, o1, o2 = (ids[k] for k in ("p1", "p2", "p3", "o1", "o2"))
    return [
        {"job:probe": [[p1]]},
        {"job:probe": [[p3]]},  # duplicate key within the run
        {"job:probe": [[p1, p2, p3]]},  # select: all, pooled
        {"*": [[p1, p2, p3], [o1]], "job:probe": [[p1, p2, p3]]},  # pooled then merged
        {"*": [[o1], [p2], [p1]]},  # merged, later overrides
        {"*": [[o2]]},  # labels differ across signals: the fallback
        {"*": [[o1], [o1]]},  # a pinned record repeating a run: the dict path
        {"*": [], "job:other": [[o1]]},  # an empty source
    ]


@pytest.mark.parametrize("from_rows", [False, True], ids=["stored-columns", "rows"])
@pytest.mark.parametrize("inputs_format", INPUTS_FORMATS)
def test_stream_equals_reference(runs, inputs_format, from_rows) -> None:
    """Both read paths (the runs' stored columns, which every run here has, and the ordered row
    query) against the dict reference."""
    ledger, ids = runs
    with ledger.read_session() as s:
        assert stream.columns_cover(s, list(ids.values()))
        for case in _parts_cases(ids):
            specs = {k: SourceSpec(v, build=True, name=k) for k, v in case.items()}
            digest, built = read_sources(s, specs, inputs_format, from_rows=from_rows)
            payloads = {k: load_parts(s, v) for k, v in case.items()}
            assert digest == inputs_sha256(payloads, inputs_format), case
            for k in case:
                _same_source(built[k], _to_source(payloads[k], k, []))


@pytest.mark.parametrize("inputs_format", INPUTS_FORMATS)
def test_stream_small_chunks(runs, monkeypatch, inputs_format) -> None:
    """Groups split across fetches (and fetches ending on a group boundary) change nothing
    (the row path, which fetches rows in chunks)."""
    ledger, ids = runs
    with ledger.read_session() as s:
        case = _parts_cases(ids)[3]
        payloads = {k: load_parts(s, v) for k, v in case.items()}
        for size in (1, 2, 3, 24, 48, 49):
            monkeypatch.setattr(stream, "FETCH_ROWS", size)
            specs = {k: SourceSpec(v, build=True, name=k) for k, v in case.items()}
            digest, built = read_sources(s, specs, inputs_format, from_rows=True)
            assert digest == inputs_sha256(payloads, inputs_format), size
            for k in case:
                _same_source(built[k], _to_source(payloads[k], k, []))


def test_verdict_and_audit_hash_match_reference(runs) -> None:
    """compute_verdict's inputs_sha256 and engine result equal the reference computed from the
    dict payloads of the same parts; recompute_inputs_sha256 re-derives the stored hash."""
    ledger, _ = runs
    with ledger.session() as s:
        out = compute_verdict(s, "stream-study")
        row = store.latest_frozen(s, "stream-study")
        protocol = store.parse_row(row)
        loaded = load_dataset(s, row, protocol)
        payloads = {k: load_parts(s, v) for k, v in loaded.parts.items()}
        assert out["inputs_format"] == 2
        assert out["inputs_sha256"] == inputs_sha256(payloads, 2)
        for key, job in (("*", None), ("job:probe", "probe")):
            _same_source(loaded.dataset.sources[job], _to_source(payloads[key], "x", []))
        assert evaluate(protocol, loaded.dataset)["verdict"] == out["verdict"]
        from docketml.ledger.store.models import VerdictRow

        vrow = s.get(VerdictRow, out["verdict_id"])
        assert recompute_inputs_sha256(s, vrow) == out["inputs_sha256"]


def test_postgres_order_ignores_column_collation(pg_runs) -> None:
    """With the text columns under an ICU (locale) collation, where 'a' < 'B' and 'é' < 'f',
    the stream still reads in code-point order (its ORDER BY says COLLATE "C"), from the rows and
    from the stored columns."""
    ledger, ids = pg_runs
    assert ledger.dialect == "postgresql"
    from sqlalchemy import text

    with ledger.session() as s:
        for column, size in (("grp", 100), ("item", 200), ("signal", 100)):
            s.execute(
                text(
                    f"ALTER TABLE observations ALTER COLUMN {column} "
                    f'TYPE varchar({size}) COLLATE "und-x-icu"'
                )
            )
        s.execute(
            text('ALTER TABLE run_columns ALTER COLUMN grp TYPE varchar(100) COLLATE "und-x-icu"')
        )
        assert s.execute(text("SELECT 'a' < 'B' COLLATE \"und-x-icu\"")).scalar() is True
    with ledger.read_session() as s:
        cases = zip(_parts_cases(ids)[:5], (1, 2, 1, 2, 1), strict=True)
        for (case, fmt), from_rows in itertools.product(cases, (False, True)):
            specs = {k: SourceSpec(v, build=True, name=k) for k, v in case.items()}
            digest, built = read_sources(s, specs, fmt, from_rows=from_rows)
            payloads = {k: load_parts(s, v) for k, v in case.items()}
            assert digest == inputs_sha256(payloads, fmt), case
            for k in case:
                _same_source(built[k], _to_source(payloads[k], k, []))


def test_a_version_keeps_the_inputs_format_of_its_first_verdict(runs, monkeypatch) -> None:
    """A version whose verdicts were hashed in format 1 (recorded before format 2) keeps format
    1: a repeated verdict is a look, the audit's re-derivation matches, and the digest is format
    1's of the same payloads. Format 1 recorded here by making it the latest, as it was."""
    from docketml.ledger import verdicts
    from docketml.ledger.integrity.audit import audit
    from docketml.ledger.store.models import VerdictRow

    ledger, _ = runs
    monkeypatch.setattr(verdicts, "LATEST_INPUTS_FORMAT", 1)
    with ledger.session() as s:
        first = compute_verdict(s, "stream-study")
    monkeypatch.undo()
    assert first["inputs_format"] == 1 and first["recorded"] == "verdict"
    with ledger.session() as s:
        again = compute_verdict(s, "stream-study")
        row = store.latest_frozen(s, "stream-study")
        loaded = load_dataset(s, row, store.parse_row(row))  # format 2 by default
        payloads = {k: load_parts(s, v) for k, v in loaded.parts.items()}
        vrow = s.get(VerdictRow, first["verdict_id"])
        rederived = verdicts.rederive_verdict(s, vrow)
    assert again["recorded"] == "look" and again["inputs_format"] == 1
    assert again["inputs_sha256"] == first["inputs_sha256"] == inputs_sha256(payloads, 1)
    assert loaded.inputs_sha256 == inputs_sha256(payloads, 2) != first["inputs_sha256"]
    assert rederived["inputs_format"] == 1
    assert rederived["inputs_sha256"] == first["inputs_sha256"]
    report = audit(ledger)
    assert not [f for f in report.findings if f.table == "verdicts"], report.findings
