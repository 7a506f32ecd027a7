"""The stored Merkle log (revision 0005) on SQLite and PostgreSQL.

- Proofs and roots read from the stored perfect-subtree nodes equal :mod:`merkle`'s over all
  leaf hashes, for every size up to 40 and every index / old size (and, without a database,
  :mod:`subtrees` for every size up to 64).
- Two processes appending at once: positions 0..n-1, no gap, no duplicate, one leaf per record.
- Tampering, with the triggers dropped and restored: a frozen protocol's margin rewritten
  0.02 -> 0.40 with its sha256 recomputed (and its sign-check re-bound), an ``UPDATE`` of a
  metrics row and of an observation of a completed run: the audit names the leaf and the record.
  A tail truncation of the log and a rewrite with consistent re-hashing of the leaves and nodes
  (the audit then is clean) fail ``merkle.verify_consistency`` against a head kept earlier.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import traceback
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from distributed_helpers import freeze, passing_sign_check
from sqlalchemy import func, select, text

from docketml.journal.schema import JournalEntry
from docketml.ledger.billing.costs import append_cost
from docketml.ledger.integrity import merkle, subtrees
from docketml.ledger.integrity.audit import audit
from docketml.ledger.integrity.leaf_audit import leaf_findings
from docketml.ledger.integrity.leaves import protocol_leaf_bytes, signcheck_leaf_bytes
from docketml.ledger.integrity.log import (
    consistency_proof_between,
    inclusion_proof_at,
    leaf_at,
    log_head,
    log_size,
    root_at,
)
from docketml.ledger.store import merkle_log
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger, open_ledger
from docketml.ledger.store.journal import append_entry
from docketml.ledger.store.models import LeafRow, ProtocolRow
from docketml.ledger.store.runs import complete_run, create_run, start_run
from docketml.migrations.triggers import (
    GUARDS,
    UNIQUE_KEYS,
    create_guard_triggers,
    create_triggers,
    expected_triggers,
    missing_triggers,
)
from docketml.protocols.loader import load_protocol_text

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "protocols" / "library" / "router_entropy_metacog.yaml"


def _journal(ledger: Ledger, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with ledger.session() as session:
            append_entry(
                session,
                JournalEntry(date=date(2026, 12, 3), title=f"entry {i}", observations=["o"]),
            )


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 by its recursive definition (independent of the library)."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def _stored_hashes(ledger: Ledger) -> list[bytes]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT position, leaf FROM log_leaves ORDER BY position")).all()
    assert [p for p, _ in rows] == list(range(len(rows)))
    return [hashlib.sha256(b"\x00" + leaf.encode()).digest() for _, leaf in rows]


# ------------------------------------------------------------------------ proofs from the store


def test_ranges_assemble_the_rfc_proofs_without_a_database() -> None:
    for n in range(1, 65):
        hashes = [merkle.leaf_hash(b"%d" % i) for i in range(n)]
        nodes = {}
        for level in range(7):
            width = 1 << level
            for idx in range(n // width):
                nodes[(level, idx)] = merkle.root_hash(hashes[idx * width : (idx + 1) * width])
        assert subtrees.range_hash(0, n, nodes) == merkle.root_hash(hashes)
        for i in range(n):
            ranges = subtrees.inclusion_ranges(i, n)
            got = [subtrees.range_hash(lo, hi, nodes) for lo, hi in ranges]
            assert got == merkle.inclusion_proof(hashes, i), (n, i)
            assert len(subtrees.nodes_for(ranges)) <= 2 * n.bit_length()
        for m in range(n + 1):
            ranges = subtrees.consistency_ranges(m, n)
            got = [subtrees.range_hash(lo, hi, nodes) for lo, hi in ranges]
            assert got == merkle.consistency_proof(hashes, m), (n, m)


def test_stored_proofs_equal_the_rfc_over_all_leaf_hashes(ledger: Ledger) -> None:
    _journal(ledger, 40)
    hashes = _stored_hashes(ledger)
    assert len(hashes) == 40
    with ledger.read_session() as session:
        assert log_size(session) == 40
        assert leaf_at(session, 39).hash == hashes[39]
        for n in range(0, 41):
            assert root_at(session, n) == merkle.root_hash(hashes[:n])
            if n:
                assert root_at(session, n) == _mth(hashes[:n])
            for i in range(n):
                proof = inclusion_proof_at(session, i, n)
                assert proof == merkle.inclusion_proof(hashes[:n], i), (n, i)
            for m in range(n + 1):
                proof = consistency_proof_between(session, m, n)
                assert proof == merkle.consistency_proof(hashes[:n], m), (m, n)
        with pytest.raises(ValueError):
            root_at(session, 41)
        with pytest.raises(IndexError):
            leaf_at(session, 40)
    # only complete perfect subtrees are stored: 20 + 10 + 5 + 2 + 1 nodes for 40 leaves
    with ledger.engine.connect() as conn:
        query = text("SELECT level, count(*) FROM log_nodes GROUP BY level")
        per_level = {int(level): n for level, n in conn.execute(query)}
    assert per_level == {1: 20, 2: 10, 3: 5, 4: 2, 5: 1}
    assert leaf_findings_clean(ledger)


def leaf_findings_clean(ledger: Ledger) -> bool:
    with ledger.read_session() as session:
        result = leaf_findings(session)
    assert result.problems == [], result.problems
    return True


def test_log_tables_are_append_only(ledger: Ledger) -> None:
    _journal(ledger, 3)
    assert UNIQUE_KEYS["log_leaves"] == (("position",), ("kind", "record_id"))
    with ledger.engine.connect() as conn:
        assert missing_triggers(conn) == []
    refused = [
        "UPDATE log_leaves SET leaf = 'x' WHERE position = 0",
        "DELETE FROM log_leaves WHERE position = 2",
        "UPDATE log_nodes SET hash = 'x'",
        "DELETE FROM log_nodes",
    ]
    if ledger.dialect == "postgresql":
        refused += ["TRUNCATE log_leaves", "TRUNCATE log_nodes"]
    else:  # REPLACE deletes the old row without DELETE triggers: refused by its own trigger
        refused += [
            "INSERT OR REPLACE INTO log_leaves (position, kind, record_id, leaf, leaf_hash) "
            "VALUES (1, 'journal', 99, '{}', 'x')",
            "INSERT OR REPLACE INTO log_leaves (position, kind, record_id, leaf, leaf_hash) "
            "VALUES (9, 'journal', 1, '{}', 'x')",
            "INSERT OR REPLACE INTO log_nodes (level, idx, hash) VALUES (1, 0, 'x')",
        ]
    for statement in refused:
        with pytest.raises(Exception, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(statement))
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM log_leaves")).scalar_one() == 3
        assert conn.execute(text("SELECT count(*) FROM log_nodes")).scalar_one() == 1
    assert leaf_findings_clean(ledger)


def test_a_rolled_back_record_leaves_no_leaf(ledger: Ledger) -> None:
    _journal(ledger, 1)
    with pytest.raises(RuntimeError), ledger.session() as session:
        append_entry(
            session, JournalEntry(date=date(2026, 12, 3), title="never", observations=["o"])
        )
        raise RuntimeError("abort")
    _journal(ledger, 1, start=1)
    with ledger.read_session() as session:
        assert log_size(session) == 2
    assert leaf_findings_clean(ledger)


def _per_level(ledger: Ledger) -> dict[int, int]:
    with ledger.engine.connect() as conn:
        query = text("SELECT level, count(*) FROM log_nodes GROUP BY level")
        return {int(level): n for level, n in conn.execute(query)}


def _expected_per_level(n: int) -> dict[int, int]:
    return {level: n >> level for level in range(1, n.bit_length()) if n >> level}


def _assert_log_is_the_rfc_tree(ledger: Ledger, n: int) -> None:
    hashes = _stored_hashes(ledger)
    assert len(hashes) == n
    with ledger.read_session() as session:
        for m in range(1, n + 1):
            assert root_at(session, m) == _mth(hashes[:m]), m
    assert _per_level(ledger) == _expected_per_level(n)
    assert leaf_findings_clean(ledger)


def test_cached_and_read_appends_build_the_same_tree(ledger: Ledger) -> None:
    """Two engines on one ledger take turns: each turn's first append finds its connection's
    cached edge stale (the other engine appended) and reads it; the rest use the cache. Every
    root and node is still the RFC tree of the stored leaves."""
    other = open_ledger(ledger.engine.url.render_as_string(hide_password=False))
    cached_path = "cached+commit" if ledger.dialect == "postgresql" else "cached"
    try:
        before = dict(merkle_log.APPEND_PATHS)
        turns = [(ledger, 5), (other, 3), (ledger, 1), (other, 7), (ledger, 4)]
        for i, (writer, n) in enumerate(turns):
            _journal(writer, n, start=100 * i)
        delta = {k: merkle_log.APPEND_PATHS[k] - before.get(k, 0) for k in merkle_log.APPEND_PATHS}
        assert delta.get("read", 0) == len(turns)  # one stale (or cold) edge per turn
        assert delta.get(cached_path, 0) == sum(n for _, n in turns) - len(turns)
        _assert_log_is_the_rfc_tree(ledger, 20)
    finally:
        other.engine.dispose()


def test_a_rolled_back_append_leaves_a_stale_cache_that_is_not_used(ledger: Ledger) -> None:
    _journal(ledger, 3)
    with pytest.raises(RuntimeError), ledger.session() as session:
        # the leaf goes in (and the connection caches size 4), then the transaction rolls back
        merkle_log.append_leaves(session, [merkle_log._Pending("journal", 999, b'{"x":1}')])
        raise RuntimeError("abort")
    before = merkle_log.APPEND_PATHS["read"]
    _journal(ledger, 2, start=3)
    assert merkle_log.APPEND_PATHS["read"] == before + 1  # the guard refused the stale edge
    _assert_log_is_the_rfc_tree(ledger, 5)


def test_an_outer_transaction_is_not_committed_by_the_append(ledger: Ledger) -> None:
    """A session joined to a caller's transaction (``Session(bind=connection)``) appends
    without committing it: the caller's rollback undoes the record and its leaf."""
    from sqlalchemy.orm import Session as OrmSession

    _journal(ledger, 2)
    with ledger.engine.connect() as conn:
        outer = conn.begin()
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("SELECT 1")  # BEGIN IMMEDIATE is issued at begin
        with OrmSession(bind=conn) as session:
            append_entry(
                session, JournalEntry(date=date(2026, 12, 3), title="outer", observations=["o"])
            )
            session.commit()
        outer.rollback()
    with ledger.read_session() as session:
        assert log_size(session) == 2
    _journal(ledger, 2, start=2)
    _assert_log_is_the_rfc_tree(ledger, 4)


