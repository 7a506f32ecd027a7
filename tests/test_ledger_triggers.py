"""Append-only and frozen-row triggers, on SQLite and on a real PostgreSQL (``ledger`` fixture).

Everything here goes through raw SQL (``text()`` / ``exec_driver_sql``), never the ORM: the
triggers must hold against anyone with a database connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, UniqueConstraint, inspect, text
from sqlalchemy.exc import DBAPIError

from docketml.ledger.store.db import Ledger, init_ledger
from docketml.ledger.store.models import Base
from docketml.migrations import triggers

APPEND_ONLY = [
    "sign_checks",
    "verdicts",
    "verdict_looks",
    "costs",
    "journal_entries",
    "reproductions",
]

# written out here rather than taken from ledger.triggers, so a renamed trigger is noticed
EXPECTED_COMMON = {
    "docket_protocols_frozen_no_update",
    "docket_protocols_frozen_no_delete",
    *(f"docket_{t}_no_update" for t in APPEND_ONLY),
    *(f"docket_{t}_no_delete" for t in APPEND_ONLY),
}
EXPECTED = {
    "sqlite": EXPECTED_COMMON
    | {"docket_protocols_no_replace"}
    | {f"docket_{t}_no_replace" for t in APPEND_ONLY},
    "postgresql": EXPECTED_COMMON | {f"docket_{t}_no_truncate" for t in APPEND_ONLY},
}

# One row per protected table, inserted with raw SQL. :p is the id of a protocol row.
INSERTS = {
    "sign_checks": (
        "INSERT INTO sign_checks (id, protocol_pk, protocol_sha256, ran_at, passed, report_json) "
        "VALUES (1, :p, 'a', CURRENT_TIMESTAMP, TRUE, '{}')"
    ),
    "verdicts": (
        "INSERT INTO verdicts (id, protocol_pk, protocol_sha256, computed_at, verdict, "
        "details_json, inputs_sha256, run_ids_json) "
        "VALUES (1, :p, 'a', CURRENT_TIMESTAMP, 'PROVEN', '{}', 'b', '[]')"
    ),
    "verdict_looks": (
        "INSERT INTO verdict_looks (id, protocol_pk, verdict_id, at, inputs_sha256, verdict) "
        "VALUES (1, :p, 1, CURRENT_TIMESTAMP, 'b', 'PROVEN')"
    ),
    "costs": (
        "INSERT INTO costs (id, seq, at, protocol_pk, hardware, rate_micros_per_hour, usd_micros, "
        "prev_hash, hash) VALUES (1, 1, CURRENT_TIMESTAMP, :p, 'cpu', 0, 1500000, 'g', 'h')"
    ),
    "journal_entries": (
        "INSERT INTO journal_entries (id, seq, at, protocol_pk, title, body_json, prev_hash, hash) "
        "VALUES (1, 1, CURRENT_TIMESTAMP, :p, 't', '{}', 'g', 'h')"
    ),
    "reproductions": (
        "INSERT INTO reproductions (id, protocol_pk, claim, at, expected, tolerance, passed) "
        "VALUES (1, :p, 'c', CURRENT_TIMESTAMP, 0.5, 0.01, TRUE)"
    ),
}
# an UPDATE that touches a harmless column of each table
UPDATES = {
    "sign_checks": "UPDATE sign_checks SET report_json = '{\"x\": 1}'",
    "verdicts": "UPDATE verdicts SET verdict = 'DISPROVEN'",
    "verdict_looks": "UPDATE verdict_looks SET who = 'someone else'",
    "costs": "UPDATE costs SET usd_micros = 1",
    "journal_entries": "UPDATE journal_entries SET title = 'rewritten'",
    "reproductions": "UPDATE reproductions SET passed = FALSE",
}


def sign_check(conn: Connection, pk: int, passed: bool, sc_id: int | None = None) -> None:
    """A raw sign-check row of protocol row ``pk`` (bound to its sha256), id 1000+ by default."""
    conn.execute(
        text(
            "INSERT INTO sign_checks (id, protocol_pk, protocol_sha256, ran_at, passed, "
            "report_json) VALUES (:id, :pk, :sha, CURRENT_TIMESTAMP, :passed, '{}')"
        ),
        {"id": sc_id or 1000 + pk, "pk": pk, "sha": f"{pk:064d}", "passed": passed},
    )


def insert_protocol(conn: Connection, pk: int, status: str) -> None:
    """A raw protocol row; a ``frozen`` one is inserted registered, given a passing sign-check
    (id 1000 + pk) and frozen, as the freeze trigger of revision 0004 demands."""
    conn.execute(
        text(
            "INSERT INTO protocols (id, protocol_id, version, title, yaml_text, canonical_json, "
            "sha256, status, registered_at) VALUES (:pk, :pid, 1, 't', 'docket: 1', '{}', :sha, "
            "'registered', CURRENT_TIMESTAMP)"
        ),
        {"pk": pk, "pid": f"p{pk}", "sha": f"{pk:064d}"},
    )
    if status == "frozen":
        sign_check(conn, pk, True)
        conn.execute(
            text(
                "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP "
                "WHERE id = :pk"
            ),
            {"pk": pk},
        )


def rejected(ledger: Ledger, sql: str, params: dict | None = None, match: str = "docket: ") -> None:
    """``sql`` fails with docket's trigger message and leaves nothing behind."""
    with pytest.raises(DBAPIError, match=match):
        with ledger.engine.begin() as conn:
            conn.execute(text(sql), params or {})


