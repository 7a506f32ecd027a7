"""Upgrading a ledger that has data in it, from every earlier Alembic revision to head, on SQLite
and PostgreSQL.

For each revision before head: migrate an empty database to that revision, insert data with
plain Core inserts into the tables *as they exist at that revision* (reflected, so columns added
later are simply absent): a frozen protocol and an amendment, a sign-check, runs, observations,
metrics, texts, a verdict, hash-chained costs and journal entries. Then upgrade to head and check
that every row and value survived, both hash chains still verify, the ledger opens at head and
parses its protocol, and the append-only / frozen-row triggers exist and fire (SQLite batch
migrations rebuild tables and drop their triggers: the migration must re-create them).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from distributed_helpers import protocol_yaml
from sqlalchemy import Engine, MetaData, Table, func, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError

from docketml.journal.chain import GENESIS, build_chain, entry_hash
from docketml.journal.schema import JournalEntry
from docketml.ledger.billing.costs import cost_canonical, verify_cost_chain
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import (
    all_revisions,
    check_revision,
    current_revision,
    make_engine,
    open_ledger,
)
from docketml.ledger.store.db import upgrade as upgrade_to
from docketml.ledger.store.journal import verify_journal_chain
from docketml.ledger.store.models import CostRow, JournalEntryRow
from docketml.migrations.triggers import missing_triggers
from docketml.protocols.loader import load_protocol_text

EARLIER = all_revisions()[:-1]
T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
N_OBS = 300


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def seed_rows() -> dict[str, list[dict[str, Any]]]:
    """Rows to insert, with every column docket has ever had; columns a revision lacks are
    dropped at insert time (they must then be NULL / default after the upgrade)."""
    frozen = load_protocol_text(
        protocol_yaml("mig", [{"name": "j", "kind": "synthetic"}]), "mig.yaml"
    )
    amended = load_protocol_text(
        protocol_yaml("mig", [{"name": "j", "kind": "synthetic", "seed": 5}]), "mig.yaml"
    )
    protocols = [
        {
            "id": 1,
            "protocol_id": "mig",
            "version": 1,
            "title": frozen.protocol.title,
            "yaml_text": frozen.yaml_text,
            "canonical_json": frozen.canonical,
            "sha256": frozen.sha256,
            "status": "frozen",
            "registered_at": _at(0),
            "frozen_at": _at(1),
            "parent_id": None,
            "amendment_reason": None,
            "source_path": "mig.yaml",
        },
        {
            "id": 2,
            "protocol_id": "mig",
            "version": 2,
            "title": amended.protocol.title,
            "yaml_text": amended.yaml_text,
            "canonical_json": amended.canonical,
            "sha256": amended.sha256,
            "status": "registered",
            "registered_at": _at(2),
            "frozen_at": None,
            "parent_id": 1,
            "amendment_reason": "a different seed",
            "source_path": "mig.yaml",
        },
    ]
    sha = frozen.sha256
    runs = [
        {
            "id": i,
            "protocol_pk": 1,
            "protocol_sha256": sha,
            "job": "j",
            "kind": "synthetic",
            "source": "runner",
            "config_json": f'{{"n": {i}}}',
            "status": status,
            "host": "h1",
            "worker": None,
            "hardware": "a40",
            "queued_at": _at(10 * i),
            "started_at": _at(10 * i + 1),
            "heartbeat_at": None,
            "lease_expires_at": None,
            "finished_at": _at(10 * i + 5),
            "wall_s": 4.0 + i,
            "cost_micros": 1000 * i,
            "seed": 1234,
            "git_sha": "abc123",
            "checkpoint_sha256": None,
            "checkpoint_path": None,
            "input_sha256": None,
            "knob_audit_json": "{}",
            "silent_noop_knobs": None,
            "error": "RuntimeError: boom" if status == "failed" else None,
            "extra_json": None,
        }
        for i, status in ((1, "succeeded"), (2, "failed"), (3, "abandoned"))
    ]
    observations = [
        {
            "id": k + 1,
            "run_id": 1,
            "grp": f"g{k % 3}",
            "item": f"item{k}",
            "label": k % 2,
            "signal": "s",
            "value": k / 7.0,
        }
        for k in range(N_OBS)
    ]
    costs = []
    prev = GENESIS
    for seq, (run_id, usd) in enumerate(((1, 1000), (2, 2000), (None, 150000)), start=1):
        row = {
            "id": seq,
            "seq": seq,
            "at": _at(100 + seq),
            "run_id": run_id,
            "protocol_pk": 1,
            "hardware": "a40",
            "wall_s": 4.5 if run_id else None,
            "billed_s": 360 if run_id else None,
            "rate_micros_per_hour": 400000,
            "usd_micros": usd,
            "label": None,
            "note": "manual: dataset licence" if run_id is None else None,
        }
        digest = entry_hash(prev, cost_canonical(CostRow(**row)))
        row.update(prev_hash=prev, hash=digest)
        costs.append(row)
        prev = digest
    entries = [
        JournalEntry(date=date(2026, 11, 1), title="Froze mig", observations=["frozen"]),
        JournalEntry(date=date(2026, 11, 2), title="Ran j", protocol="mig", runs=[1, 2]),
    ]
    journal = [
        {
            "id": link.seq,
            "seq": link.seq,
            "at": _at(200 + link.seq),
            "protocol_pk": 1,
            "corrects_seq": None,
            "title": entry.title,
            "body_json": link.canonical,
            "prev_hash": link.prev_hash,
            "hash": link.hash,
        }
        for entry, link in zip(entries, build_chain(entries, prev_hash=GENESIS), strict=True)
    ]
    return {
        "protocols": protocols,
        "sign_checks": [
            {
                "id": 1,
                "protocol_pk": 1,
                "protocol_sha256": sha,
                "ran_at": _at(1),
                "passed": True,
                "report_json": '{"passed": true, "checks": []}',
            }
        ],
        "runs": runs,
        "observations": observations,
        "metrics": [
            {
                "id": 1,
                "run_id": 1,
                "name": "n_observations",
                "value": float(N_OBS),
                "ci_low": None,
                "ci_high": None,
                "step": None,
            },
            {
                "id": 2,
                "run_id": 1,
                "name": "loss",
                "value": 0.25,
                "ci_low": 0.2,
                "ci_high": 0.3,
                "step": 100,
            },
        ],
        "run_texts": [{"id": 1, "run_id": 1, "item": "item0", "text": "héllo\nworld"}],
        "verdicts": [
            {
                "id": 1,
                "protocol_pk": 1,
                "protocol_sha256": sha,
                "computed_at": _at(300),
                "verdict": "PARTIAL",
                "details_json": '{"H1": "PARTIAL"}',
                "inputs_sha256": "f" * 64,
                "run_ids_json": "[1]",
            }
        ],
        "costs": costs,
        "journal_entries": journal,
    }


def seed(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Insert :func:`seed_rows` into the tables as they are now; return what was inserted."""
    rows = seed_rows()
    inserted: dict[str, list[dict[str, Any]]] = {}
    meta = MetaData()
    with engine.begin() as conn:
        for name, table_rows in rows.items():
            table = Table(name, meta, autoload_with=conn)
            present = set(table.c.keys())
            kept = [{k: v for k, v in r.items() if k in present} for r in table_rows]
            if name == "protocols":  # frozen after its sign-check exists (the 0004 guard)
                draft = [{**r, "status": "registered"} for r in kept]
                conn.execute(insert(table), draft)
            else:
                conn.execute(insert(table), kept)
            inserted[name] = kept
        frozen = [r["id"] for r in inserted["protocols"] if r["status"] == "frozen"]
        ids = ", ".join(map(str, frozen))
        conn.execute(text(f"UPDATE protocols SET status = 'frozen' WHERE id IN ({ids})"))
        if conn.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for name in rows:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
                )
    return inserted


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, datetime):
        return isinstance(actual, datetime) and _naive_utc(expected) == _naive_utc(actual)
    if isinstance(expected, float):
        return actual == pytest.approx(expected, rel=1e-12)
    return expected == actual