# ---------------------------------------------------------------------------------- concurrency


def _append_many(url: str, worker: int, n: int, barrier: Any, errors: Any) -> None:
    try:
        ledger = open_ledger(url)
        barrier.wait(timeout=60)
        for i in range(n):
            with ledger.session() as session:
                if i % 2:
                    append_cost(session, hardware="cpu", usd_micros=10 + i, label=f"w{worker}")
                else:
                    entry = JournalEntry(
                        date=date(2026, 12, 3), title=f"w{worker} #{i}", observations=["o"]
                    )
                    append_entry(session, entry)
        ledger.engine.dispose()
    except Exception:  # pragma: no cover - reported to the parent
        errors.put(traceback.format_exc())


def test_two_processes_appending_leave_no_gap_and_no_duplicate(ledger: Ledger) -> None:
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    url = ledger.engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_append_many, args=(url, w, 30, barrier, errors)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert errors.empty(), errors.get()
    assert all(p.exitcode == 0 for p in procs)
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT position, kind, record_id FROM log_leaves")).all()
    assert sorted(p for p, _, _ in rows) == list(range(60))
    assert len({(k, r) for _, k, r in rows}) == 60
    assert sum(1 for _, k, _ in rows if k == "cost") == 30
    hashes = _stored_hashes(ledger)
    with ledger.read_session() as session:
        assert root_at(session, 60) == _mth(hashes)
    assert leaf_findings_clean(ledger)