def scalar(ledger: Ledger, sql: str) -> object:
    with ledger.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_every_trigger_exists_after_init(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert triggers.missing_triggers(conn) == []
        if ledger.dialect == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
            )
        else:
            rows = conn.execute(
                text(
                    "SELECT t.tgname, c.relname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
                )
            )
        found = {name: table for name, table in rows}
    assert EXPECTED[ledger.dialect] <= set(found), EXPECTED[ledger.dialect] - set(found)
    for name in EXPECTED[ledger.dialect]:
        table = (
            "protocols"
            if name.startswith("docket_protocols_")
            else name[len("docket_") :].rsplit("_no_", 1)[0]
        )
        assert found[name] == table, (name, found[name])


def test_missing_trigger_is_reported(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        on = "" if ledger.dialect == "sqlite" else " ON verdicts"
        conn.exec_driver_sql(f"DROP TRIGGER docket_verdicts_no_delete{on}")
        assert triggers.missing_triggers(conn) == [("verdicts", "docket_verdicts_no_delete")]
        triggers.create_triggers(conn, ["verdicts"])
        assert triggers.missing_triggers(conn) == []


def test_frozen_protocol_row_is_immutable(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "registered")
        sign_check(conn, 1, True)
    # a registered row may be frozen (the one UPDATE freeze makes) ...
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP WHERE id = 1"
            )
        )
    # ... and after that nothing about it changes
    rejected(ledger, "UPDATE protocols SET title = 'rewritten' WHERE id = 1", match="frozen rows")
    rejected(ledger, "UPDATE protocols SET status = 'registered' WHERE id = 1", match="frozen")
    rejected(ledger, "UPDATE protocols SET yaml_text = 'docket: 2'", match="frozen")
    rejected(ledger, "DELETE FROM protocols WHERE id = 1", match="frozen rows")
    rejected(ledger, "DELETE FROM protocols", match="frozen rows")
    assert scalar(ledger, "SELECT title || '/' || status FROM protocols WHERE id = 1") == "t/frozen"


def test_registered_rows_stay_editable_next_to_frozen_ones(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "frozen")
        insert_protocol(conn, 2, "registered")
        conn.execute(text("UPDATE protocols SET title = 'draft' WHERE id = 2"))
        sign_check(conn, 2, True)
        conn.execute(
            text(
                "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP WHERE id = 2"
            )
        )
    assert scalar(ledger, "SELECT COUNT(*) FROM protocols WHERE status = 'frozen'") == 2


def test_append_only_tables_reject_update_and_delete(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "frozen")
        for table in APPEND_ONLY:
            conn.execute(text(INSERTS[table]), {"p": 1})
    for table in APPEND_ONLY:
        rejected(ledger, UPDATES[table], match=f"{table} is append-only")
        rejected(ledger, f"DELETE FROM {table} WHERE id = 1", match=f"{table} is append-only")
        rejected(ledger, f"DELETE FROM {table}", match=f"{table} is append-only")
        assert scalar(ledger, f"SELECT COUNT(*) FROM {table} WHERE id = 1") == 1
    # appending stays possible
    with ledger.engine.begin() as conn:
        conn.execute(text(INSERTS["verdicts"].replace("VALUES (1,", "VALUES (2,")), {"p": 1})
    assert scalar(ledger, "SELECT verdict FROM verdicts WHERE id = 1") == "PROVEN"
    assert scalar(ledger, "SELECT COUNT(*) FROM verdicts") == 2


