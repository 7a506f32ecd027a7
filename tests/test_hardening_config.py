"""Regression tests for issue 16, configuration and environment: hardware rates, the artifacts
root, schema revisions, read-only and odd ledger paths, output paths, integers past what the
database stores, journal entries naming unknown runs.

Bad input is exit 2 with one line and nothing written; a refusal by the environment (read-only
ledger, full disk) is exit 4; never a traceback, never an orphaned run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed_helpers import freeze
from sqlalchemy import MetaData, create_engine, select, text

from docketml.ledger.billing.hardware import HardwareConfigError, load_catalog
from docketml.ledger.billing.money import MAX_MICROS, usd_to_micros
from docketml.ledger.store.db import init_ledger
from docketml.ledger.store.limits import MAX_ID

SYNTH = [{"name": "synth", "kind": "synthetic", "hardware": "a40"}]


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table: equal snapshots mean nothing was written."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in meta.tables.items()
            }
    finally:
        engine.dispose()


def one_line(result, code: int = 2, *fragments: str) -> str:
    """Assert exit ``code``, no traceback, and the last stderr line holds every fragment."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    if code != 2 or lines[0].startswith("docket:"):  # docket's own errors: exactly one line
        assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"
    return lines[-1]


def run_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()


# --- hardware rates and money bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("a40: {usd_per_hour: 1e30}", "usd_per_hour"),
        ("a40: {usd_per_hour: '1e30'}", "usd_per_hour"),
        ("a40: {setup_seconds: 100000000000000000000}", "setup_seconds"),
        ("a40: {billing_granularity_s: 100000000000000000000}", "billing_granularity_s"),
    ],
)
def test_hardware_rate_that_overflows_cost_is_refused_at_load(
    tmp_path: Path, body: str, field: str
) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text(f"hardware:\n  {body}\n", encoding="utf-8")
    with pytest.raises(HardwareConfigError) as err:
        load_catalog(path)
    assert str(err.value).startswith(f"{path}:2:") and field in str(err.value)


def test_run_with_an_absurd_rate_records_no_run(docket_sqlite, tmp_path: Path, monkeypatch) -> None:
    ledger = init_ledger(docket_sqlite.url)
    freeze(ledger, "hw", SYNTH)
    ledger.engine.dispose()
    hw = tmp_path / "hw.yaml"
    hw.write_text("hardware:\n  a40: {usd_per_hour: 1e30}\n", encoding="utf-8")
    monkeypatch.setenv("DOCKET_HARDWARE", str(hw))
    one_line(docket_sqlite("run", "hw"), 2, str(hw), "usd_per_hour")
    assert run_count(docket_sqlite.url) == 0
    monkeypatch.delenv("DOCKET_HARDWARE")
    assert docket_sqlite("runs", "list").exit_code == 0
    assert docket_sqlite("audit").exit_code == 0


