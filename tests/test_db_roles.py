"""``docket db roles --create`` on a real PostgreSQL server: the writer role runs docket but
cannot disable, drop or replace the ledger's triggers; the reader can only read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from conftest import DocketCli
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from docketml.ledger.store.db import init_ledger

PROTOCOL = """\
docket: 1
id: roles-demo
title: roles demo
hypotheses:
  - {id: H1, statement: s separates, rule: r}
signals: {s: {higher_means: positive}}
labels: {source: judged, positive: failure}
groups: [g]
decision_rules:
  r: {kind: threshold, statistic: auroc, signal: s, bound: 0.6}
jobs:
  - {name: p, kind: synthetic}
"""


def _as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role).render_as_string(hide_password=False)


@pytest.fixture
def roles_ledger(pg_schema_url: str) -> Iterator[tuple[str, str]]:
    """A fresh ledger schema and a unique role prefix; the roles are dropped afterwards."""
    init_ledger(pg_schema_url).engine.dispose()
    prefix = "t" + uuid.uuid4().hex[:10]
    yield pg_schema_url, prefix
    admin = create_engine(pg_schema_url)
    with admin.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        for suffix in ("writer", "reader", "owner"):
            name = f"{prefix}_{suffix}"
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
                conn.execute(text(f'DROP OWNED BY "{name}"'))
                conn.execute(text(f'DROP ROLE "{name}"'))
    admin.dispose()


def _fails(url: str, statement: str) -> str:
    engine = create_engine(url)
    try:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as caught, engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()
    return str(caught.value.orig)


@pytest.mark.slow
def test_writer_cannot_touch_triggers_and_reader_cannot_write(
    roles_ledger: tuple[str, str], tmp_path: Path
) -> None:
    url, prefix = roles_ledger
    admin = DocketCli(url, tmp_path)
    made = admin("db", "roles", "--create", "--prefix", prefix, "--json")
    assert made.exit_code == 0, made.output
    data = json.loads(made.output)
    assert data["writer"] == f"{prefix}_writer" and data["tables"] >= 10
    again = admin("db", "roles", "--create", "--prefix", prefix, "--json")
    assert again.exit_code == 0, again.output  # idempotent

    writer, reader = _as_role(url, f"{prefix}_writer"), _as_role(url, f"{prefix}_reader")
    as_writer, as_reader = DocketCli(writer, tmp_path), DocketCli(reader, tmp_path)
    # the writer runs docket: register and journal through the CLI
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    registered = as_writer("protocol", "register", str(path))
    assert registered.exit_code == 0, registered.output
    note = as_writer("journal", "add", "--title", "t", "--obs", "o")
    assert note.exit_code == 0, note.output
    frozen = as_writer("protocol", "freeze", "roles-demo")
    assert frozen.exit_code == 0, frozen.output
    ran = as_writer("run", "roles-demo", "--no-progress")
    assert ran.exit_code == 0, ran.output
    verdict = as_writer("verdict", "roles-demo", "--json")
    assert verdict.exit_code == 0, verdict.output
    # ... but cannot switch the triggers off, drop them, replace their function or delete
    for statement in (
        "ALTER TABLE journal_entries DISABLE TRIGGER USER",
        "ALTER TABLE protocols DISABLE TRIGGER ALL",
        "DROP TABLE verdicts",
        "CREATE OR REPLACE FUNCTION docket_reject_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        "DELETE FROM journal_entries",
        "TRUNCATE journal_entries",
        "CREATE TABLE sneaky (x int)",
    ):
        message = _fails(writer, statement)
        assert "must be owner" in message or "permission denied" in message, (statement, message)
    triggers = create_engine(url)
    with triggers.connect() as conn:
        name = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'journal_entries'::regclass "
                 "AND NOT tgisinternal LIMIT 1")
        ).scalar_one()  # fmt: skip
    triggers.dispose()
    message = _fails(writer, f'DROP TRIGGER "{name}" ON journal_entries')
    assert "must be owner" in message, message
    # the triggers still hold for the writer: an UPDATE of an append-only row is refused
    message = _fails(writer, "UPDATE journal_entries SET title = 'rewritten'")
    assert "append-only" in message or "docket" in message.lower(), message
    # the reader reads and cannot write
    listed = as_reader("protocol", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [p["id"] for p in json.loads(listed.output)] == ["roles-demo"]
    message = _fails(reader, "INSERT INTO journal_entries (seq) VALUES (99)")
    assert "permission denied" in message, message


def test_roles_on_sqlite_are_refused_clearly(docket_sqlite) -> None:
    out = docket_sqlite("db", "roles", "--create")
    assert out.exit_code == 2 and "PostgreSQL" in out.output and "Traceback" not in out.output


def test_bad_prefix_is_refused(docket_sqlite) -> None:
    out = docket_sqlite("db", "roles", "--create", "--prefix", 'x"; DROP')
    assert out.exit_code == 2 and "--prefix" in out.output
