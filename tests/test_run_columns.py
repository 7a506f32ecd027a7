"""A finished run's stored columns (``run_columns``, ledger.store.columns / run_columns).

The byte format is checked against a decoder written here from the format's text (not the
module's), the read through the columns against the dict reference (``load_parts``) in
tests/test_verdict_stream.py; here: what completion writes, the fallback to rows for a run
without columns and the backfill, the append-only triggers, and the audit finding an edited
body or an edited row.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from sqlalchemy import func, select, text

from docketml.ledger.integrity.audit import audit
from docketml.ledger.store import columns, stream
from docketml.ledger.store import protocols as store
from docketml.ledger.store.blocks import GroupBlock
from docketml.ledger.store.models import RunColumnsRow
from docketml.ledger.store.results import load_parts
from docketml.ledger.store.run_columns import backfill, column_problems
from docketml.ledger.store.runs import complete_run, create_run
from docketml.ledger.verdicts import compute_verdict
from docketml.protocols.loader import load_protocol_text

PROTOCOL = """docket: 1
id: cols
title: stored columns
hypotheses:
  - {id: H1, statement: cand beats base, rule: wins}
signals:
  cand: {higher_means: positive}
  base: {higher_means: positive, role: baseline}
labels: {source: judged, positive: failure}
groups: [g1, g2]
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
jobs:
  - {name: probe, kind: python, entry: "x:y"}
