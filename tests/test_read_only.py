"""Queries write nothing: they run in a read-only transaction the database enforces, and a run
whose lease expired is shown, not reaped, until a writer (`docket runs reap`) acts on it."""

from __future__ import annotations

import json

import pytest
from distributed_helpers import freeze
from sqlalchemy import MetaData, select, text
from sqlalchemy.exc import DBAPIError

from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import RunRow
from docketml.ledger.store.runs import create_run, start_run


def _snapshot(ledger: Ledger) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: equal snapshots mean nothing was written."""
    meta = MetaData()
    meta.reflect(ledger.engine)
    with ledger.engine.connect() as conn:
        return {
            name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
            for name, table in meta.tables.items()
        }


def _dead_run(ledger: Ledger) -> int:
    pk = freeze(ledger, "read-only", [{"name": "synth", "kind": "synthetic", "hardware": "a40"}])
    with ledger.session() as session:
        from docketml.ledger.store.models import ProtocolRow

        row = session.get(ProtocolRow, pk)
        run = create_run(
            session,
            protocol_pk=pk,
            protocol_sha256=row.sha256,
            job="synth",
            kind="synthetic",
            config={},
        )
        start_run(session, run.id, worker="gone", lease_s=-1.0)  # its runner died long ago
        return run.id


def test_read_session_refuses_writes_and_leaves_the_pool_writable(ledger: Ledger) -> None:
    run_id = _dead_run(ledger)
    with pytest.raises(DBAPIError):
        with ledger.read_session() as session:
            session.execute(text("UPDATE runs SET job = 'changed'"))
    for _ in range(3):  # a pooled connection that served a read must write again
        with ledger.read_session() as session:
            assert session.get(RunRow, run_id).job == "synth"
        with ledger.session() as session:
            session.get(RunRow, run_id).error = "still writable"
    with ledger.session() as session:
        assert session.get(RunRow, run_id).error == "still writable"


def test_queries_show_an_expired_lease_and_write_nothing(ledger: Ledger, docket) -> None:
    run_id = _dead_run(ledger)
    before = _snapshot(ledger)
    listed = json.loads(docket("runs", "list", "--json").stdout)
    assert [(r["id"], r["status"], r["lease_expired"]) for r in listed] == [
        (run_id, "running", True)
    ]
    human = docket("runs", "list")
    assert "lease expired" in human.output
    for args in (
        ("audit", "--json"),
        ("costs", "--json"),
        ("protocol", "list", "--json"),
        ("protocol", "show", "read-only", "--json"),
        ("journal", "list", "--json"),
    ):
        result = docket(*args)
        assert result.exit_code in (0, 1), (args, result.output)  # audit exits 1 on findings
    audit = json.loads(docket("audit", "--json").stdout)
    assert audit["expired_leases"] == [run_id]
    assert _snapshot(ledger) == before, "a query wrote to the ledger"

    reaped = docket("runs", "reap", "--json")
    assert reaped.exit_code == 0, reaped.output
    assert [r["id"] for r in json.loads(reaped.stdout)] == [run_id]
    with ledger.session() as session:
        assert session.get(RunRow, run_id).status == "abandoned"
    again = docket("runs", "reap", "--json")
    assert json.loads(again.stdout) == []