# ------------------------------------------------------------------------------------ tampering


def _drop(ledger: Ledger, tables: list[str]) -> None:
    with ledger.engine.begin() as conn:
        for table in tables:
            for name in expected_triggers(table, conn.dialect.name):
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
                else:
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))


def _restore(ledger: Ledger, tables: list[str]) -> None:
    with ledger.engine.begin() as conn:
        create_triggers(conn, tables)
        create_guard_triggers(conn, GUARDS)
        assert missing_triggers(conn) == []


def _frozen_library_protocol(ledger: Ledger) -> int:
    loaded = load_protocol_text(LIBRARY.read_text(encoding="utf-8"), str(LIBRARY))
    assert "margin: 0.02" in loaded.yaml_text
    with ledger.session() as session:
        row = store.register(session, loaded).row
        store.freeze(session, row.protocol_id, passing_sign_check)
        return row.id


def _rewrite_margin(ledger: Ledger, pk: int) -> tuple[str, str]:
    """The attack of issue 14: margin 0.02 -> 0.40, sha256 recomputed, the sign-check re-bound,
    triggers restored. Returns (old sha256, new sha256)."""
    with ledger.engine.connect() as conn:
        old_yaml, old_sha = conn.execute(
            text("SELECT yaml_text, sha256 FROM protocols WHERE id = :p"), {"p": pk}
        ).one()
    forged = load_protocol_text(old_yaml.replace("margin: 0.02", "margin: 0.40"), "forged.yaml")
    _drop(ledger, ["protocols", "sign_checks"])
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE protocols SET yaml_text = :y, canonical_json = :c, sha256 = :s "
                "WHERE id = :p"
            ),
            {"y": forged.yaml_text, "c": forged.canonical, "s": forged.sha256, "p": pk},
        )
        conn.execute(
            text("UPDATE sign_checks SET protocol_sha256 = :s WHERE protocol_pk = :p"),
            {"s": forged.sha256, "p": pk},
        )
    _restore(ledger, ["protocols", "sign_checks"])
    return old_sha, forged.sha256


