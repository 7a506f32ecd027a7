"""Append-only and immutability triggers, for SQLite and PostgreSQL.

- ``protocols``: UPDATE or DELETE of a row whose status is ``frozen`` is rejected (a registered row
  may still be frozen, i.e. updated once).
- ``sign_checks``, ``verdicts``, ``verdict_looks``, ``costs``, ``journal_entries``,
  ``reproductions``: any UPDATE or DELETE is rejected (and TRUNCATE on PostgreSQL).
- SQLite only: ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` delete the conflicting row without
  firing DELETE triggers unless ``PRAGMA recursive_triggers`` is on (docket turns it on for its own
  connections, see ``ledger/db.py``). A ``docket_<table>_no_replace`` trigger also rejects an
  INSERT whose unique key (:data:`UNIQUE_KEYS`) collides with a protected row, so the sqlite3
  shell cannot overwrite one either.

Migrations call :func:`create_triggers` after creating or rebuilding a table: SQLite batch
migrations rebuild tables and silently drop their triggers. ``docket audit`` checks with
:func:`missing_triggers` that every trigger named here exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection

APPEND_ONLY = (
    "sign_checks",
    "verdicts",
    "verdict_looks",
    "costs",
    "journal_entries",
    "reproductions",
)
FROZEN_GUARDED = ("protocols",)

# Every unique key (primary key included) of the protected tables; a test checks this against
# ledger.models so that a new unique constraint cannot silently open an INSERT OR REPLACE hole.
UNIQUE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "protocols": (("id",), ("sha256",), ("protocol_id", "version")),
    "sign_checks": (("id",),),
    "verdicts": (("id",),),
    "verdict_looks": (("id",),),
    "costs": (("id",), ("seq",)),
    "journal_entries": (("id",), ("seq",)),
    "reproductions": (("id",),),
}


def trigger_names(table: str) -> list[str]:
    """Names of the UPDATE and DELETE triggers docket puts on ``table`` (both dialects)."""
    if table in FROZEN_GUARDED:
        return [f"docket_{table}_frozen_no_update", f"docket_{table}_frozen_no_delete"]
    return [f"docket_{table}_no_update", f"docket_{table}_no_delete"]


def expected_triggers(table: str, dialect: str) -> list[str]:
    """Every trigger docket creates on ``table`` for ``dialect`` ("sqlite" or "postgresql")."""
    names = trigger_names(table)
    if dialect == "sqlite":
        names.append(f"docket_{table}_no_replace")
    elif table not in FROZEN_GUARDED:
        names.append(f"docket_{table}_no_truncate")
    return names


def _collides(table: str, alias: str) -> str:
    """SQL condition: a row of ``table`` shares a unique key with the ``alias`` (NEW) row."""
    keys = [
        "(" + " AND ".join(f"{table}.{col} = {alias}.{col}" for col in key) + ")"
        for key in UNIQUE_KEYS[table]
    ]
    return "(" + " OR ".join(keys) + ")"


def _sqlite_ddl(table: str) -> list[str]:
    upd, dele = trigger_names(table)
    replace = f"docket_{table}_no_replace"
    if table in FROZEN_GUARDED:
        frozen = f"{table}.status = 'frozen'"
        # an UPDATE OR REPLACE of a registered row must not delete a frozen row it collides with
        upd_cond = (
            f"WHEN OLD.status = 'frozen' OR EXISTS (SELECT 1 FROM {table} WHERE {frozen} "
            f"AND {table}.id <> OLD.id AND {_collides(table, 'NEW')})"
        )
        del_cond = "WHEN OLD.status = 'frozen'"
        ins_cond = (
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {frozen} AND {_collides(table, 'NEW')})"
        )
        msg = f"docket: frozen rows of {table} are immutable"
    else:
        upd_cond = del_cond = ""
        ins_cond = f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {_collides(table, 'NEW')})"
        msg = f"docket: {table} is append-only"
    return [
        f"DROP TRIGGER IF EXISTS {upd}",
        f"DROP TRIGGER IF EXISTS {dele}",
        f"DROP TRIGGER IF EXISTS {replace}",
        f"CREATE TRIGGER {upd} BEFORE UPDATE ON {table} FOR EACH ROW {upd_cond} "
        f"BEGIN SELECT RAISE(ABORT, '{msg}'); END",
        f"CREATE TRIGGER {dele} BEFORE DELETE ON {table} FOR EACH ROW {del_cond} "
        f"BEGIN SELECT RAISE(ABORT, '{msg}'); END",
        f"CREATE TRIGGER {replace} BEFORE INSERT ON {table} FOR EACH ROW {ins_cond} "
        f"BEGIN SELECT RAISE(ABORT, '{msg}'); END",
    ]


_PG_FUNCTIONS = [
    """
    CREATE OR REPLACE FUNCTION docket_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'docket: % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION docket_reject_frozen_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.status = 'frozen' THEN
        RAISE EXCEPTION 'docket: frozen rows of % are immutable', TG_TABLE_NAME
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
      RETURN NEW;
    END $$
    """,
]


def _pg_ddl(table: str) -> list[str]:
    upd, dele = trigger_names(table)
    func = "docket_reject_frozen_change" if table in FROZEN_GUARDED else "docket_reject_change"
    ddl = [
        f"DROP TRIGGER IF EXISTS {upd} ON {table}",
        f"DROP TRIGGER IF EXISTS {dele} ON {table}",
        f"CREATE TRIGGER {upd} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {func}()",
        f"CREATE TRIGGER {dele} BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {func}()",
    ]
    if table not in FROZEN_GUARDED:
        ddl += [
            f"DROP TRIGGER IF EXISTS docket_{table}_no_truncate ON {table}",
            f"CREATE TRIGGER docket_{table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION docket_reject_change()",
        ]
    return ddl


def create_triggers(conn: Connection, tables: Iterable[str]) -> None:
    """(Re-)create the triggers of ``tables`` on the connection's dialect."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        for statement in _PG_FUNCTIONS:
            conn.execute(text(statement))
        for table in tables:
            for statement in _pg_ddl(table):
                conn.execute(text(statement))
    elif dialect == "sqlite":
        for table in tables:
            for statement in _sqlite_ddl(table):
                conn.exec_driver_sql(statement)
    else:
        raise NotImplementedError(f"docket supports SQLite and PostgreSQL, not {dialect}")


def existing_triggers(conn: Connection) -> set[str]:
    """Names of the triggers present in the current database/schema."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    else:
        rows = conn.execute(
            text(
                "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
            )
        )
    return {row[0] for row in rows}


def missing_triggers(conn: Connection) -> list[tuple[str, str]]:
    """``(table, trigger)`` pairs docket expects but the database lacks."""
    present = existing_triggers(conn)
    missing = []
    for table in FROZEN_GUARDED + APPEND_ONLY:
        for name in expected_triggers(table, conn.dialect.name):
            if name not in present:
                missing.append((table, name))
    return missing