@pytest.fixture
def pg_ledger(pg_schema_url: str) -> Iterator[Ledger]:
    led = init_ledger(pg_schema_url)
    yield led
    led.engine.dispose()


def test_truncate_rejected_on_postgresql(pg_ledger: Ledger) -> None:
    """TRUNCATE is PostgreSQL only (SQLite's DELETE FROM fires the row triggers)."""
    ledger = pg_ledger
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "frozen")
        for table in APPEND_ONLY:
            conn.execute(text(INSERTS[table]), {"p": 1})
    referenced = {"verdicts"}  # verdict_looks has a foreign key to it
    for table in APPEND_ONLY:
        if table in referenced:  # stopped by the foreign key first, CASCADE by the triggers
            rejected(ledger, f"TRUNCATE {table}", match="foreign key")
        else:
            rejected(ledger, f"TRUNCATE {table}", match=f"{table} is append-only")
        rejected(ledger, f"TRUNCATE {table} CASCADE", match="append-only")
    # protocols: a plain TRUNCATE is stopped by the foreign keys, CASCADE by the triggers of the
    # append-only tables it would empty with it
    rejected(ledger, "TRUNCATE protocols", match="foreign key")
    rejected(ledger, "TRUNCATE protocols CASCADE", match="append-only")
    for table in ["protocols", *APPEND_ONLY]:
        assert scalar(ledger, f"SELECT COUNT(*) FROM {table} WHERE id = 1") == 1


def test_sqlite_replace_cannot_overwrite_protected_rows(sqlite_ledger: Ledger) -> None:
    """SQLite's REPLACE conflict resolution deletes the old row without firing DELETE triggers
    (unless recursive_triggers is on): it must not become a way to rewrite history."""
    ledger = sqlite_ledger
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "frozen")
        insert_protocol(conn, 2, "registered")
        for table in APPEND_ONLY:
            conn.execute(text(INSERTS[table]), {"p": 1})
    for table in APPEND_ONLY:
        rejected(ledger, "INSERT OR REPLACE" + INSERTS[table][len("INSERT") :], {"p": 1})
    # a frozen protocol, by its id, its sha256 or its (protocol_id, version) (a registered
    # row: a frozen one is refused by the freeze guard before the collision is looked at)
    replace = (
        "INSERT OR REPLACE INTO protocols (id, protocol_id, version, title, yaml_text, "
        "canonical_json, sha256, status, registered_at) VALUES "
        "(:pk, :pid, 1, 'forged', 'x', '{}', :sha, 'registered', CURRENT_TIMESTAMP)"
    )
    rejected(ledger, replace, {"pk": 1, "pid": "other", "sha": "f" * 64}, match="frozen rows")
    rejected(ledger, replace, {"pk": 9, "pid": "other", "sha": f"{1:064d}"}, match="frozen rows")
    rejected(ledger, replace, {"pk": 9, "pid": "p1", "sha": "f" * 64}, match="frozen rows")
    rejected(
        ledger, f"UPDATE OR REPLACE protocols SET sha256 = '{1:064d}' WHERE id = 2", match="frozen"
    )
    assert scalar(ledger, "SELECT title FROM protocols WHERE id = 1") == "t"
    assert scalar(ledger, "SELECT verdict FROM verdicts") == "PROVEN"
    # a registered row may still be replaced (it is a draft)
    with ledger.engine.begin() as conn:
        conn.execute(text(replace), {"pk": 2, "pid": "p2", "sha": "e" * 64})

    # the guard is in the database, not only in docket's connection settings: the sqlite3 shell
    # (recursive_triggers off) cannot overwrite a verdict either
    raw = sqlite3.connect(ledger.engine.url.database)
    try:
        assert raw.execute("PRAGMA recursive_triggers").fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(
                INSERTS["verdicts"].replace("INSERT", "INSERT OR REPLACE").replace(":p", "1")
            )
        raw.rollback()
    finally:
        raw.close()
    assert scalar(ledger, "SELECT verdict FROM verdicts") == "PROVEN"


