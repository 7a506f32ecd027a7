"""``docket audit``: a clean ledger passes; tampering through raw SQL with the triggers dropped is
found and named (table, row, what differs) with exit 3, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from docketml.ledger.integrity.audit import audit, json_differences
from docketml.ledger.store.db import Ledger, open_ledger
from docketml.ledger.store.models import RunRow
from docketml.ledger.store.runs import create_run, reap_abandoned, start_run
from docketml.migrations.triggers import expected_triggers

AUDITED = """\
docket: 1
id: audited
title: Audited study
hypotheses:
  - {id: H1, statement: s separates the classes, rule: r}
signals:
  s: {higher_means: positive}
labels: {source: judged}
groups: [g1]
decision_rules:
  r:
    kind: threshold
    statistic: auroc
    signal: s
    job: synth
    op: ">="
    bound: 0.6
    ci: {resamples: 200, seed: 1}
jobs:
  - name: synth
    kind: synthetic
    params: {groups: [g1], signals: {s: positive}, n_per_class: 20, effect: 2.0}
"""


@pytest.fixture
def studied(docket, tmp_path: Path) -> Iterator[tuple[object, Ledger]]:
    """A ledger with a frozen protocol, a run, a verdict, three journal entries and costs."""
    (tmp_path / "audited.yaml").write_text(AUDITED, encoding="utf-8")
    for args in (
        ("protocol", "register", "audited.yaml"),
        ("protocol", "freeze", "audited"),
        ("run", "audited", "--no-progress"),
        ("verdict", "audited"),
        ("journal", "add", "--protocol", "audited", "--title", "first", "--obs", "auroc 0.99"),
        ("journal", "add", "--title", "second", "--inf", "it separates:0.9"),
        ("journal", "add", "--corrects", "1", "--title", "third"),
        ("cost", "import-receipts", "--protocol", "audited"),
    ):
        result = docket(*args)
        assert result.exit_code == 0, (args, result.output)
    led = open_ledger(docket.url)  # type: ignore[attr-defined]
    yield docket, led
    led.engine.dispose()


def drop_triggers(led: Ledger, tables: list[str]) -> None:
    """DROP TRIGGER (SQLite / PostgreSQL) for every docket trigger of ``tables``."""
    with led.engine.begin() as conn:
        for table in tables:
            for name in expected_triggers(table, conn.dialect.name):
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
                else:
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))


def _findings(result) -> list[dict]:
    return json.loads(result.stdout)["findings"]


def test_clean_ledger(studied) -> None:
    docket, led = studied
    result = docket("audit")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("clean:")
    data = json.loads(docket("audit", "--json").output)
    assert data["clean"] is True and data["findings"] == []
    assert data["checked"] == {
        "protocols": 1,
        "journal_entries": 3,
        "costs": 7,  # the run's metered cost + six receipts
        "verdicts": 1,
        "runs": 1,  # its cost_micros matches its costs rows
        "run_columns": 1,  # the run's stored columns equal its observation rows
        "ingest_files": 0,
        "log_leaves": 14,  # freeze, sign-check, run, verdict, 7 costs, 3 journal entries
        "triggers_missing": 0,
        "triggers_altered": 0,
    }
    assert data["notes"] == []
    assert len(data["heads"]["journal_entries"]) == 64


def test_tampering_is_found_and_named(studied) -> None:
    docket, led = studied
    drop_triggers(led, ["protocols", "costs", "journal_entries"])
    with led.engine.begin() as conn:
        conn.execute(
            text("UPDATE protocols SET yaml_text = REPLACE(yaml_text, 'bound: 0.6', 'bound: 0.1')")
        )
        conn.execute(text("UPDATE costs SET usd_micros = 1 WHERE seq = 4"))  # receipts:v7
        conn.execute(
            text(
                "UPDATE journal_entries SET body_json = REPLACE(body_json, 'auroc 0.99', "
                "'auroc 0.51') WHERE seq = 1"
            )
        )
        conn.execute(text("DELETE FROM journal_entries WHERE seq = 2"))
        conn.execute(
            text(
                "UPDATE observations SET value = value + 10 "
                "WHERE id = (SELECT MIN(id) FROM observations)"
            )
        )
    result = docket("audit", "--json")
    assert result.exit_code == 3, result.output
    found: dict[tuple, str] = {}
    for f in _findings(result):  # several findings of one row are joined
        key = (f["table"], f["row"])
        found[key] = found[key] + " | " + f["problem"] if key in found else f["problem"]
    problems = json.dumps(list(found.values()))
    protocol = found[("protocols", "1 (audited v1)")]
    assert "decision_rules.r.bound: stored 0.6, now 0.1" in protocol
    assert "sha256 stored" in problems and "recomputed from yaml_text" in problems
    assert found[("costs", 4)].startswith("content changed") and "now reads 1 micros" in problems
    assert found[("journal_entries", 1)].startswith("content changed")
    assert "does not link" in found[("journal_entries", 3)]  # seq 2 was deleted
    assert "observations changed" in found[("verdicts", 1)]
    missing = {f["problem"].split()[1] for f in _findings(result) if f["row"] is None}
    dialect = led.dialect
    assert missing == {
        name
        for t in ("protocols", "costs", "journal_entries")
        for name in expected_triggers(t, dialect)
    }
    human = docket("audit")
    assert human.exit_code == 3
    assert "integrity findings" in human.output and "integrity finding(s)" in human.output


def test_a_missing_trigger_alone_fails_the_audit(docket) -> None:
    assert docket("audit").exit_code == 0
    led = open_ledger(docket.url)
    try:
        with led.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER docket_reproductions_no_delete")
            else:
                conn.execute(text("DROP TRIGGER docket_reproductions_no_delete ON reproductions"))
    finally:
        led.engine.dispose()
    result = docket("audit", "--json")
    assert result.exit_code == 3
    gone = "trigger docket_reproductions_no_delete is missing: reproductions is unguarded"
    assert _findings(result) == [{"table": "reproductions", "row": None, "problem": gone}]


def test_rebinding_a_run_and_rehashing_a_protocol_is_found(studied) -> None:
    docket, led = studied
    drop_triggers(led, ["protocols"])
    with led.engine.begin() as conn:  # rewrite the protocol consistently: canonical, sha and yaml
        conn.execute(
            text(
                "UPDATE protocols SET sha256 = :sha, canonical_json = REPLACE(canonical_json, "
                ":old_c, :new_c), yaml_text = REPLACE(yaml_text, :old_y, :new_y)"
            ),
            {
                "sha": "f" * 64,
                "old_c": '"bound":0.6',
                "new_c": '"bound":0.1',
                "old_y": "bound: 0.6",
                "new_y": "bound: 0.1",
            },
        )
    found = _findings(docket("audit", "--json"))
    tables = {(f["table"], f["row"]) for f in found}
    assert ("protocols", "1 (audited v1)") in tables
    assert ("runs", 1) in tables and ("sign_checks", 1) in tables and ("verdicts", 1) in tables
    assert any("canonical_json hashes to" in f["problem"] for f in found)


def test_audit_lists_expired_leases_and_writes_nothing(ledger) -> None:
    from docketml.ledger.store import protocols as store
    from docketml.protocols.loader import load_protocol_text

    with ledger.session() as session:
        row = store.register(session, load_protocol_text(AUDITED)).row
        run = create_run(
            session,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job="synth",
            kind="synthetic",
            config={},
        )
        start_run(session, run.id, worker="gone", lease_s=-1.0)  # the runner died long ago
        run_id = run.id
    report = audit(ledger)
    assert report.expired_leases == [run_id]
    assert report.clean, report.findings
    assert report.checked["costs"] == 0  # nothing was reaped or billed by the audit
    with ledger.session() as session:
        assert session.get(RunRow, run_id).status == "running"
        reaped = [r.id for r in reap_abandoned(session)]
    assert reaped == [run_id]
    report = audit(ledger)
    assert report.expired_leases == [] and report.clean, report.findings
    assert report.checked["costs"] == 1  # the reaped run's cost joined the chain cleanly


def test_json_differences() -> None:
    assert json_differences({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 3]}}) == [
        "a.b: stored 1, now 2",
        "a.c[1]: stored 2, now 3",
    ]
    assert json_differences({"a": 1}, {"b": 1}) == ["a: removed (was 1)", "b: added 1"]


# --- what the audit re-derives beyond hashes (issue 16) ---------------------------------------


def _problems(docket, table: str, row) -> list[str]:
    result = docket("audit", "--json")
    assert result.exit_code == 3, result.output
    return [f["problem"] for f in _findings(result) if (f["table"], f["row"]) == (table, row)]


def test_a_forged_copy_of_a_verdict_with_another_verdict_is_found(studied) -> None:
    """INSERT is allowed on the append-only table: a copy of verdict 1 saying DISPROVEN keeps
    every hash intact, and only re-deriving the verdict from its pinned runs shows it."""
    docket, led = studied
    with led.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verdicts (protocol_pk, protocol_sha256, computed_at, verdict, "
                "details_json, inputs_sha256, run_ids_json) SELECT protocol_pk, protocol_sha256, "
                "computed_at, 'DISPROVEN', details_json, inputs_sha256, run_ids_json "
                "FROM verdicts WHERE id = 1"
            )
        )
    problems = _problems(docket, "verdicts", 2)
    assert any(
        "verdict column says DISPROVEN, the verdict engine re-derives PROVEN from the runs it "
        "pinned (1): forged or edited" in p
        for p in problems
    ), problems
    assert _problems(docket, "verdicts", 1) == []  # the genuine one stays clean


def test_an_edited_verdict_is_found(studied) -> None:
    docket, led = studied
    drop_triggers(led, ["verdicts"])
    with led.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE verdicts SET verdict = 'DISPROVEN', details_json = "
                'REPLACE(details_json, \'"verdict": "PROVEN"\', \'"verdict": "DISPROVEN"\')'
            )
        )
    problems = " | ".join(_problems(docket, "verdicts", 1))
    assert "verdict column says DISPROVEN" in problems
    assert "details_json verdict 'DISPROVEN', re-derived PROVEN" in problems
    assert "details_json hypotheses differ from the re-derivation: H1 'DISPROVEN' -> PROVEN" in (
        problems
    )


def test_a_verdict_pinning_a_failed_run_is_found(studied) -> None:
    docket, led = studied
    with led.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'failed' WHERE id = 1"))
    problems = " | ".join(_problems(docket, "verdicts", 1))
    assert "pinned run 1 is failed" in problems


def test_a_same_named_or_disabled_trigger_is_found(docket) -> None:
    """SQLite: a no-op trigger under docket's name. PostgreSQL: the trigger function replaced
    by one returning NEW, and ``DISABLE TRIGGER USER``. Each passed the name-only check."""
    led = open_ledger(docket.url)
    try:
        with led.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER docket_verdicts_no_update")
                conn.exec_driver_sql(
                    "CREATE TRIGGER docket_verdicts_no_update BEFORE UPDATE ON verdicts "
                    "FOR EACH ROW BEGIN SELECT 1; END"
                )
                expected = [("verdicts", "trigger docket_verdicts_no_update differs from")]
            else:
                conn.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION docket_reject_change() RETURNS trigger "
                        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
                    )
                )
                conn.execute(text("ALTER TABLE protocols DISABLE TRIGGER USER"))
                expected = [
                    ("verdicts", "trigger docket_verdicts_no_update its function"),
                    ("costs", "trigger docket_costs_no_truncate its function"),
                    ("protocols", "trigger docket_protocols_frozen_no_update is disabled"),
                    ("protocols", "trigger docket_protocols_freeze_guard is disabled"),
                ]
    finally:
        led.engine.dispose()
    result = docket("audit", "--json")
    assert result.exit_code == 3, result.output
    found = [(f["table"], f["problem"]) for f in _findings(result) if f["row"] is None]
    for table, start in expected:
        assert any(t == table and p.startswith(start) for t, p in found), (start, found)
    assert json.loads(result.stdout)["checked"]["triggers_missing"] == 0


SECOND = AUDITED.replace("id: audited", "id: second").replace("title: Audited", "title: Second")


def test_frozen_without_a_passing_sign_check_is_found(studied, tmp_path: Path) -> None:
    """With the guard triggers dropped, ``status='frozen'`` set by hand on a protocol with no
    sign-check, and on one whose sign-check failed."""
    docket, led = studied
    (tmp_path / "second.yaml").write_text(SECOND, encoding="utf-8")
    (tmp_path / "third.yaml").write_text(
        SECOND.replace("id: second", "id: third"), encoding="utf-8"
    )
    for name in ("second.yaml", "third.yaml"):
        assert docket("protocol", "register", name).exit_code == 0
    drop_triggers(led, ["protocols"])
    with led.engine.begin() as conn:
        sha = conn.execute(text("SELECT sha256 FROM protocols WHERE id = 3")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO sign_checks (protocol_pk, protocol_sha256, ran_at, passed, "
                "report_json) VALUES (3, :sha, CURRENT_TIMESTAMP, FALSE, '{}')"
            ),
            {"sha": sha},
        )
        conn.execute(
            text(
                "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP "
                "WHERE id IN (2, 3)"
            )
        )
    unlogged = "has no leaf in the Merkle log (log_leaves)"  # frozen by hand: never logged
    assert _problems(docket, "protocols", "2 (second v1)") == [
        "is frozen without a sign-check",
        unlogged,
    ]
    assert _problems(docket, "protocols", "3 (third v1)") == [
        "is frozen but its latest sign-check (row 2) failed",
        unlogged,
    ]
    assert _problems(docket, "sign_checks", 2) == [unlogged]
    assert _problems(docket, "protocols", "1 (audited v1)") == []


def test_a_negative_cost_with_a_correct_hash_and_a_wrong_run_total_are_found(studied) -> None:
    from docketml.ledger.billing.costs import append_cost

    docket, led = studied
    drop_triggers(led, ["costs", "runs"])  # the guard of revision 0004 would refuse it
    with led.session() as session:
        seq = append_cost(session, hardware="cpu", usd_micros=-5_000_000, note="refund?").seq
    with led.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET cost_micros = cost_micros + 7 WHERE id = 1"))
    assert _problems(docket, "costs", seq) == ["negative cost -$5.00: a cost is >= 0"]
    (problem,) = _problems(docket, "runs", 1)
    assert problem.startswith("cost_micros $") and "but its costs rows add up to $" in problem


def _ingest_rows(path: Path, shift: float = 0.0) -> Path:
    rows = [
        {"group": "g1", "item": f"i{k}", "label": k % 2, "signals": {"s": k % 2 + shift}}
        for k in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_an_ingested_file_changed_after_ingest_is_found_a_gone_one_is_a_note(
    studied, tmp_path: Path
) -> None:
    docket, led = studied
    changed = _ingest_rows(tmp_path / "changed.jsonl")
    gone = _ingest_rows(tmp_path / "gone.jsonl", shift=0.5)
    for path in (changed, gone):
        result = docket("ingest", "audited", str(path), "--job", "synth")
        assert result.exit_code == 0, result.output
    result = docket("audit", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checked"]["ingest_files"] == 2
    _ingest_rows(changed, shift=0.25)  # rewritten in place
    gone.unlink()
    result = docket("audit", "--json")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    (finding,) = [f for f in data["findings"] if f["table"] == "runs"]
    assert finding["row"] == 2 and f"ingested file {changed} now hashes to" in finding["problem"]
    assert data["notes"] == [f"run 3: ingested file {gone} is gone; not re-checked"]
