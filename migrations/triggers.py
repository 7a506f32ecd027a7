"""Append-only and immutability triggers, for SQLite and PostgreSQL.

- ``protocols``: UPDATE or DELETE of a row whose status is ``frozen`` is rejected (a registered row
  may still be frozen, i.e. updated once).
- ``sign_checks``, ``verdicts``, ``verdict_looks``, ``costs``, ``journal_entries``,
  ``reproductions``, the Merkle log's ``log_leaves`` and ``log_nodes`` (revision 0005) and
  ``run_columns`` (revision 0006): any UPDATE or DELETE is rejected (and TRUNCATE on PostgreSQL).
- SQLite only: ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` delete the conflicting row without
  firing DELETE triggers unless ``PRAGMA recursive_triggers`` is on (docket turns it on for its own
  connections, see ``ledger/db.py``). A ``docket_<table>_no_replace`` trigger also rejects an
  INSERT whose unique key (:data:`UNIQUE_KEYS`) collides with a protected row, so the sqlite3
  shell cannot overwrite one either.

Guard triggers (revision 0004, :func:`create_guard_triggers`, :data:`GUARDS`):

- ``docket_protocols_freeze_guard``: a ``protocols`` row may become (or be inserted as)
  ``frozen`` only with a ``frozen_at`` and when its latest sign-check passed and is bound to its
  sha256 -- "frozen" means "passed its sign-check and was frozen", not "someone set the column".
- ``docket_costs_nonnegative`` / ``docket_runs_cost_nonnegative``: ``costs.usd_micros`` and
  ``runs.cost_micros`` are never negative (a negative cost would lower the spend).

Migrations call :func:`create_triggers` after creating or rebuilding a table: SQLite batch
migrations rebuild tables and silently drop their triggers. ``docket audit`` checks with
:func:`trigger_problems` that every trigger named here exists, is enabled (PostgreSQL
``tgenabled``) and still has the definition created here: SQLite's stored ``CREATE TRIGGER``
text, PostgreSQL's trigger timing/events/level, the function it calls and that function's body
(``pg_proc.prosrc``), each compared after collapsing whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

APPEND_ONLY = (
    "sign_checks",
    "verdicts",
    "verdict_looks",
    "costs",
    "journal_entries",
    "reproductions",
    "log_leaves",
    "log_nodes",
    "run_columns",
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
    "log_leaves": (("position",), ("kind", "record_id")),
    "log_nodes": (("level", "idx"),),
    "run_columns": (("run_id", "grp", "chunk"),),
}


def trigger_names(table: str) -> list[str]:
    """Names of the UPDATE and DELETE triggers docket puts on ``table`` (both dialects)."""
    if table in FROZEN_GUARDED:
        return [f"docket_{table}_frozen_no_update", f"docket_{table}_frozen_no_delete"]
    return [f"docket_{table}_no_update", f"docket_{table}_no_delete"]


def expected_triggers(table: str, dialect: str) -> list[str]:
    """Every trigger docket creates on ``table`` for ``dialect`` ("sqlite" or "postgresql"),
    the guard triggers of revision 0004 included."""
    names = trigger_names(table) if table in FROZEN_GUARDED + APPEND_ONLY else []
    if dialect == "sqlite":
        if names:
            names.append(f"docket_{table}_no_replace")
    elif names and table not in FROZEN_GUARDED:
        names.append(f"docket_{table}_no_truncate")
    for guard in GUARDS:
        if guard.table == table:
            names += [n for n, _ in guard.sqlite] if dialect == "sqlite" else [guard.name]
    return names


def guarded_tables() -> tuple[str, ...]:
    """Every table that carries a docket trigger."""
    extra = tuple(g.table for g in GUARDS if g.table not in FROZEN_GUARDED + APPEND_ONLY)
    return FROZEN_GUARDED + APPEND_ONLY + tuple(dict.fromkeys(extra))


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


@dataclass(frozen=True)
class Guard:
    """One guard trigger of revision 0004: ``table``, trigger ``name``, the SQLite ``CREATE
    TRIGGER`` statement(s) (one per event) and the PostgreSQL function body, events and name."""

    table: str
    name: str
    sqlite: tuple[tuple[str, str], ...]  # (trigger name, CREATE TRIGGER statement)
    pg_function: str
    pg_body: str
    pg_events: tuple[str, ...]


_FREEZE_MSG = (
    "docket: a protocol may be frozen only with frozen_at and a passing sign-check of its sha256"
)
# true when NEW's latest sign-check passed and is bound to NEW's sha256 (both dialects)
_FREEZE_OK = (
    "COALESCE((SELECT sc.passed AND sc.protocol_sha256 = NEW.sha256 FROM sign_checks sc "
    "WHERE sc.protocol_pk = NEW.id ORDER BY sc.id DESC LIMIT 1), {false})"
)
_NEG_MSG = "docket: {table}.{column} must be >= 0"


def _sqlite_guard(name: str, event: str, table: str, cond: str, msg: str) -> tuple[str, str]:
    return (
        name,
        f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW WHEN {cond} "
        f"BEGIN SELECT RAISE(ABORT, '{msg}'); END",
    )


def _nonnegative(table: str, column: str) -> Guard:
    name = f"docket_{table}_{'cost_' if table == 'runs' else ''}nonnegative"
    msg = _NEG_MSG.format(table=table, column=column)
    cond = f"NEW.{column} < 0"
    return Guard(
        table=table,
        name=name,
        sqlite=(
            _sqlite_guard(f"{name}_insert", "INSERT", table, cond, msg),
            _sqlite_guard(f"{name}_update", "UPDATE", table, cond, msg),
        ),
        pg_function=f"{name}_check",
        pg_body=(
            f"BEGIN IF {cond} THEN RAISE EXCEPTION '{msg}' "
            "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END"
        ),
        pg_events=("INSERT", "UPDATE"),
    )


def _freeze_guard() -> Guard:
    name = "docket_protocols_freeze_guard"
    sqlite_cond = (
        "NEW.status = 'frozen' AND (NEW.frozen_at IS NULL OR NOT "
        + _FREEZE_OK.format(false="0")
        + ")"
    )
    pg_cond = (
        "NEW.status = 'frozen' AND (NEW.frozen_at IS NULL OR NOT "
        + _FREEZE_OK.format(false="false")
        + ")"
    )
    return Guard(
        table="protocols",
        name=name,
        sqlite=(
            _sqlite_guard(f"{name}_insert", "INSERT", "protocols", sqlite_cond, _FREEZE_MSG),
            _sqlite_guard(f"{name}_update", "UPDATE", "protocols", sqlite_cond, _FREEZE_MSG),
        ),
        pg_function=f"{name}_check",
        pg_body=(
            f"BEGIN IF {pg_cond} THEN RAISE EXCEPTION '{_FREEZE_MSG}' "
            "USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW; END"
        ),
        pg_events=("INSERT", "UPDATE"),
    )


# the guard triggers created by revision 0004 (and checked by the audit from then on)
GUARDS: tuple[Guard, ...] = (
    _freeze_guard(),
    _nonnegative("costs", "usd_micros"),
    _nonnegative("runs", "cost_micros"),
)


def create_guard_triggers(conn: Connection, guards: Iterable[Guard] = GUARDS) -> None:
    """(Re-)create the guard triggers (revision 0004) on the connection's dialect."""
    for guard in guards:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {guard.pg_function}() RETURNS trigger "
                    f"LANGUAGE plpgsql AS $$ {guard.pg_body} $$"
                )
            )
            conn.execute(text(f"DROP TRIGGER IF EXISTS {guard.name} ON {guard.table}"))
            conn.execute(
                text(
                    f"CREATE TRIGGER {guard.name} BEFORE {' OR '.join(guard.pg_events)} "
                    f"ON {guard.table} FOR EACH ROW EXECUTE FUNCTION {guard.pg_function}()"
                )
            )
        elif conn.dialect.name == "sqlite":
            for name, ddl in guard.sqlite:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
                conn.exec_driver_sql(ddl)
        else:
            raise NotImplementedError(
                f"docket supports SQLite and PostgreSQL, not {conn.dialect.name}"
            )


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
    for table in guarded_tables():
        for name in expected_triggers(table, conn.dialect.name):
            if name not in present:
                missing.append((table, name))
    return missing


