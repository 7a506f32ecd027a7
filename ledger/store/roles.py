"""Least-privilege PostgreSQL roles for a team ledger (``docket db roles --create``).

Three roles per ledger schema, named ``{prefix}_owner``, ``{prefix}_writer``, ``{prefix}_reader``:

* **owner** (``NOLOGIN``): owns every table, sequence and trigger function of the schema. Only
  an owner (or a superuser) can ``ALTER TABLE ... DISABLE TRIGGER``, ``DROP TRIGGER``, drop a
  table or ``CREATE OR REPLACE`` a trigger function, so no application login can switch off the
  ledger's append-only triggers. Migrations (``docket db upgrade``) run as a member of it.
* **writer** (``LOGIN``): what ``docket run``/``ingest``/``verdict`` and the Python API use:
  ``SELECT, INSERT, UPDATE`` on the tables (the run lifecycle updates runs; the triggers still
  refuse every change to append-only rows and frozen protocols) and ``USAGE, SELECT`` on the
  sequences. No ``DELETE``, ``TRUNCATE``, ``TRIGGER`` or ``REFERENCES``; no ``CREATE`` in the
  schema.
* **reader** (``LOGIN``): ``SELECT`` only, for reviewers (``docket verdict --history``,
  ``audit``, ``export``).

The function is idempotent: roles that exist are reused (their attributes set again), grants are
re-issued. It needs a role that owns the tables today or is a superuser (normally the admin who
ran ``docket init``). Passwords are the team's business (``ALTER ROLE ... PASSWORD``); docs/
roles.md shows how to point ``DOCKET_DB`` at each role."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from ..errors import UserError

__all__ = ["RoleNames", "create_roles", "role_names"]

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class RoleNames:
    owner: str
    writer: str
    reader: str


def role_names(prefix: str) -> RoleNames:
    """The three names for ``prefix`` (lower-case letters, digits, ``_``; at most 41 chars)."""
    if not _PREFIX.fullmatch(prefix):
        raise UserError(
            f"--prefix {prefix!r}: expected lower-case letters, digits and _ (a letter or _ "
            "first, at most 41 characters)"
        )
    return RoleNames(f"{prefix}_owner", f"{prefix}_writer", f"{prefix}_reader")


def _ensure_role(conn: Connection, name: str, login: bool) -> None:
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
    attrs = "LOGIN" if login else "NOLOGIN"
    attrs += " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    verb = "ALTER" if exists else "CREATE"
    conn.execute(text(f'{verb} ROLE "{name}" {attrs}'))


def create_roles(engine: Engine, prefix: str = "docket") -> dict[str, object]:
    """Create (or refresh) the three roles for the ledger schema of ``engine`` (see the module
    docstring) in one transaction; returns what was done."""
    names = role_names(prefix)
    if engine.dialect.name != "postgresql":
        raise UserError(
            "docket db roles --create: roles are a PostgreSQL feature; this ledger is "
            f"{engine.dialect.name} (protect a SQLite file with file permissions instead)"
        )
    try:
        return _create(engine, names)
    except ProgrammingError as exc:  # e.g. not allowed to create roles or to change owners
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise UserError(
            f"docket db roles --create: {reason} (run it as a superuser or as the role that "
            "owns the ledger's tables and has CREATEROLE)"
        ) from None


def _create(engine: Engine, names: RoleNames) -> dict[str, object]:
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = list(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
                {"s": schema},
            ).scalars()
        )
        if "alembic_version" not in tables:
            raise UserError(
                f"schema {schema!r} holds no docket ledger (no alembic_version table); run "
                "`docket init` first"
            )
        sequences = list(
            conn.execute(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s ORDER BY 1"),
                {"s": schema},
            ).scalars()
        )
        _ensure_role(conn, names.owner, login=False)
        _ensure_role(conn, names.writer, login=True)
        _ensure_role(conn, names.reader, login=True)
        # the caller must be able to hand objects over to the owner role
        conn.execute(text(f'GRANT "{names.owner}" TO CURRENT_USER'))
        q = f'"{schema}"'
        for table in tables:
            conn.execute(text(f'ALTER TABLE {q}."{table}" OWNER TO "{names.owner}"'))
        for sequence in sequences:
            conn.execute(text(f'ALTER SEQUENCE {q}."{sequence}" OWNER TO "{names.owner}"'))
        functions = conn.execute(
            text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = :s ORDER BY 1"
            ),
            {"s": schema},
        ).scalars()
        for function in functions:  # the trigger functions (whatever the migrations created)
            conn.execute(text(f'ALTER FUNCTION {function} OWNER TO "{names.owner}"'))
        # the owner runs foreign-key checks and migrations: it needs the schema itself
        conn.execute(text(f'GRANT USAGE, CREATE ON SCHEMA {q} TO "{names.owner}"'))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA {q} FROM PUBLIC, "{names.writer}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA {q} TO "{names.writer}", "{names.reader}"'))
        conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM "{names.writer}"'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {q} TO "{names.writer}"')
        )
        conn.execute(
            text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q} TO "{names.writer}"')
        )
        conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM "{names.reader}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO "{names.reader}"'))
    return {
        "schema": schema,
        "owner": names.owner,
        "writer": names.writer,
        "reader": names.reader,
        "tables": len(tables),
        "sequences": len(sequences),
    }