"""


def _block(rows: list[tuple[str, str, int | None, float]], group: str = "g") -> GroupBlock:
    obj = lambda xs: np.array(xs + [None], dtype=object)[:-1]  # noqa: E731 - 1-D object array
    return GroupBlock(
        group,
        obj([r[0] for r in rows]),
        obj([r[1] for r in rows]),
        obj([r[2] for r in rows]),
        np.array([r[3] for r in rows], dtype=np.float64),
    )


def _reference_decode(body: bytes) -> tuple[str, list[tuple[str, str, int | None, bytes]]]:
    """The format read from its description in ledger/store/columns.py, with struct."""
    header, rest = body.split(b"\n", 1)
    tag, group, n, m, b, names = json.loads(header)
    assert tag == "docket-columns/1"
    lengths = struct.unpack(f"<{m}I", rest[: 4 * m])
    text_ = rest[4 * m : 4 * m + b].decode("utf-8")
    pos = 4 * m + b
    counts = struct.unpack(f"<{m}I", rest[pos : pos + 4 * m])
    pos += 4 * m
    codes = struct.unpack(f"<{n}I", rest[pos : pos + 4 * n])
    pos += 4 * n
    flags = rest[pos : pos + n]
    pos += n
    labels = struct.unpack(f"<{n}q", rest[pos : pos + 8 * n])
    pos += 8 * n
    values = [rest[pos + 8 * k : pos + 8 * k + 8] for k in range(n)]
    assert pos + 8 * n == len(rest)
    items, at = [], 0
    for length, count in zip(lengths, counts, strict=True):
        items += [text_[at : at + length]] * count
        at += length
    rows = [
        (items[k], names[codes[k]], labels[k] if flags[k] else None, values[k]) for k in range(n)
    ]
    return group, rows


ROWS = [
    ("a", "base", 0, 0.25),
    ("a", "cand", 0, -0.0),
    ("b", "cand", None, math.inf),
    ("é", "base", 1, float("nan")),
    ("é", "cand", 1, 5e-324),
    ("😀", "cand", -3, -1.5),
    ("", "cand", 2**40, 1e308),
]


def test_encode_matches_the_documented_format() -> None:
    body = columns.encode(_block(ROWS, "grüppe"))
    group, rows = _reference_decode(body)
    assert group == "grüppe"
    assert [r[:3] for r in rows] == [r[:3] for r in ROWS]
    assert [r[3] for r in rows] == [struct.pack("<d", r[3]) for r in ROWS]  # exact bits


def test_decode_round_trips_and_refuses_damaged_bodies() -> None:
    payload = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]  # a NaN payload
    rows = ROWS + [("z", "base", None, payload)]
    block = columns.decode(columns.encode(_block(rows)))
    assert block.items.tolist() == [r[0] for r in rows]
    assert block.signals.tolist() == [r[1] for r in rows]
    assert block.labels.tolist() == [r[2] for r in rows]
    assert block.values.tobytes() == np.array([r[3] for r in rows]).tobytes()
    assert block.values.flags.writeable and block.values.dtype == np.float64
    body = columns.encode(_block(rows))
    for bad in (body[:-1], body + b"\x00", b"x" + body, body.replace(b"columns/1", b"columns/9")):
        with pytest.raises(ValueError, match="docket-columns/1"):
            columns.decode(bad)
    empty = columns.decode(columns.encode(_block([])))
    assert len(empty) == 0 and empty.group == "g"


def test_chunks_split_a_group_and_concatenate_back(monkeypatch) -> None:
    monkeypatch.setattr(columns, "CHUNK_ROWS", 3)
    block = _block(ROWS)
    parts = columns.chunks(block)
    assert [rows for rows, _ in parts] == [3, 3, 1]
    back = columns.concatenate([columns.decode(body) for _, body in parts])
    assert back.items.tolist() == block.items.tolist()
    assert back.values.tobytes() == block.values.tobytes()


def _obs(seed: int, n: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for g in ("g1", "g2"):
        for i in range(n):
            for s in ("cand", "base"):
                v = float(rng.normal() + (1.0 if s == "cand" else 0.3) * (i % 2))
                out.append({"group": g, "item": f"i{i}", "signal": s, "value": v, "label": i % 2})
    return out


@pytest.fixture
def study(ledger):
    loaded = load_protocol_text(PROTOCOL, "cols.yaml")
    with ledger.session() as s:
        row = store.register(s, loaded).row
        row, _, _ = store.freeze(s, row.protocol_id, lambda _p: {"passed": True, "checks": []})
        run = create_run(
            s, protocol_pk=row.id, protocol_sha256=row.sha256, job="probe", kind="python",
            config={}, status="running",
        )  # fmt: skip
        rows = _obs(1)
        rows.append({**rows[0], "value": 7.0})  # the same key again: the later row counts
        complete_run(s, run.id, status="succeeded", observations=rows)
    return ledger, run.id


def test_completion_stores_the_effective_rows_per_group(study) -> None:
    ledger, run_id = study
    with ledger.read_session() as s:
        stored = s.execute(
            select(RunColumnsRow.group, RunColumnsRow.chunk, RunColumnsRow.rows)
            .where(RunColumnsRow.run_id == run_id)
            .order_by(RunColumnsRow.group)
        ).all()
        assert [tuple(r) for r in stored] == [("g1", 0, 80), ("g2", 0, 80)]
        payload = load_parts(s, [[run_id]])
        for block in stream.iter_groups(s, [[run_id]]):
            for item, signal, label, value in zip(
                block.items, block.signals, block.labels, block.values, strict=True
            ):
                assert payload.observations[(block.group, item, signal)] == (label, value)
        assert payload.observations[("g1", "i0", "cand")][1] == 7.0
        assert column_problems(s, run_id) == []


def test_a_run_without_columns_is_read_from_rows_and_backfilled(study) -> None:
    """A run finished before revision 0006 (columns absent): the read falls back to the rows,
    with the same result, and backfill stores its columns."""
    ledger, run_id = study
    with ledger.session() as s:
        row = store.latest_frozen(s, "cols")
        old = create_run(
            s, protocol_pk=row.id, protocol_sha256=row.sha256, job="probe", kind="python",
            config={"old": 1}, status="running",
        )  # fmt: skip
        complete_run(s, old.id, status="succeeded")  # no rows yet: no columns
        s.execute(
            text(
                "INSERT INTO observations (run_id, grp, item, label, signal, value) "
                "SELECT :new, grp, item, label, signal, value + 1 FROM observations "
                "WHERE run_id = :r"
            ),
            {"new": old.id, "r": run_id},
        )
    with ledger.read_session() as s:
        assert not stream.columns_cover(s, [run_id, old.id])
        assert stream.columns_cover(s, [run_id])
        before = [b.values.tolist() for b in stream.iter_groups(s, [[run_id], [old.id]])]
    with ledger.session() as s:
        assert backfill(s) == [old.id]
        assert backfill(s) == []
    with ledger.read_session() as s:
        assert stream.columns_cover(s, [run_id, old.id])
        after = [b.values.tolist() for b in stream.iter_groups(s, [[run_id], [old.id]])]
        assert after == before
        assert column_problems(s, old.id) == []


def test_run_columns_are_append_only(study) -> None:
    ledger, run_id = study
    for sql in (
        "UPDATE run_columns SET rows = 1",
        "DELETE FROM run_columns",
        f"INSERT INTO run_columns (run_id, grp, chunk, rows, body) VALUES ({run_id}, 'g1', 0, 0, "
        + ("X'00'" if ledger.dialect == "sqlite" else "'\\x00'::bytea")
        + ")",
    ):
        with pytest.raises(Exception, match="append-only|UNIQUE|unique|duplicate"):
            with ledger.engine.begin() as conn:
                conn.execute(text(sql))
    with ledger.read_session() as s:
        assert s.scalar(select(func.count()).select_from(RunColumnsRow)) == 2


def _drop_column_triggers(conn, dialect: str) -> None:
    for name in ("docket_run_columns_no_update", "docket_run_columns_no_replace"):
        if dialect == "postgresql":
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON run_columns"))
        else:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def test_audit_finds_an_edited_body_and_the_verdict_it_would_mislead(study) -> None:
    """Someone with the database drops the trigger and rewrites a body so the candidate wins
    everywhere: the audit names the run's columns (and the missing trigger)."""
    ledger, run_id = study
    with ledger.session() as s:
        first = compute_verdict(s, "cols")
    with ledger.read_session() as s:
        where = (RunColumnsRow.run_id == run_id, RunColumnsRow.group == "g1")
        body = s.scalar(select(RunColumnsRow.body).where(*where))
    block = columns.decode(bytes(body))
    forged = block.values.copy()
    forged[block.signals == "cand"] += 10 * block.labels[block.signals == "cand"].astype(float)
    block.values = forged
    with ledger.engine.begin() as conn:
        _drop_column_triggers(conn, ledger.dialect)
        conn.execute(
            text("UPDATE run_columns SET body = :b WHERE run_id = :r AND grp = 'g1'"),
            {"b": columns.encode(block), "r": run_id},
        )
    report = audit(ledger)
    mine = [f for f in report.findings if f.table == "run_columns" and f.row is not None]
    assert [(f.row, "g1" in f.problem) for f in mine] == [(run_id, True)]
    gone = [f.problem for f in report.findings if f.table == "run_columns" and f.row is None]
    assert gone and all("is missing" in p for p in gone)  # the dropped triggers
    assert "differs from what the observation rows give" in mine[0].problem
    # the verdict re-derived by the audit reads the rows: the recorded verdict still matches them
    assert not [f for f in report.findings if f.table == "verdicts"]
    with ledger.session() as s:
        again = compute_verdict(s, "cols")
    assert again["inputs_sha256"] != first["inputs_sha256"]  # a verdict reads the columns


def test_audit_finds_an_edited_row_through_the_columns_and_the_verdict(study) -> None:
    ledger, run_id = study
    with ledger.session() as s:
        compute_verdict(s, "cols")
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE observations SET value = 99 WHERE id = (SELECT min(id) FROM observations "
                "WHERE run_id = :r AND grp = 'g2')"
            ),
            {"r": run_id},
        )
    report = audit(ledger)
    tables = {f.table for f in report.findings}
    assert {"run_columns", "verdicts", "log_leaves"} <= tables, report.findings