def test_money_beyond_the_column_is_refused() -> None:
    assert usd_to_micros(str(MAX_MICROS // 1_000_000)) <= MAX_MICROS
    for amount in ("100000000000000000", 10**17):
        with pytest.raises(ValueError, match="too large"):
            usd_to_micros(amount)


def test_cost_add_overflow_is_exit_2_on_both_backends(docket) -> None:
    before = snapshot(docket.url)
    one_line(docket("cost", "add", "--hardware", "a40", "--usd", "100000000000000000"), 2, "--usd")
    one_line(docket("cost", "add", "--hardware", "a40", "--seconds", "1e30"), 2, "--seconds")
    assert snapshot(docket.url) == before


# --- the artifacts root -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_artifacts_root_that_is_no_directory_orphans_no_run(
    docket_sqlite, tmp_path: Path, monkeypatch, where: str
) -> None:
    ledger = init_ledger(docket_sqlite.url)
    freeze(ledger, "art", SYNTH)
    ledger.engine.dispose()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    root = blocker if where == "file" else blocker / "sub"
    monkeypatch.setenv("DOCKET_ARTIFACTS", str(root))
    one_line(docket_sqlite("run", "art"), 2, "DOCKET_ARTIFACTS", str(root))
    assert run_count(docket_sqlite.url) == 0


# --- schema revisions ---------------------------------------------------------------------------


def test_db_upgrade_refuses_nonsense_and_downgrades(docket) -> None:
    before = snapshot(docket.url)
    one_line(docket("db", "upgrade", "--revision", "nonsense"), 2, "'nonsense'", "0001")
    one_line(docket("db", "upgrade", "--revision", "0001"), 2, "never downgrades")
    assert snapshot(docket.url) == before
    assert docket("db", "upgrade").exit_code == 0  # to the current head: a no-op


def test_unknown_revision_and_missing_version_table(docket) -> None:
    engine = create_engine(docket.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zzz'"))
    one_line(docket("runs", "list"), 2, "zzz", "unknown")
    one_line(docket("db", "upgrade"), 2, "zzz", "unknown to this docket")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    for args in (("runs", "list"), ("db", "upgrade"), ("init",)):
        one_line(docket(*args), 2, "no alembic_version table")


# --- ledger paths: parent is a file, read-only ledgers --------------------------------------------


def test_sqlite_path_under_a_file(tmp_path: Path) -> None:
    from conftest import DocketCli

    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    cli = DocketCli(f"sqlite:///{blocker / 'ledger.db'}", tmp_path)
    one_line(cli("init"), 2, str(blocker))
    one_line(cli("runs", "list"), 2, "run `docket init` first")


def test_read_only_ledger_reads_work_and_writes_exit_4(docket_sqlite, tmp_path: Path) -> None:
    from conftest import DocketCli

    ledger = init_ledger(docket_sqlite.url)
    freeze(ledger, "ro", SYNTH)
    ledger.engine.dispose()
    path = tmp_path / "ledger.db"
    before = snapshot(docket_sqlite.url)
    ro = DocketCli(f"sqlite:///file:{path}?mode=ro&uri=true", tmp_path)
    for args in (
        ("protocol", "list"),
        ("runs", "list"),
        ("verdict", "ro", "--history"),
        ("audit",),
        ("journal", "list"),
    ):
        result = ro(*args)
        assert result.exit_code == 0, (args, result.output)
    one_line(ro("journal", "add", "--title", "t"), 4, "read-only")
    one_line(ro("cost", "add", "--hardware", "a40", "--usd", "1"), 4, "read-only")
    assert snapshot(docket_sqlite.url) == before


# --- output paths -------------------------------------------------------------------------------


def test_report_of_unknown_protocol_creates_no_directory(docket_sqlite, tmp_path: Path) -> None:
    out = tmp_path / "newdir"
    one_line(docket_sqlite("report", "UNKNOWN", "--out", str(out)), 2, "UNKNOWN")
    assert not out.exists()


def test_output_paths_that_cannot_be_written(docket_sqlite, tmp_path: Path) -> None:
    ledger = init_ledger(docket_sqlite.url)
    freeze(ledger, "out", SYNTH)
    ledger.engine.dispose()
    docket_sqlite("journal", "add", "--title", "an entry")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    under_file = blocker / "sub" / "j.md"
    cases = [
        (("journal", "export", "-o", str(under_file)), 2, "is not a directory"),
        (("journal", "export", "--out", str(fifo)), 2, "not a regular file"),
        (("journal", "export", "--out", "/dev/full"), 4, "No space left"),
        (("report", "out", "--out", "/dev/full"), 2, "not a directory"),
        (("report", "out", "--out", str(blocker / "r")), 2, "is not a directory"),
        (("export", "out", "--out", str(blocker)), 2, "is a file"),
        (("export", "out", "--out", "/dev/full"), 2, "not a directory"),
        (("trajectory", "out", "--out", str(under_file.with_suffix(".png"))), 2, "not a dir"),
        (("journal", "export", "--out", str(tmp_path)), 2, "is a directory"),
    ]
    for args, code, fragment in cases:
        one_line(docket_sqlite(*args), code, fragment)
    assert docket_sqlite("journal", "export", "-o", "/dev/null").exit_code == 0
    made = tmp_path / "new" / "deeper" / "j.md"  # missing parents are created, as for --out DIR
    assert docket_sqlite("journal", "export", "-o", str(made)).exit_code == 0
    assert "an entry" in made.read_text(encoding="utf-8")


# --- integers the database cannot store ---------------------------------------------------------


def test_ids_past_the_column_are_exit_2_with_the_bound(docket) -> None:
    ledger = init_ledger(docket.url)
    freeze(ledger, "ids", SYNTH)
    ledger.engine.dispose()
    before = snapshot(docket.url)
    huge = str(10**21)
    for args in (
        ("journal", "show", huge),
        ("journal", "show", str(MAX_ID + 1)),
        ("runs", "show", str(2**63)),
        ("runs", "compare", "1", huge),
        ("protocol", "show", "ids", "--version", huge),
        ("journal", "add", "--title", "t", "--run", huge),
        ("journal", "add", "--title", "t", "--corrects", huge),
    ):
        result = docket(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert str(MAX_ID) in result.output, (args, result.output)
    assert snapshot(docket.url) == before


def test_journal_add_of_a_run_that_does_not_exist(docket) -> None:
    before = snapshot(docket.url)
    one_line(docket("journal", "add", "--title", "t", "--run", "7"), 2, "run 7", "no runs")
    assert snapshot(docket.url) == before


def test_estimate_past_the_billing_bound_records_no_run(docket_sqlite) -> None:
    ledger = init_ledger(docket_sqlite.url)
    freeze(ledger, "est", [{**SYNTH[0], "estimate_seconds": 1e300}])
    ledger.engine.dispose()
    one_line(docket_sqlite("run", "est"), 2, "estimate_seconds", "'synth'")
    assert run_count(docket_sqlite.url) == 0
