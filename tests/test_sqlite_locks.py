"""SQLite: a writer holding the write lock never blocks reads, and a lock timeout is its own error.

Issue 16: a long writer locked everyone out (every transaction was ``BEGIN IMMEDIATE``, ingest held
the write lock while it parsed the whole file, a read-only ``protocol list`` failed after 61 s)
and a lock timeout came out as exit 2, which means bad input. Here a second connection holds
``BEGIN IMMEDIATE`` open (another writer mid-transaction) while the real CLI runs:

- ``protocol list`` / ``runs list`` / ``protocol show`` answer at once (deferred transactions,
  WAL readers never wait);
- ``ingest`` of a bad file reports its problems (exit 2) without waiting: parsing and validation
  happen before the write transaction;
- a write that cannot get the lock within ``DOCKET_LOCK_TIMEOUT_S`` fails with one line naming
  the lock and exit 75 (``EX_TEMPFAIL``), nothing written; an invalid timeout is exit 2.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_ingest import counts, frozen, good_rows, write_jsonl

from docketml.ledger.errors import LedgerBusy

FAST_S = 10.0  # the old code waited the 60 s busy timeout, then failed


@contextmanager
def write_lock_held(url: str) -> Iterator[None]:
    """Another connection holding the SQLite write lock (``BEGIN IMMEDIATE``) until exit."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def timed(docket: Any, *args: str) -> tuple[Any, float]:
    started = time.monotonic()
    result = docket(*args)
    return result, time.monotonic() - started


def test_reads_do_not_wait_for_a_writer(docket_sqlite: Any, tmp_path: Path) -> None:
    pid = frozen(docket_sqlite, tmp_path)
    assert (
        docket_sqlite("ingest", pid, str(write_jsonl(tmp_path / "r.jsonl", good_rows()))).exit_code
        == 0
    )
    with write_lock_held(docket_sqlite.url):
        for args in (
            ("protocol", "list", "--json"),
            ("runs", "list", "--json"),
            ("protocol", "show", pid, "--json"),
        ):
            result, took = timed(docket_sqlite, *args)
            assert result.exit_code == 0, (args, result.output)
            assert took < FAST_S, (args, took)
        listed = json.loads(docket_sqlite("runs", "list", "--json").output)
        assert [r["status"] for r in listed] == ["succeeded"]


def test_ingest_validates_before_taking_the_write_lock(
    docket_sqlite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = frozen(docket_sqlite, tmp_path)
    rows = good_rows()
    rows[3]["signals"]["s_pos"] = "0.5"  # a string as a number: refused on its line
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    before = counts(docket_sqlite.url)
    with write_lock_held(docket_sqlite.url):
        result, took = timed(docket_sqlite, "ingest", pid, str(bad))
    assert result.exit_code == 2, result.output
    assert f"{bad}:4:" in result.output
    assert took < FAST_S, took
    assert counts(docket_sqlite.url) == before


def test_a_write_that_times_out_is_exit_75_with_the_lock_message(
    docket_sqlite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = frozen(docket_sqlite, tmp_path)
    good = write_jsonl(tmp_path / "good.jsonl", good_rows())
    before = counts(docket_sqlite.url)
    monkeypatch.setenv("DOCKET_LOCK_TIMEOUT_S", "0.5")
    proto = tmp_path / "other.yaml"
    proto.write_text((tmp_path / "proto.yaml").read_text().replace("ingest-test", "other"))
    with write_lock_held(docket_sqlite.url):
        for args in (("ingest", pid, str(good)), ("protocol", "register", str(proto))):
            result, took = timed(docket_sqlite, *args)
            assert result.exit_code == LedgerBusy.exit_code == 75, (args, result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.output, result.output
            assert "is locked by another writer" in lines[0]
            assert "waited 0.5 s" in lines[0] and "DOCKET_LOCK_TIMEOUT_S" in lines[0]
            assert "nothing was written" in lines[0]
            assert 0.4 < took < FAST_S, took
    assert counts(docket_sqlite.url) == before
    assert docket_sqlite("ingest", pid, str(good)).exit_code == 0  # lock released: it goes in


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1", "1e308"])
def test_an_invalid_lock_timeout_is_refused(docket_sqlite: Any, monkeypatch, value: str) -> None:
    monkeypatch.setenv("DOCKET_LOCK_TIMEOUT_S", value)
    result = docket_sqlite("protocol", "list")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"docket: DOCKET_LOCK_TIMEOUT_S={value!r}: expected a number of seconds between 0 and 86400"
    )


def test_postgresql_honours_the_lock_timeout_too(
    pg_schema_url: str, tmp_path: Path, monkeypatch
) -> None:
    """PostgreSQL: an append that waits for the journal's advisory lock (held by another
    connection mid-transaction) fails after ``DOCKET_LOCK_TIMEOUT_S`` with exit 75 and writes
    nothing, like SQLite; before, it waited forever."""
    import zlib

    from conftest import DocketCli
    from sqlalchemy import create_engine, text

    cli = DocketCli(pg_schema_url, tmp_path)
    assert cli("init").exit_code == 0
    monkeypatch.setenv("DOCKET_LOCK_TIMEOUT_S", "0.5")
    holder = create_engine(pg_schema_url)
    key = zlib.crc32(b"docket:journal_entries")
    try:
        with holder.connect() as conn:
            conn.execute(text("BEGIN"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            result, took = timed(cli, "journal", "add", "--title", "t", "--obs", "o")
            conn.execute(text("ROLLBACK"))
        assert result.exit_code == LedgerBusy.exit_code == 75, result.output
        assert "is locked by another writer" in result.output and "waited 0.5 s" in result.output
        assert 0.4 < took < FAST_S, took
        listed = json.loads(cli("journal", "list", "--json").output)
        assert listed == [], listed
        assert cli("journal", "add", "--title", "t", "--obs", "o").exit_code == 0
    finally:
        holder.dispose()
