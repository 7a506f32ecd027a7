"""Tests of the journal package: schema, markdown round trips, hash chain, flags."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from docketml.journal import (
    GENESIS,
    HEADER,
    ChainRow,
    FailureMode,
    Inference,
    JournalEntry,
    JournalParseError,
    build_chain,
    canonical_entry_json,
    entry_from_canonical,
    entry_from_flags,
    entry_from_markdown,
    entry_from_markdown_file,
    entry_hash,
    parse_journal,
    parse_scored_flag,
    render_entry,
    render_journal,
    verify_chain,
)

FIXTURE = Path(__file__).parent / "fixtures" / "journal_003.md"


@pytest.fixture(scope="module")
def seed_entries() -> list[JournalEntry]:
    return parse_journal(FIXTURE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the seed fixture


def test_fixture_parses_oldest_first(seed_entries: list[JournalEntry]) -> None:
    assert [e.tag for e in seed_entries] == ["i", "j"]  # file is newest first
    assert all(e.date == dt.date(2026, 5, 31) for e in seed_entries)


def test_fixture_credences_priors_and_correction(seed_entries: list[JournalEntry]) -> None:
    i, j = seed_entries
    file_order = [j, i]
    assert [inf.credence for e in file_order for inf in e.inferences] == [0.6, 0.95, 0.85, 0.8]
    assert [fm.prior for fm in j.failure_modes] == [0.4, 0.3, 0.2]
    assert [fm.label for fm in j.failure_modes] == ["Likely", "Subtle", "Null"]
    assert i.corrects == "h"
    assert j.corrects is None
    assert i.title == "the AdamW-parasite does NOT transfer to route2"
    assert i.notes is not None and i.notes.startswith("Entry (h) inf #2")


def test_fixture_fields(seed_entries: list[JournalEntry]) -> None:
    j = seed_entries[1]
    assert j.title.startswith("frozen-real-V route (rf0) only drops deploy hack ~8pp")
    assert j.context is not None and "pueue id 32" in j.context
    assert j.hypothesis is not None and j.hypothesis.startswith("frozen route reproduces")
    assert len(j.observations) == 5
    # a wrapped observation keeps its line breaks (lossless) and nothing else
    assert j.observations[0] == (
        "ROUTE EVAL n=64: train/knob-on hack=0.375 solve=0.422 | deploy/knob-off\n"
        "hack=0.297 solve=0.500. Deploy hack drops only ~8pp from train, NOT to ~0."
    )
    assert j.inferences[1].reason == "code-read of the refresh guard `if v_hack is not None`"
    fm = j.failure_modes[0]
    assert fm.text == "the 8pp drop is adapter-ablation regularization, not directional."
    assert fm.check is not None and fm.check.startswith("job 33 random-V rf0")
    assert j.next_action is not None and j.next_action.startswith("Job 33 (random-V rf0)")


def test_fixture_parse_render_parse_is_stable(seed_entries: list[JournalEntry]) -> None:
    rendered = render_journal(seed_entries)
    assert rendered.startswith(HEADER + "\n")
    again = parse_journal(rendered)
    assert again == seed_entries
    assert render_journal(again) == rendered  # text fixed point after one pass
    # newest first in the file
    assert rendered.index("(j) —") < rendered.index("(i) —")


# --------------------------------------------------------------------------- random round trips

_WORDS = [
    "alpha",
    "key: value",
    "a:b:c",
    "ratio 3:1",
    "naïve",
    "über",
    "漢字",
    "🙂",
    "—",
    "(h)",
    "#157",
    "{x}",
    '"quoted"',
    "don't",
    "50%",
    "0.5",
    "->",
    "|",
    "`code`",
    "prior",
    "Check:",
    "[obs]",
    "**bold**",
    "CORRECTION",
    "credence",
    "reason",
]
_LINE_STARTS = ["- ", "* ", "## ", "### ", "**Context:** ", "+ ", "# ", "- [inf] ", ""]


def _text(rng: random.Random, max_lines: int = 3) -> str:
    lines = []
    for _ in range(rng.randint(1, max_lines)):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6)))
        lines.append(words)
    for k in range(1, len(lines)):  # continuation lines that look like structure
        if rng.random() < 0.4:
            lines[k] = rng.choice(_LINE_STARTS) + lines[k]
    return "\n".join(lines)


def _prob(rng: random.Random) -> float:
    return rng.choice([0.0, 1.0, 0.5, 0.1, 1e-05, 0.95, rng.random()])


def _random_entry(rng: random.Random) -> JournalEntry:
    while True:
        try:
            corrects = rng.choice([None, None, "h", "12", "a.b"])
            title = rng.choice(_WORDS) + " " + rng.choice(_WORDS)
            if corrects and rng.random() < 0.3:
                title = ""
            return JournalEntry(
                date=dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 3000)),
                tag=rng.choice([None, "j", "i2", "42"]),
                title=title,
                context=rng.choice([None, _text(rng)]),
                hypothesis=rng.choice([None, _text(rng)]),
                observations=[_text(rng) for _ in range(rng.randint(0, 4))],
                inferences=[
                    Inference(
                        text=_text(rng),
                        credence=_prob(rng),
                        reason=rng.choice([None, _text(rng)]),
                    )
                    for _ in range(rng.randint(0, 3))
                ],
                failure_modes=[
                    FailureMode(
                        label=rng.choice([None, "Likely", "Subtle", "Null", "Very likely"]),
                        text=_text(rng),
                        prior=_prob(rng),
                        check=rng.choice([None, _text(rng)]),
                    )
                    for _ in range(rng.randint(0, 3))
                ],
                next_action=rng.choice([None, _text(rng, 4)]),
                corrects=corrects,
                protocol=rng.choice([None, "router-entropy-metacog"]),
                runs=rng.sample(range(1, 50), rng.randint(0, 3)),
                notes=rng.choice([None, _text(rng)]),
            )
        except ValidationError:
            continue  # reserved sequences drawn at random; draw again


def test_random_entries_round_trip() -> None:
    rng = random.Random(20260531)
    entries = [_random_entry(rng) for _ in range(300)]
    assert parse_journal(render_journal(entries)) == entries
    for entry in entries[:100]:
        assert parse_journal(render_entry(entry)) == [entry]
        assert entry_from_canonical(canonical_entry_json(entry)) == entry


def test_round_trip_hand_picked_edge_cases() -> None:
    entry = JournalEntry(
        date=dt.date(2026, 6, 1),
        tag="k",
        title="ratio a:b — still 3:1: odd (x)",
        observations=[
            "first line\n- [inf] looks like an item {credence: 0.3}\n### Observations\n## 2026",
            "ünïcødé 漢字 🙂 key: value",
        ],
        inferences=[
            Inference(text="claim: with colons", credence=0.25, reason='he said "x", credence: 2}'),
            Inference(text="no reason given", credence=1.0),
        ],
        failure_modes=[
            FailureMode(text="unlabelled mode.", prior=0.0),
            FailureMode(label="Likely", text="labelled", prior=1.0, check="**Check:** x\n- y"),
        ],
        next_action="- first bullet\n**Context:** not a label\n### not a section",
        corrects=None,
        runs=[3, 1, 2],
    )
    assert parse_journal(render_entry(entry)) == [entry]


# --------------------------------------------------------------------------- parser robustness


def test_header_lines_ignored_and_empty_journal() -> None:
    assert parse_journal("") == []
    assert parse_journal("# Journal\n\n" + HEADER + "\n## Index\nnothing here\n") == []


def test_optional_sections_percentages_and_forms() -> None:
    text = """# Journal