def normalise_sql(sql: str) -> str:
    """``sql`` with runs of whitespace collapsed and no trailing ``;`` (for comparisons)."""
    return " ".join(sql.split()).rstrip(";").rstrip()


# PostgreSQL pg_trigger.tgtype bits
_TG_ROW, _TG_BEFORE = 1, 2
_TG_EVENT = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


@dataclass(frozen=True)
class _PgSpec:
    table: str
    tgtype: int
    function: str
    body: str


def _pg_bodies() -> dict[str, str]:
    bodies = {}
    for statement in _PG_FUNCTIONS:
        name = re.search(r"FUNCTION\s+(\w+)\(", statement)
        body = re.search(r"\$\$(.*)\$\$", statement, re.S)
        assert name and body
        bodies[name.group(1)] = body.group(1)
    return bodies


def _pg_specs() -> dict[str, _PgSpec]:
    bodies = _pg_bodies()
    specs: dict[str, _PgSpec] = {}
    for table in FROZEN_GUARDED + APPEND_ONLY:
        func = "docket_reject_frozen_change" if table in FROZEN_GUARDED else "docket_reject_change"
        upd, dele = trigger_names(table)
        row = _TG_ROW | _TG_BEFORE
        specs[upd] = _PgSpec(table, row | _TG_EVENT["UPDATE"], func, bodies[func])
        specs[dele] = _PgSpec(table, row | _TG_EVENT["DELETE"], func, bodies[func])
        if table not in FROZEN_GUARDED:
            specs[f"docket_{table}_no_truncate"] = _PgSpec(
                table,
                _TG_BEFORE | _TG_EVENT["TRUNCATE"],
                "docket_reject_change",
                bodies["docket_reject_change"],
            )
    for guard in GUARDS:
        events = sum(_TG_EVENT[e] for e in guard.pg_events)
        specs[guard.name] = _PgSpec(
            guard.table, _TG_ROW | _TG_BEFORE | events, guard.pg_function, f" {guard.pg_body} "
        )
    return specs


