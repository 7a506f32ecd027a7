"""The journal in the ledger: hash chain, corrections, CLI, markdown round trip, append-only.

Database tests run on SQLite and on PostgreSQL (``DOCKET_TEST_POSTGRES``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DocketCli, fresh_pg_schema_url
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from docketml.journal import JournalEntry, build_chain, parse_journal
from docketml.ledger.errors import UserError
from docketml.ledger.store import journal as js

FIXTURE = Path(__file__).parent / "fixtures" / "journal_003.md"


def _entry(title: str, **kw) -> JournalEntry:
    return JournalEntry(date=dt.date(2026, 6, 1), title=title, **kw)


@pytest.fixture
def second_url(ledger_url: str, tmp_path: Path) -> Iterator[str]:
    """Another empty ledger URL on the same backend as ``ledger_url``."""
    if ledger_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    with fresh_pg_schema_url() as url:
        yield url


# --------------------------------------------------------------------------- store


def test_append_chains_like_journal_chain(ledger) -> None:
    entries = [_entry("first", observations=["a"]), _entry("second", tag="b"), _entry("third")]
    with ledger.session() as session:
        rows = [js.append_entry(session, e) for e in entries]
    expected = build_chain(entries)
    assert [(r.seq, r.body_json, r.prev_hash, r.hash) for r in rows] == [tuple(c) for c in expected]
    with ledger.session() as session:
        stored = js.list_entries(session)
        assert js.verify_journal_chain(stored) == []
        assert [js.entry_of(r) for r in stored] == entries


def test_corrections_link_both_ways(ledger) -> None:
    with ledger.session() as session:
        js.append_entry(session, _entry("lr matters", tag="h"))
        js.append_entry(session, _entry("unrelated"))
        by_seq = js.append_entry(session, _entry("lr does not matter"), corrects_seq=1)
        by_tag = js.append_entry(session, _entry("", corrects="h", notes="(h) was wrong"))
        assert (by_seq.corrects_seq, js.entry_of(by_seq).corrects) == (1, "h")  # tag preferred
        assert by_tag.corrects_seq == 1
        untagged = js.append_entry(session, _entry("fix"), corrects_seq=2)
        assert js.entry_of(untagged).corrects == "2"
        assert js.corrections_index(session) == {1: [3, 4], 2: [5]}
        with pytest.raises(UserError, match="no journal entry with seq 99"):
            js.append_entry(session, _entry("x"), corrects_seq=99)
        with pytest.raises(UserError, match="no earlier journal entry has tag 'zz'"):
            js.append_entry(session, _entry("x", corrects="zz"))
        with pytest.raises(UserError, match="give one of them"):
            js.append_entry(session, _entry("x", corrects="h"), corrects_seq=2)
        assert js.verify_journal_chain(js.list_entries(session)) == []


def test_concurrent_appends_keep_one_chain(ledger) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(5):
                with ledger.session() as session:
                    js.append_entry(session, _entry(f"writer {k} entry {i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with ledger.session() as session:
        rows = js.list_entries(session)
        assert [r.seq for r in rows] == list(range(1, 21))
        assert js.verify_journal_chain(rows) == []


def test_journal_rows_cannot_be_updated_or_deleted(ledger) -> None:
    with ledger.session() as session:
        js.append_entry(session, _entry("permanent"))
    for statement in (
        "UPDATE journal_entries SET title = 'edited'",
        "UPDATE journal_entries SET body_json = '{}'",
        "DELETE FROM journal_entries",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            with ledger.engine.begin() as conn:
                conn.execute(text(statement))
    with ledger.session() as session:
        (row,) = js.list_entries(session)
        assert row.title == "permanent" and js.verify_journal_chain([row]) == []


# --------------------------------------------------------------------------- CLI


def test_journal_add_list_with_flags_and_corrections(docket, tmp_path: Path) -> None:
    first = docket(
        "journal",
        "add",
        "--title",
        "lr sweep",
        "--context",
        "3 seeds, a40",
        "--obs",
        "loss fell",
        "--obs",
        "acc rose",
        "--inf",
        "the lr matters:0.6",
        "--inf",
        "ratio a:b is stable:70%",
        "--failure",
        "seed noise:0.3",
        "--next",
        "rerun with 5 seeds",
        "--json",
    )
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["seq"] == 1
    fix = docket(
        "journal",
        "add",
        "--corrects",
        "1",
        "--title",
        "lr does not matter",
        "--inf",
        "it was the seed:0.8",
    )
    assert fix.exit_code == 0, fix.output
    assert "corrects #1" in fix.output
    listed = json.loads(docket("journal", "list", "--json").output)
    assert [(d["seq"], d["corrects_seq"], d["corrected_by"]) for d in listed] == [
        (1, None, [2]),
        (2, 1, []),
    ]
    entry = listed[0]["entry"]
    assert entry["observations"] == ["loss fell", "acc rose"]
    assert [(i["text"], i["credence"]) for i in entry["inferences"]] == [
        ("the lr matters", 0.6),
        ("ratio a:b is stable", 0.7),
    ]
    assert entry["failure_modes"][0]["prior"] == 0.3
    human = docket("journal", "list")
    assert human.exit_code == 0 and "#2" in human.output and "#1 (1)" in human.output
    show = docket("journal", "show", "2")
    assert "corrects #1" in show.output and "CORRECTION to (1): lr does not matter" in show.output
    assert "corrected by #2" in docket("journal", "show", "1").output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--title", "t", "--inf", "no credence"], "--inf"),
        (["--title", "t", "--inf", "x:1.5"], "--inf"),
        (["--title", "t", "--failure", "x:-0.1"], "--failure"),
        (["--title", "t", "--corrects", "7"], "--corrects 7"),
        (["--title", "t", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["--obs", "no title"], "--title"),
        (["--file", "missing.md"], "missing.md: file not found"),
        (["--file", "bad.md"], "bad.md:3"),
        (["--file", "bad.md", "--title", "x"], "--file cannot be combined with --title"),
    ],
)
def test_journal_add_rejects_bad_input(docket_sqlite, tmp_path: Path, args, needle) -> None:
    (tmp_path / "bad.md").write_text("## 2026-06-01 — t\n### Inferences\n- [inf] no tail\n")
    result = docket_sqlite("journal", "add", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert json.loads(docket_sqlite("journal", "list", "--json").output) == []


def test_journal_add_from_file(docket_sqlite, tmp_path: Path) -> None:
    (tmp_path / "e.md").write_text(
        "## 2026-06-02 (k) — probe AUROC is 0.76\n"
        "**Context:** v7 checkpoint\n"
        "### Observations\n- [obs] AUROC 0.76 on abstain_p\n"
        "### Inferences\n- [inf] the head learned something {credence: 0.7}\n"
        "### Failure modes considered\n- **Null:** label leak. Prior 0.2. Check: shuffle labels\n"
    )
    result = docket_sqlite("journal", "add", "--file", "e.md", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["tag"], data["title"]) == ("k", "probe AUROC is 0.76")
    fix = docket_sqlite("journal", "add", "--corrects", "k", "--title", "it was a leak")
    assert fix.exit_code == 0, fix.output
    listed = json.loads(docket_sqlite("journal", "list", "--json").output)
    assert listed[0]["corrected_by"] == [2] and listed[1]["corrects"] == "k"


def test_export_import_round_trip(docket, second_url: str, tmp_path: Path) -> None:
    assert docket("journal", "import", str(FIXTURE)).exit_code == 0
    lr_sweep = ["--title", "lr sweep", "--tag", "k", "--obs", "loss fell", "--next", "rerun"]
    docket("journal", "add", *lr_sweep, "--inf", "lr matters:0.6", "--failure", "noise:0.3")
    docket("journal", "add", "--corrects", "3", "--title", "", "--inf", "it was the seed:0.8")
    docket(
        "journal",
        "add",
        "--title",
        "- a title that looks like a list",
        "--notes",
        "# not a heading\n- not an item",
    )
    exported = docket("journal", "export")
    assert exported.exit_code == 0
    markdown = exported.output
    assert markdown.startswith("Append-only. New entries at the top")
    assert (
        "CORRECTION to (k)" in markdown
        and "credence: 0.95" in markdown
        and "Prior 0.4." in markdown
    )
    path = tmp_path / "JOURNAL.md"
    path.write_text(markdown, encoding="utf-8")

    other = DocketCli(second_url, tmp_path)
    assert other("init").exit_code == 0
    imported = other("journal", "import", str(path), "--json")
    assert imported.exit_code == 0, imported.output
    counts = json.loads(imported.output)
    assert (counts["parsed"], counts["imported"], counts["skipped"]) == (5, 5, 0)
    assert counts["dangling_corrections"] == ["seq 1 corrects (h)"]  # (h) is not in the excerpt
    assert other("journal", "export").output == markdown
    mine = json.loads(docket("journal", "list", "--json").output)
    theirs = json.loads(other("journal", "list", "--json").output)
    assert [d["hash"] for d in theirs] == [d["hash"] for d in mine]  # same chain, same hashes
    assert [(d["corrects_seq"], d["corrected_by"]) for d in theirs] == [
        (d["corrects_seq"], d["corrected_by"]) for d in mine
    ]
    again = json.loads(other("journal", "import", str(path), "--json").output)
    assert (again["imported"], again["skipped"]) == (0, 5)
    assert other("audit").exit_code == 0
    assert parse_journal(markdown)[0].tag == "i"


def test_import_with_protocol_and_parse_errors(docket_sqlite, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "docket: 1\nid: jp\ntitle: t\nhypotheses: [{id: H1, statement: s, rule: r}]\n"
        "decision_rules: {r: {kind: threshold, statistic: mean, signal: s, bound: 0}}\n"
        "signals: {s: {higher_means: positive}}\n"
    )
    assert docket_sqlite("protocol", "register", "p.yaml").exit_code == 0
    result = docket_sqlite("journal", "import", str(FIXTURE), "--protocol", "jp", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(docket_sqlite("journal", "list", "--protocol", "jp", "--json").output)
    assert [d["protocol"] for d in listed] == ["jp", "jp"]
    exported = docket_sqlite("journal", "export", "--protocol", "jp").output
    assert exported.count("**Protocol:** jp") == 2
    (tmp_path / "broken.md").write_text("## 2026-06-01 — t\n### Surprises\n- x\n")
    bad = docket_sqlite("journal", "import", "broken.md")
    assert bad.exit_code == 2 and "broken.md:2" in bad.output and "unknown section" in bad.output
    assert len(json.loads(docket_sqlite("journal", "list", "--json").output)) == 2