def check_survived(engine: Engine, inserted: dict[str, list[dict[str, Any]]]) -> None:
    """Every inserted row is still there with the same values (columns added later: NULL)."""
    meta = MetaData()
    with engine.connect() as conn:
        for name, rows in inserted.items():
            table = Table(name, meta, autoload_with=conn)
            stored = {r.id: r._mapping for r in conn.execute(select(table).order_by(table.c.id))}
            assert len(stored) == len(rows), name
            for row in rows:
                got = stored[row["id"]]
                for column, value in row.items():
                    assert _same(value, got[column]), (name, row["id"], column, value, got[column])
            added = set(table.c.keys()) - set(rows[0])
            for column in sorted(added):
                default = {"cost_micros": 0}.get(column)
                assert {got[column] for got in stored.values()} <= {None, default}, (name, column)


def check_triggers_fire(engine: Engine) -> None:
    """Append-only and frozen-row triggers exist and reject changes; registered rows still may
    change (they are frozen later)."""
    with engine.connect() as conn:
        assert missing_triggers(conn) == []
    refused = [
        "UPDATE costs SET usd_micros = 0 WHERE seq = 1",
        "DELETE FROM costs WHERE seq = 3",
        "UPDATE journal_entries SET title = 'edited' WHERE seq = 1",
        "DELETE FROM journal_entries",
        "UPDATE verdicts SET verdict = 'PROVEN'",
        "DELETE FROM sign_checks",
        "UPDATE protocols SET title = 'edited' WHERE id = 1",
        "DELETE FROM protocols WHERE id = 1",
        # the guards of revision 0004: row 2 has no sign-check; no negative money
        "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP WHERE id = 2",
        "UPDATE runs SET cost_micros = -1 WHERE id = 1",
        "INSERT INTO costs (id, seq, at, hardware, rate_micros_per_hour, usd_micros, prev_hash, "
        "hash) VALUES (99, 99, CURRENT_TIMESTAMP, 'a40', 0, -1, 'x', 'y')",
    ]
    for statement in refused:
        with pytest.raises(DBAPIError, match="docket"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:  # a registered protocol row is not frozen yet
        assert conn.execute(text("UPDATE protocols SET title = 'draft' WHERE id = 2")).rowcount == 1


@pytest.mark.parametrize("revision", EARLIER)
def test_upgrade_from_earlier_revision_keeps_data_and_triggers(
    revision: str, ledger_url: str
) -> None:
    engine = make_engine(ledger_url, create=True)
    try:
        upgrade_to(engine, revision)
        assert current_revision(engine) == revision
        before = set(inspect(engine).get_table_names())
        inserted = seed(engine)
        upgrade_to(engine, "head")
        check_revision(engine)  # at head now
        assert before <= set(inspect(engine).get_table_names())
        check_survived(engine, inserted)
        ledger = open_ledger(ledger_url)
        try:
            with ledger.session() as session:
                costs = list(session.scalars(select(CostRow).order_by(CostRow.seq)))
                assert verify_cost_chain(costs) == []
                journal = list(
                    session.scalars(select(JournalEntryRow).order_by(JournalEntryRow.seq))
                )
                assert verify_journal_chain(journal) == []
                row = store.latest_frozen(session, "mig")
                assert row.version == 1 and store.parse_row(row).job("j").kind == "synthetic"
                assert session.scalar(select(func.count()).select_from(CostRow)) == 3
        finally:
            ledger.engine.dispose()
        check_triggers_fire(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", [r for r in EARLIER if r < "0004"])  # before the guards
def test_rows_the_0004_guards_refuse_still_upgrade_and_are_audited(
    revision: str, ledger_url: str
) -> None:
    """A ledger that already holds a negative cost (correctly chained) and a protocol frozen
    without a sign-check upgrades to head (guards are triggers, not CHECKs that would refuse
    the rows); ``docket audit`` then reports both."""
    from docketml.ledger.integrity.audit import audit

    engine = make_engine(ledger_url, create=True)
    try:
        upgrade_to(engine, revision)
        inserted = seed(engine)
        last = inserted["costs"][-1]
        row = {**{k: v for k, v in last.items() if k not in ("prev_hash", "hash")}}
        row.update(id=4, seq=4, at=_at(110), run_id=None, usd_micros=-5_000_000, note="refund")
        full = {"label": None, **row}
        row.update(
            prev_hash=last["hash"], hash=entry_hash(last["hash"], cost_canonical(CostRow(**full)))
        )
        with engine.begin() as conn:
            conn.execute(insert(Table("costs", MetaData(), autoload_with=conn)), [row])
            conn.execute(text("UPDATE protocols SET status = 'frozen' WHERE id = 2"))
        upgrade_to(engine, "head")
        check_revision(engine)
    finally:
        engine.dispose()
    ledger = open_ledger(ledger_url)
    try:
        report = audit(ledger)
    finally:
        ledger.engine.dispose()
    found = {(f.table, f.row): f.problem for f in report.findings}
    assert found[("costs", 4)] == "negative cost -$5.00: a cost is >= 0"
    assert found[("protocols", "2 (mig v2)")] == "is frozen without a sign-check"
    assert not any(f.table == "costs" and f.row != 4 for f in report.findings), report.findings


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canon(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _results_sha256(rows: dict[str, list[dict[str, Any]]], run_id: int) -> tuple[str, list[int]]:
    """docs/transparency.md's run results digest, written out from the seeded values."""
    lines = [
        ["o", o["grp"], o["item"], o["signal"], o["value"], o["label"]]
        for o in rows["observations"]
        if o["run_id"] == run_id
    ]
    n_obs = len(lines)
    lines += [
        ["m", m["name"], m["value"], m["ci_low"], m["ci_high"], m["step"]]
        for m in rows["metrics"]
        if m["run_id"] == run_id
    ]
    lines += [["t", t["item"], t["text"]] for t in rows["run_texts"] if t["run_id"] == run_id]
    text_ = b"".join(json.dumps(v, separators=(",", ":")).encode() + b"\n" for v in lines)
    counts = [n_obs, sum(line[0] == "m" for line in lines), sum(line[0] == "t" for line in lines)]
    return hashlib.sha256(text_).hexdigest(), counts


def _expected_leaves() -> list[bytes]:
    """The backfilled leaves of :func:`seed_rows`, by hand, in record-time order (ties: kind
    order protocol, signcheck, run, verdict, cost, journal)."""
    rows = seed_rows()
    p = rows["protocols"][0]
    s = rows["sign_checks"][0]
    out = [
        _canon(
            {
                "kind": "protocol",
                "protocol_id": "mig",
                "version": 1,
                "sha256": p["sha256"],
                "parent_sha256": None,
                "frozen_at": _iso(p["frozen_at"]),
            }
        ),
        _canon(
            {
                "kind": "signcheck",
                "id": 1,
                "protocol_sha256": s["protocol_sha256"],
                "passed": True,
                "ran_at": _iso(s["ran_at"]),
                "report_sha256": hashlib.sha256(s["report_json"].encode()).hexdigest(),
            }
        ),
    ]
    for run in rows["runs"]:
        digest, (n_obs, n_metrics, n_texts) = _results_sha256(rows, run["id"])
        body = {"kind": "run", "id": run["id"], "protocol_sha256": p["sha256"], "job": "j"}
        body.update(seed=1234, status=run["status"], results_sha256=digest)
        body.update(observations=n_obs, metrics=n_metrics, texts=n_texts)
        out.append(_canon(body))
    out += [_canon({"kind": "cost", "seq": c["seq"], "hash": c["hash"]}) for c in rows["costs"]]
    out += [
        _canon({"kind": "journal", "seq": j["seq"], "hash": j["hash"]})
        for j in rows["journal_entries"]
    ]
    v = rows["verdicts"][0]
    verdict = {"kind": "verdict", "id": 1, "protocol_sha256": p["sha256"], "verdict": "PARTIAL"}
    verdict.update(computed_at=_iso(v["computed_at"]), inputs_sha256=v["inputs_sha256"])
    verdict.update(run_ids=[1], details_sha256=hashlib.sha256(b'{"H1": "PARTIAL"}').hexdigest())
    return out + [_canon(verdict)]


def _mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


@pytest.mark.parametrize("revision", [r for r in EARLIER if r < "0005"])  # before the log
def test_upgrade_backfills_the_merkle_log(revision: str, ledger_url: str) -> None:
    """Revision 0005 gives every existing record its leaf, in record-time order; the root equals
    an independent computation from the seeded values, and the audit finds the log clean."""
    from docketml.ledger.integrity.audit import audit
    from docketml.ledger.integrity.log import log_head

    engine = make_engine(ledger_url, create=True)
    try:
        upgrade_to(engine, revision)
        seed(engine)
        upgrade_to(engine, "head")
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT position, kind, record_id, leaf, leaf_hash FROM log_leaves")
            ).all()
            nodes = conn.execute(text("SELECT count(*) FROM log_nodes")).scalar_one()
    finally:
        engine.dispose()
    rows.sort()
    expected = _expected_leaves()
    assert [r[0] for r in rows] == list(range(len(expected)))
    assert [r[3].encode() for r in rows] == expected
    assert [(r[1], r[2]) for r in rows][:3] == [("protocol", 1), ("signcheck", 1), ("run", 1)]
    hashes = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in expected]
    assert [r[4] for r in rows] == [h.hex() for h in hashes]
    assert nodes == 5 + 2 + 1  # 11 leaves: complete subtrees of 2, 4 and 8 leaves
    ledger = open_ledger(ledger_url)
    try:
        head = log_head(ledger)
        report = audit(ledger)
    finally:
        ledger.engine.dispose()
    assert (head.tree_size, head.root_hash) == (11, _mth(hashes))
    assert not [f for f in report.findings if f.table.startswith("log_")], report.findings
    assert not [f for f in report.findings if "Merkle" in f.problem], report.findings


@pytest.mark.parametrize("revision", [r for r in EARLIER if r < "0006"])  # before run_columns
def test_upgrade_stores_the_columns_of_finished_runs(revision: str, ledger_url: str) -> None:
    """Crossing revision 0006, ``upgrade`` stores the columns of every finished run with
    observations (the backfill), equal to what their rows give; the audit checks them."""
    from docketml.ledger.integrity.audit import audit
    from docketml.ledger.store import stream
    from docketml.ledger.store.results import load_parts

    engine = make_engine(ledger_url, create=True)
    try:
        upgrade_to(engine, revision)
        inserted = seed(engine)
        upgrade_to(engine, "head")
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT DISTINCT run_id FROM run_columns ORDER BY run_id")
            ).scalars().all()  # fmt: skip
    finally:
        engine.dispose()
    with_obs = sorted({o["run_id"] for o in inserted["observations"]})
    assert with_obs and stored == with_obs
    ledger = open_ledger(ledger_url)
    try:
        report = audit(ledger)
        with ledger.read_session() as s:
            for run_id in with_obs:
                assert stream.columns_cover(s, [run_id])
                payload = load_parts(s, [[run_id]])
                got = {
                    (b.group, i, sig): (lab, v)
                    for b in stream.iter_groups(s, [[run_id]])
                    for i, sig, lab, v in zip(b.items, b.signals, b.labels, b.values, strict=True)
                }
                assert got == payload.observations
    finally:
        ledger.engine.dispose()
    assert report.checked["run_columns"] == len(with_obs)
    assert not [f for f in report.findings if f.table == "run_columns"], report.findings