def test_unique_keys_of_protected_tables_are_all_guarded() -> None:
    """ledger.triggers.UNIQUE_KEYS must list every unique key the models declare, or the SQLite
    REPLACE guard would miss one."""
    for name in ["protocols", *APPEND_ONLY]:
        table = Base.metadata.tables[name]
        keys = {tuple(c.name for c in table.primary_key.columns)}
        keys |= {
            tuple(c.name for c in con.columns)
            for con in table.constraints
            if isinstance(con, UniqueConstraint)
        }
        keys |= {(c.name,) for c in table.columns if c.unique}
        keys |= {tuple(c.name for c in ix.columns) for ix in table.indexes if ix.unique}
        assert keys == set(triggers.UNIQUE_KEYS[name]), name


def test_unique_keys_match_the_migrated_schema(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        inspector = inspect(conn)
        for name in ["protocols", *APPEND_ONLY]:
            keys = {tuple(inspector.get_pk_constraint(name)["constrained_columns"])}
            keys |= {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
            keys |= {tuple(i["column_names"]) for i in inspector.get_indexes(name) if i["unique"]}
            assert keys == set(triggers.UNIQUE_KEYS[name]), name


FREEZE = "UPDATE protocols SET status = 'frozen', frozen_at = CURRENT_TIMESTAMP WHERE id = 1"


def test_freezing_needs_a_passing_sign_check_and_frozen_at(ledger: Ledger) -> None:
    """Revision 0004: ``status='frozen'`` by raw SQL is refused without a passing sign-check of
    the row's sha256 (latest one counts) or without ``frozen_at``; an INSERT of a frozen row too."""
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "registered")
    rejected(ledger, FREEZE, match="passing sign-check")  # no sign-check at all
    with ledger.engine.begin() as conn:
        sign_check(conn, 1, False)
    rejected(ledger, FREEZE, match="passing sign-check")  # it failed
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sign_checks (id, protocol_pk, protocol_sha256, ran_at, passed, "
                "report_json) VALUES (2, 1, :other, CURRENT_TIMESTAMP, TRUE, '{}')"
            ),
            {"other": "e" * 64},
        )
    rejected(ledger, FREEZE, match="passing sign-check")  # passed, but for another sha256
    with ledger.engine.begin() as conn:
        sign_check(conn, 1, True, sc_id=2000)  # the latest sign-check counts
    rejected(ledger, "UPDATE protocols SET status = 'frozen' WHERE id = 1", match="frozen_at")
    rejected(
        ledger,
        "INSERT INTO protocols (id, protocol_id, version, title, yaml_text, canonical_json, "
        "sha256, status, registered_at, frozen_at) VALUES (9, 'p9', 1, 't', 'docket: 1', '{}', "
        "'9', 'frozen', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        match="passing sign-check",
    )
    assert scalar(ledger, "SELECT status FROM protocols WHERE id = 1") == "registered"
    with ledger.engine.begin() as conn:
        conn.execute(text(FREEZE))
    assert scalar(ledger, "SELECT status FROM protocols WHERE id = 1") == "frozen"


def test_negative_costs_are_refused(ledger: Ledger) -> None:
    """Revision 0004: ``costs.usd_micros`` and ``runs.cost_micros`` are never negative."""
    with ledger.engine.begin() as conn:
        insert_protocol(conn, 1, "frozen")
        conn.execute(text(INSERTS["costs"]), {"p": 1})
        conn.execute(
            text(
                "INSERT INTO runs (id, protocol_pk, protocol_sha256, job, kind, source, "
                "config_json, status, hardware, queued_at, cost_micros) VALUES (1, 1, 'a', 'j', "
                "'k', 'runner', '{}', 'running', 'cpu', CURRENT_TIMESTAMP, 0)"
            )
        )
    negative = INSERTS["costs"].replace("(1, 1,", "(2, 2,").replace("1500000", "-1500000")
    rejected(ledger, negative, {"p": 1}, match="usd_micros must be >= 0")
    rejected(ledger, "UPDATE runs SET cost_micros = -1", match="cost_micros must be >= 0")
    rejected(
        ledger,
        "INSERT INTO runs (id, protocol_pk, protocol_sha256, job, kind, source, config_json, "
        "status, hardware, queued_at, cost_micros) VALUES (2, 1, 'a', 'j', 'k', 'runner', '{}', "
        "'running', 'cpu', CURRENT_TIMESTAMP, -5)",
        match="cost_micros must be >= 0",
    )
    assert scalar(ledger, "SELECT COUNT(*) FROM costs") == 1
    with ledger.engine.begin() as conn:  # zero and positive amounts stay fine
        conn.execute(text("UPDATE runs SET cost_micros = 0"))