def test_rewritten_margin_with_recomputed_sha256_is_found(ledger: Ledger) -> None:
    pk = _frozen_library_protocol(ledger)
    assert audit(ledger).clean
    old_sha, new_sha = _rewrite_margin(ledger, pk)
    report = audit(ledger)
    # every other check is satisfied by the forgery: only the log finds it
    assert {f.table for f in report.findings} == {"log_leaves"}, report.findings
    problems = {f.row: f.problem for f in report.findings}
    assert problems[1].startswith(
        "the protocol leaf of protocols row 1 (router-entropy-metacog v1) differs from that "
        f'record now (sha256: stored "{old_sha}", now "{new_sha}")'
    )
    assert problems[0].startswith("the signcheck leaf of sign_checks row 1 differs")


def _completed_run(ledger: Ledger) -> int:
    pk = freeze(ledger, "runs", [{"name": "j", "kind": "synthetic"}])
    with ledger.session() as session:
        sha = session.scalar(text("SELECT sha256 FROM protocols WHERE id = :p"), {"p": pk})
        run = create_run(
            session, protocol_pk=pk, protocol_sha256=sha, job="j", kind="synthetic", config={}
        )
        start_run(session, run.id, worker="t", lease_s=60)
        obs = [
            {"group": "g1", "item": f"i{k}", "signal": "s", "value": k / 3, "label": k % 2}
            for k in range(20)
        ]
        metrics = [{"name": "loss", "value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "step": 7}]
        assert complete_run(
            session,
            run.id,
            status="succeeded",
            observations=obs,
            metrics=metrics,
            texts={"i0": "héllo"},
        )
        return run.id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE metrics SET value = 0.01 WHERE run_id = :r",
        "UPDATE observations SET value = 0.99 WHERE run_id = :r AND item = 'i3'",
        "UPDATE run_texts SET text = 'edited' WHERE run_id = :r",
    ],
)
def test_an_update_of_a_completed_runs_results_is_found(ledger: Ledger, statement: str) -> None:
    run_id = _completed_run(ledger)
    assert leaf_findings_clean(ledger)
    with ledger.engine.begin() as conn:  # no trigger: results rows are not append-only tables
        assert conn.execute(text(statement), {"r": run_id}).rowcount == 1
    with ledger.read_session() as session:
        problems = leaf_findings(session).problems
    position = _position(ledger, "run", run_id)
    assert len(problems) == 1, problems
    table, row, problem = problems[0]
    assert (table, row) == ("log_leaves", position)
    assert problem.startswith(f"the run leaf of runs row {run_id} differs from that record now")
    assert "results_sha256: stored" in problem


def _position(ledger: Ledger, kind: str, record_id: int) -> int:
    with ledger.read_session() as session:
        return session.scalar(
            select(LeafRow.position).where(LeafRow.kind == kind, LeafRow.record_id == record_id)
        )


def _rebuild_nodes(ledger: Ledger) -> None:
    """What a careful forger does: recompute every stored node from the leaves."""
    hashes = _stored_hashes(ledger)
    rows, level, below = [], 1, hashes
    while len(below) >= 2:
        above = [
            hashlib.sha256(b"\x01" + below[i] + below[i + 1]).digest()
            for i in range(0, len(below) - 1, 2)
        ]
        rows += [{"l": level, "i": i, "h": h.hex()} for i, h in enumerate(above)]
        level, below = level + 1, above
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM log_nodes"))
        conn.execute(text("INSERT INTO log_nodes (level, idx, hash) VALUES (:l, :i, :h)"), rows)