def _sqlite_specs() -> dict[str, tuple[str, str]]:
    """trigger name -> (table, expected CREATE TRIGGER text)."""
    specs: dict[str, tuple[str, str]] = {}
    for table in FROZEN_GUARDED + APPEND_ONLY:
        for statement in _sqlite_ddl(table):
            if statement.startswith("CREATE TRIGGER "):
                specs[statement.split()[2]] = (table, statement)
    for guard in GUARDS:
        for name, statement in guard.sqlite:
            specs[name] = (guard.table, statement)
    return specs


def trigger_problems(conn: Connection) -> list[tuple[str, str, str]]:
    """``(table, trigger, problem)`` for every docket trigger that is missing, disabled
    (PostgreSQL) or whose definition differs from the one created here (module docstring)."""
    present = existing_triggers(conn)
    problems = [
        (table, name, f"trigger {name} is missing: {table} is unguarded")
        for table, name in missing_triggers(conn)
    ]
    if conn.dialect.name == "sqlite":
        stored = dict(
            conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all()
        )
        for name, (table, expected) in _sqlite_specs().items():
            if name in present and normalise_sql(stored[name] or "") != normalise_sql(expected):
                problems.append(
                    (
                        table,
                        name,
                        f"trigger {name} differs from the definition docket created "
                        f"(now: {normalise_sql(stored[name] or '')[:120]!r}): "
                        f"{table} may be unguarded",
                    )
                )
        return problems
    rows = conn.execute(
        text(
            "SELECT t.tgname, c.relname, t.tgenabled, t.tgtype, p.proname, p.prosrc "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
        )
    ).all()
    found = {r[0]: r for r in rows}
    for name, spec in _pg_specs().items():
        if name not in found:
            continue
        _, relname, enabled, tgtype, proname, prosrc = found[name]
        what = []
        if enabled not in ("O", "A"):
            what.append(f"is disabled (tgenabled {enabled!r})")
        if relname != spec.table or int(tgtype) != spec.tgtype:
            what.append(f"fires on {relname} with tgtype {tgtype}, expected {spec.tgtype}")
        if proname != spec.function:
            what.append(f"calls {proname}(), expected {spec.function}()")
        elif normalise_sql(prosrc) != normalise_sql(spec.body):
            what.append(f"its function {proname}() was replaced (body differs)")
        if what:
            problems.append(
                (
                    spec.table,
                    name,
                    f"trigger {name} " + "; ".join(what) + f": {spec.table} is unguarded",
                )
            )
    return problems