Append-only. New entries at the top, date-stamped. Never edit old entries.

## 2026-06-02 (b) \u2013 CORRECTION to (12)
- [inf] only an inference {credence: 70%}

## 2026-06-01 (a): plain title
**Runs:** #4, 5
**Protocol:** router-entropy-metacog
### Failure modes
- the unlabelled one. prior: 40%.
- **Subtle:** with check Prior .3 Check: look
  - an indented continuation
### Next steps
first

second paragraph
"""
    a, b = parse_journal(text)
    assert (a.tag, a.title, a.runs, a.protocol) == (
        "a",
        "plain title",
        [4, 5],
        "router-entropy-metacog",
    )
    assert [fm.prior for fm in a.failure_modes] == [0.4, 0.3]
    assert a.failure_modes[0].label is None
    assert a.failure_modes[1].check == "look\n- an indented continuation"
    assert a.next_action == "first\nsecond paragraph"
    assert (b.corrects, b.title, b.inferences[0].credence) == ("12", "", 0.7)
    assert parse_journal(render_journal([a, b])) == [a, b]
    assert "CORRECTION to (12)\n" in render_entry(b)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("## 2026-13-01 (x) — bad month\n", 1, "invalid date"),
        ("x\n## 2026-06-01\n", 2, "no title"),
        ("## 2026-06-01 (a) — t\n## not a date\n", 2, "malformed entry heading"),
        ("## 2026-06-01 (a) — t\n### Results\n", 2, "unknown section"),
        ("## 2026-06-01 (a) — t\n- [inf] no credence here\n", 2, "credence"),
        ("## 2026-06-01 (a) — t\n### Inferences\n- x {credence: 1.5}\n", 3, "less than or equal"),
        ("## 2026-06-01 (a) — t\n### Failure modes\n- **Likely:** no prior\n", 3, "Prior"),
        ("## 2026-06-01 (a) — t\n**Context:** a\n**Context:** b\n", 3, "duplicate"),
        ("## 2026-06-01 (a) — t\n**Runs:** 1, two\n", 2, "integers"),
        ("## 2026-06-01 (a) — t\n### Observations\n- [obs]\n", 3, "empty observation"),
        ("## 2026-06-01 (a) — t\n### Observations\n- [obs] ok\n## 2026-06-01 (b)\n", 4, "no title"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(JournalParseError) as info:
        parse_journal(text)
    assert info.value.line == line
    assert fragment in info.value.message
    assert str(info.value).startswith(f"line {line}: ")


def test_schema_rules() -> None:
    with pytest.raises(ValidationError):
        JournalEntry(date=dt.date(2026, 1, 1), title="x", unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        JournalEntry(date=dt.date(2026, 1, 1), title="")
    with pytest.raises(ValidationError):
        JournalEntry(date=dt.date(2026, 1, 1), title="CORRECTION to (h): sneaky")
    with pytest.raises(ValidationError):
        Inference(text="x", credence=-0.1)
    with pytest.raises(ValidationError):
        FailureMode(text="x", prior=float("nan"))
    e = JournalEntry(date=dt.date(2026, 1, 1), title=" t ", context="  a \n\n  b  ", notes="  ")
    assert (e.title, e.context, e.notes) == ("t", "a\nb", None)


# --------------------------------------------------------------------------- the hash chain


def test_canonical_json_is_sorted_compact_and_wrap_independent(
    seed_entries: list[JournalEntry],
) -> None:
    canonical = canonical_entry_json(seed_entries[1])
    data = json.loads(canonical)
    assert list(data) == sorted(data)
    assert canonical == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data["date"] == "2026-05-31"
    # indenting continuation lines does not change the canonical form
    md = render_entry(seed_entries[1])
    indented = "\n".join(
        ("   " + line) if line and not line.startswith(("#", "-", "*")) else line
        for line in md.splitlines()
    )
    (reparsed,) = parse_journal(indented)
    assert canonical_entry_json(reparsed) == canonical


def test_entry_hash_formula() -> None:
    expected = hashlib.sha256(("a" * 64 + "\n" + '{"x":1}').encode()).hexdigest()
    assert entry_hash("a" * 64, '{"x":1}') == expected
    assert GENESIS == "0" * 64


def _chain(n: int = 4) -> list[ChainRow]:
    entries = [
        entry_from_flags(title=f"entry {k}", obs=[f"o{k}"], date=dt.date(2026, 1, k + 1))
        for k in range(n)
    ]
    return build_chain(entries)


def test_intact_chain_verifies(seed_entries: list[JournalEntry]) -> None:
    assert verify_chain(_chain()) == []
    assert verify_chain(build_chain(seed_entries)) == []
    assert verify_chain([]) == []
    rows = _chain()
    assert rows[0].prev_hash == GENESIS
    assert all(rows[k].prev_hash == rows[k - 1].hash for k in range(1, len(rows)))


def test_changed_canonical_is_detected_at_its_seq() -> None:
    rows = _chain()
    tampered = rows[1]._replace(canonical=rows[1].canonical.replace("o1", "O1"))
    problems = verify_chain([rows[0], tampered, *rows[2:]])
    assert [(p.seq, p.field) for p in problems] == [(2, "hash")]
    assert "seq 2" in str(problems[0])


def test_broken_prev_link_is_detected() -> None:
    rows = _chain()
    bad_prev = "f" * 64
    relinked = rows[2]._replace(prev_hash=bad_prev, hash=entry_hash(bad_prev, rows[2].canonical))
    problems = verify_chain([*rows[:2], relinked, rows[3]])
    assert (problems[0].seq, problems[0].field) == (3, "prev_hash")
    assert problems[0].expected == rows[1].hash and problems[0].actual == bad_prev
    # the first row must start from GENESIS (a deleted head is caught)
    assert verify_chain(rows[1:])[0].field == "prev_hash"


def test_reordered_pair_is_detected() -> None:
    rows = _chain()
    # rows swapped in storage order (seq numbers travel with them)
    problems = verify_chain([rows[0], rows[2], rows[1], rows[3]])
    assert problems[0].seq == 3
    assert {"seq", "prev_hash"} <= {p.field for p in problems}
    # contents swapped but renumbered to look contiguous
    swapped = [rows[0], rows[2]._replace(seq=2), rows[1]._replace(seq=3), rows[3]]
    problems = verify_chain(swapped)
    assert (problems[0].seq, problems[0].field) == (2, "prev_hash")


def test_missing_row_is_detected() -> None:
    rows = _chain()
    problems = verify_chain([rows[0], rows[2], rows[3]])
    assert (problems[0].seq, problems[0].field) == (3, "seq")


# --------------------------------------------------------------------------- flags


def test_entry_from_flags() -> None:
    entry = entry_from_flags(
        title="router entropy tracks failure",
        context="ctx",
        obs=["one", "two: with colon"],
        inf=["ratio a:b holds:0.6", "percent form: 70%"],
        failure=["seed noise:0.3"],
        next_action="rerun",
        corrects="h",
        date=dt.date(2026, 6, 1),
    )
    assert [(i.text, i.credence) for i in entry.inferences] == [
        ("ratio a:b holds", 0.6),
        ("percent form", 0.7),
    ]
    assert [(f.text, f.prior) for f in entry.failure_modes] == [("seed noise", 0.3)]
    assert entry.observations == ["one", "two: with colon"]
    assert (entry.next_action, entry.corrects) == ("rerun", "h")
    assert entry_from_flags(title="t").date == dt.date.today()


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--inf", "no colon here", "no colon"),
        ("--inf", "text:abc", "not a number"),
        ("--inf", "text:1.5", "outside [0, 1]"),
        ("--inf", "text:nan", "outside [0, 1]"),
        ("--inf", ":0.5", "empty text"),
        ("--failure", "text:-0.1", "prior -0.1 is outside"),
    ],
)
def test_flag_errors_name_flag_and_form(flag: str, value: str, fragment: str) -> None:
    kwargs = {"inf": [value]} if flag == "--inf" else {"failure": [value]}
    with pytest.raises(ValueError) as info:
        entry_from_flags(title="t", **kwargs)
    message = str(info.value)
    assert message.startswith(f"{flag} ")
    assert fragment in message
    assert "TEXT:" in message


def test_parse_scored_flag_uses_last_colon() -> None:
    assert parse_scored_flag("--inf", "a:b:c:0.25") == ("a:b:c", 0.25)


def test_flag_field_errors_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--title"):
        entry_from_flags(title="")
    with pytest.raises(ValueError, match="--corrects"):
        entry_from_flags(title="t", corrects="not a ref")


def test_entry_from_markdown(tmp_path: Path, seed_entries: list[JournalEntry]) -> None:
    one = render_entry(seed_entries[1])
    assert entry_from_markdown(one) == seed_entries[1]
    path = tmp_path / "entry.md"
    path.write_text(one, encoding="utf-8")
    assert entry_from_markdown_file(path) == seed_entries[1]
    with pytest.raises(JournalParseError, match="exactly one entry, found 2"):
        entry_from_markdown(FIXTURE.read_text(encoding="utf-8"))
    path.write_text("just text\n", encoding="utf-8")
    with pytest.raises(JournalParseError, match=r"entry\.md: expected exactly one entry, found 0"):
        entry_from_markdown_file(path)