def test_truncating_the_log_fails_consistency_with_a_kept_head(ledger: Ledger) -> None:
    _journal(ledger, 10)
    kept = log_head(ledger)
    assert kept.tree_size == 10
    _drop(ledger, ["log_leaves", "log_nodes", "journal_entries"])
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM log_leaves WHERE position >= 7"))
        conn.execute(text("DELETE FROM journal_entries WHERE seq >= 8"))
    _rebuild_nodes(ledger)
    _restore(ledger, ["log_leaves", "log_nodes", "journal_entries"])
    assert leaf_findings_clean(ledger)  # consistent with itself
    with ledger.read_session() as session:  # the kept head is longer than the log
        with pytest.raises(ValueError):
            consistency_proof_between(session, kept.tree_size, log_size(session))
    _journal(ledger, 5, start=100)  # grows past the kept size again
    now = log_head(ledger)
    assert now.tree_size == 12
    with ledger.read_session() as session:
        proof = consistency_proof_between(session, kept.tree_size, now.tree_size)
        assert root_at(session, kept.tree_size) != kept.root_hash
    assert not merkle.verify_consistency(
        kept.tree_size, now.tree_size, kept.root_hash, now.root_hash, proof
    )
    assert leaf_findings_clean(ledger)


def test_a_consistent_rewrite_is_clean_alone_but_fails_against_a_kept_head(
    ledger: Ledger,
) -> None:
    pk = _frozen_library_protocol(ledger)
    _journal(ledger, 6)
    kept = log_head(ledger)
    with ledger.read_session() as session:
        assert consistency_proof_between(session, kept.tree_size, kept.tree_size) == []
    _, new_sha = _rewrite_margin(ledger, pk)
    # the forger also rewrites the two leaves (documented format) and every node, consistently
    with ledger.read_session() as session:
        row = session.get(ProtocolRow, pk)
        check = store.latest_sign_check(session, row)
        assert row.sha256 == new_sha and check.protocol_sha256 == new_sha
        leaves = {
            ("protocol", pk): protocol_leaf_bytes(
                protocol_id=row.protocol_id,
                version=row.version,
                sha256=row.sha256,
                parent_sha256=None,
                frozen_at=row.frozen_at,
            ),
            ("signcheck", check.id): signcheck_leaf_bytes(
                id=check.id,
                protocol_sha256=check.protocol_sha256,
                passed=check.passed,
                ran_at=check.ran_at,
                report_json=check.report_json,
            ),
        }
    _drop(ledger, ["log_leaves", "log_nodes"])
    with ledger.engine.begin() as conn:
        for (kind, rid), leaf in leaves.items():
            conn.execute(
                text(
                    "UPDATE log_leaves SET leaf = :l, leaf_hash = :h "
                    "WHERE kind = :k AND record_id = :r"
                ),
                {"l": leaf.decode(), "h": merkle.leaf_hash(leaf).hex(), "k": kind, "r": rid},
            )
    _rebuild_nodes(ledger)
    _restore(ledger, ["log_leaves", "log_nodes"])
    assert audit(ledger).clean  # nothing inside the ledger disagrees any more
    now = log_head(ledger)
    assert now.tree_size == kept.tree_size and now.root_hash != kept.root_hash
    with ledger.read_session() as session:
        proof = consistency_proof_between(session, kept.tree_size, now.tree_size)
        assert session.scalar(select(func.count()).select_from(LeafRow)) == kept.tree_size
    assert not merkle.verify_consistency(
        kept.tree_size, now.tree_size, kept.root_hash, now.root_hash, proof
    )


def test_results_digest_is_the_documented_json_lines() -> None:
    """``results_sha256`` equals SHA-256 over ``json.dumps(line, separators=(",", ":"),
    ensure_ascii=True) + "\\n"`` per row (docs/transparency.md), for awkward values too."""
    import json
    import math
    import random

    from docketml.ledger.integrity.leaves import results_sha256

    rng = random.Random(3)

    def s() -> str:
        return "".join(rng.choice('aé\n"\\€\x00😀z') for _ in range(rng.randrange(5)))

    def f() -> float:
        special = [-0.0, 0.0, math.nan, math.inf, -math.inf, 1e16, 1 / 3, 5e-324]
        return rng.choice([rng.random() * 10 ** rng.randrange(-30, 30), *special])

    for _ in range(500):
        obs = [(s(), s(), s(), f(), rng.choice([None, 0, 1, -5])) for _ in range(3)]
        met = [(s(), f(), rng.choice([None, f()]), None, rng.choice([None, 7, 2**40]))]
        texts = [(s(), s())]
        lines = [["o", *o] for o in obs] + [["m", *m] for m in met] + [["t", *t] for t in texts]
        raw = b"".join(
            json.dumps(line, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
            for line in lines
        )
        assert results_sha256(obs, met, texts) == (hashlib.sha256(raw).hexdigest(), 3, 1, 1)
