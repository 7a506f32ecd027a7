"""Broken protocols through the real CLI: exit 2, ``FILE:LINE: field.path: ...`` on the right line,
every problem at once, no traceback, and nothing written to the ledger.

Each case edits one small, valid protocol (``BASE``, its line numbers are written beside it) and
states the exact lines and field paths the errors must name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, inspect, select, table

from docketml.ledger.cli.main import cli
from docketml.ledger.store.db import make_engine

BASE_LINES = [
    "docket: 1",  # 1
    "id: mini",  # 2
    "title: A minimal protocol",  # 3
    "seed: 7",  # 4
    "hypotheses:",  # 5
    "  - id: H1",  # 6
    "    statement: The candidate beats the baseline.",  # 7
    "    rule: wins",  # 8
    "  - id: H2",  # 9
    "    statement: The mean score is high.",  # 10
    "    rule: high_mean",  # 11
    "signals:",  # 12
    "  cand: {higher_means: positive}",  # 13
    "  base: {higher_means: negative, role: baseline}",  # 14
    "labels: {source: regime, positive: ood, reference: in_domain}",  # 15
    "groups: [in_domain, ood_a, ood_b]",  # 16
    "decision_rules:",  # 17
    "  wins:",  # 18
    "    kind: regime_wins",  # 19
    "    candidates: [cand]",  # 20
    "    margin: 0.02",  # 21
    "    best_baseline: fixed",  # 22
    "    ci: {level: 0.95, resamples: 1000, seed: 3}",  # 23
    "    verdicts:",  # 24
    "      PROVEN: {min_wins: 2, require_any_of: [ood_b]}",  # 25
    "      PARTIAL: {min_wins: 1}",  # 26
    "      DISPROVEN: {max_wins: 0}",  # 27
    "  high_mean:",  # 28
    "    kind: threshold",  # 29
    "    statistic: mean",  # 30
    "    signal: cand",  # 31
    "    job: probe",  # 32
    "    bound: 0.5",  # 33
    "metrics:",  # 34
    "  loss_gap:",  # 35
    "    expr: loss_after - loss_before",  # 36
    "    direction: lower_is_better",  # 37
    "    sign_check:",  # 38
    "      - better: {loss_before: 1.0, loss_after: 1.1}",  # 39
    "        worse: {loss_before: 1.0, loss_after: 2.0}",  # 40
    "jobs:",  # 41
    "  - name: train",  # 42
    "    kind: pretrain",  # 43
    "    params: {model: tiny}",  # 44
    "  - name: probe",  # 45
    "    kind: probe",  # 46
    "    after: [train]",  # 47
    "budget: {usd: 1.50}",  # 48
]
BASE = "\n".join(BASE_LINES) + "\n"


def edit(*changes: tuple[int, str | None]) -> Callable[[], bytes]:
    """Replace line N (1-based) with a text, or delete it with None; applied bottom-up so the
    numbers always refer to BASE."""

    def make() -> bytes:
        lines = list(BASE_LINES)
        for number, text in sorted(changes, key=lambda c: -c[0]):
            if text is None:
                del lines[number - 1]
            else:
                lines[number - 1] = text
        return ("\n".join(lines) + "\n").encode("utf-8")

    return make


def insert_after(number: int, text: str) -> Callable[[], bytes]:
    def make() -> bytes:
        lines = list(BASE_LINES)
        lines.insert(number, text)
        return ("\n".join(lines) + "\n").encode("utf-8")

    return make


def raw(data: bytes) -> Callable[[], bytes]:
    return lambda: data


@dataclass(frozen=True)
class Case:
    name: str
    content: Callable[[], bytes]
    # (line, field path or "", a fragment of the message); one entry per expected output line
    errors: tuple[tuple[int, str, str], ...]


LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
)

CASES = [
    # --- YAML level -------------------------------------------------------------------------
    Case("yaml_syntax", edit((3, "title: A: minimal")), ((3, "", "invalid YAML"),)),
    Case(
        "yaml_tab_indent",
        edit((22, "\tbest_baseline: fixed")),
        ((22, "", "invalid YAML"),),
    ),
    Case(
        "duplicate_key_top",
        insert_after(4, "seed: 8"),
        ((5, "seed", "duplicate key 'seed' (first defined on line 4)"),),
    ),
    Case(
        "duplicate_key_nested",
        insert_after(21, "    margin: 0.03"),
        ((22, "decision_rules.wins.margin", "duplicate key 'margin' (first defined on line 21)"),),
    ),
    Case("empty_file", raw(b""), ((1, "", "the file is empty"),)),
    Case("whitespace_only", raw(b"  \n\n   \n"), ((1, "", "the file is empty"),)),
    Case("comments_only", raw(b"# nothing here\n"), ((1, "", "expected a mapping"),)),
    Case("binary_garbage", raw(bytes(range(256)) * 4), ((1, "", "binary data"),)),
    Case(
        "non_utf8",
        raw(BASE.replace("title: A minimal protocol", "title: caf\xe9").encode("latin-1")),
        ((3, "", "not valid UTF-8"),),
    ),
    Case(
        "control_characters",
        edit((7, "    statement: The candidate \x01\x02 beats the baseline.")),
        ((7, "", "control character 0x01"),),
    ),
    Case("yaml_list", raw(b"- docket: 1\n- id: mini\n"), ((1, "", "found a list"),)),
    Case("yaml_scalar", raw(b"just some words\n"), ((1, "", "found a string"),)),
    Case(
        "python_tag",
        edit((3, "title: !!python/object/apply:os.system [echo hacked]")),
        ((3, "title", "unsupported YAML tag"),),
    ),
    Case(
        "recursive_alias",
        raw(BASE.encode() + b"x: &loop [1, *loop]\n"),
        ((49, "x[1]", "recursive alias"),),
    ),
    Case(
        "alias_bomb",
        raw(BASE.encode() + LAUGHS.encode() + b"\n"),
        ((53, "a4", "expands to more than"),),
    ),
    # --- schema -----------------------------------------------------------------------------
    Case("missing_title", edit((3, None)), ((1, "title", "required field 'title' is missing"),)),
    Case(
        "missing_nested_margin",
        edit((21, None)),
        ((18, "decision_rules.wins.margin", "required field 'margin' is missing"),),
    ),
    Case(
        "missing_job_kind",
        edit((46, None)),
        ((45, "jobs[1].kind", "required field 'kind' is missing"),),
    ),
    Case(
        "wrong_type_top",
        edit((4, "seed: seven")),
        ((4, "seed", "valid integer"),),
    ),
    Case(
        "wrong_type_nested",
        edit((23, "    ci: {level: 0.95, resamples: many, seed: 3}")),
        ((23, "decision_rules.wins.ci.resamples", "valid integer"),),
    ),
    Case(
        "out_of_range",
        edit((23, "    ci: {level: 1.5, resamples: 1000, seed: 3}")),
        ((23, "decision_rules.wins.ci.level", "less than 1"),),
    ),
    Case(
        "wrong_type_list_for_mapping",
        edit((13, "  cand: [positive]")),
        ((13, "signals.cand", "valid dictionary"),),
    ),
    Case(
        "wrong_literal",
        edit((37, "    direction: lower")),
        ((37, "metrics.loss_gap.direction", "'higher_is_better' or 'lower_is_better'"),),
    ),
    Case(
        "nan_bound",
        edit((33, "    bound: .nan")),
        ((33, "decision_rules.high_mean.bound", "finite number"),),
    ),
    Case(
        "inf_in_params",
        edit((44, "    params: {model: tiny, lr: .inf}")),
        ((44, "jobs[0].params.lr", "finite number"),),
    ),
    Case(
        "typo_top_level",
        edit((4, "sed: 7")),
        ((4, "sed", "unknown key 'sed' (did you mean 'seed'?)"),),
    ),
    Case(
        "typo_in_rule",
        edit((22, "    best_basline: fixed")),
        ((22, "decision_rules.wins.best_basline", "did you mean 'best_baseline'?"),),
    ),
    Case(
        "typo_in_ci_flow_mapping",
        edit((23, "    ci: {levl: 0.95, resamples: 1000, seed: 3}")),
        ((23, "decision_rules.wins.ci.levl", "did you mean 'level'?"),),
    ),
    Case(
        "typo_in_verdict",
        edit((26, "      PARTIAL: {min_win: 1}")),
        ((26, "decision_rules.wins.verdicts.PARTIAL.min_win", "did you mean 'min_wins'?"),),
    ),
    Case(
        "typo_in_job_list_item",
        edit((44, "    parms: {model: tiny}")),
        ((44, "jobs[0].parms", "did you mean 'params'?"),),
    ),
    Case(
        "typo_in_sign_check",
        edit((39, "      - beter: {loss_before: 1.0, loss_after: 1.1}")),
        (
            (39, "metrics.loss_gap.sign_check[0].better", "required field 'better'"),
            (39, "metrics.loss_gap.sign_check[0].beter", "did you mean 'better'?"),
        ),
    ),
    Case(
        "two_typos_two_lines",
        edit((22, "    best_basline: fixed"), (44, "    parms: {model: tiny}")),
        (
            (22, "decision_rules.wins.best_basline", "unknown key"),
            (44, "jobs[0].parms", "unknown key"),
        ),
    ),
    Case(
        "typo_required_plus_wrong_type",
        edit((3, "titel: A minimal protocol"), (33, "    bound: high")),
        (
            (1, "title", "required field 'title' is missing"),
            (3, "titel", "did you mean 'title'?"),
            (33, "decision_rules.high_mean.bound", "valid number"),
        ),
    ),
    Case(
        "unknown_rule_kind",
        edit((29, "    kind: treshold")),
        ((29, "decision_rules.high_mean.kind", "did you mean 'threshold'?"),),
    ),
    Case(
        "missing_rule_kind",
        edit((29, None)),
        ((28, "decision_rules.high_mean", "required field 'kind' is missing"),),
    ),
    # --- cross references ---------------------------------------------------------------------
    Case(
        "unknown_signal_in_rule",
        edit((20, "    candidates: [cand, cnad]")),
        ((20, "decision_rules.wins.candidates[1]", "unknown signal"),),
    ),
    Case(
        "two_unknown_signals",
        edit((20, "    candidates: [cnad]"), (31, "    signal: cndd")),
        (
            (20, "decision_rules.wins.candidates[0]", "found 'cnad' (did you mean 'cand'?)"),
            (31, "decision_rules.high_mean.signal", "found 'cndd'"),
        ),
    ),
    Case(
        "unknown_job_in_after",
        edit((47, "    after: [trian]")),
        ((47, "jobs[1].after[0]", "unknown job: expected one of: probe, train; found 'trian'"),),
    ),
    Case(
        "unknown_job_in_rule",
        edit((32, "    job: prob")),
        ((32, "decision_rules.high_mean.job", "unknown job"),),
    ),
    Case(
        "dependency_cycle",
        insert_after(44, "    after: [probe]"),
        ((45, "jobs[0].after", "dependency cycle: train -> probe -> train"),),
    ),
    Case(
        "unknown_group_in_require_any_of",
        edit((25, "      PROVEN: {min_wins: 2, require_any_of: [ood_c]}")),
        ((25, "decision_rules.wins.verdicts.PROVEN.require_any_of[0]", "unknown group"),),
    ),
    Case(
        "unknown_rule_in_hypothesis",
        edit((11, "    rule: high_meen")),
        ((11, "hypotheses[1].rule", "unknown decision rule"),),
    ),
    Case(
        "expr_import",
        edit((36, "    expr: __import__('os')")),
        ((36, "metrics.loss_gap.expr", "only calls to abs, exp, log, max, min, sqrt"),),
    ),
    Case(
        "expr_attribute",
        edit((36, "    expr: loss_after.__class__")),
        ((36, "metrics.loss_gap.expr", "not allowed in a metric expression"),),
    ),
    Case(
        "expr_syntax",
        edit((36, "    expr: loss_after -* (")),
        ((36, "metrics.loss_gap.expr", "not a valid expression"),),
    ),
    Case(
        "expr_names_missing_in_sign_check",
        edit((36, "    expr: loss_after - loss_before + extra")),
        (
            (39, "metrics.loss_gap.sign_check[0].better", "missing values for extra"),
            (40, "metrics.loss_gap.sign_check[0].worse", "missing values for extra"),
        ),
    ),
]


def _content(case: Case) -> bytes:
    return case.content()


def expected_lines(path: Path, case: Case) -> list[tuple[str, str]]:
    out = []
    for line, field, fragment in case.errors:
        prefix = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
        out.append((prefix, fragment))
    return out


def check_output(output: str, path: Path, case: Case) -> None:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    expected = expected_lines(path, case)
    assert len(lines) == len(expected), f"{case.name}: expected {len(expected)} lines:\n{output}"
    for got, (prefix, fragment) in zip(lines, expected, strict=True):
        assert got.startswith(prefix), f"{case.name}: {got!r} does not start with {prefix!r}"
        assert fragment in got, f"{case.name}: {fragment!r} not in {got!r}"


def test_base_protocol_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    result = CliRunner().invoke(cli, ["protocol", "validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "valid protocol mini" in result.output


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_reports_every_error_on_its_line(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.yaml"
    path.write_bytes(_content(case))
    result = CliRunner().invoke(cli, ["protocol", "validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stdout == "", "errors go to stderr"
    check_output(result.stderr, path, case)


def test_validate_json_flag_does_not_change_the_error_contract(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "two_typos_two_lines")
    path = tmp_path / "broken.yaml"
    path.write_bytes(_content(case))
    result = CliRunner().invoke(
        cli, ["protocol", "validate", "--json", str(path)], catch_exceptions=False
    )
    assert result.exit_code == 2
    check_output(result.stderr, path, case)


def row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {
                name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
                for name in names
            }
    finally:
        engine.dispose()


def test_register_refuses_every_broken_protocol_and_writes_nothing(docket, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert docket("protocol", "register", str(good)).exit_code == 0
    before = row_counts(docket.url)
    assert before["protocols"] == 1 and "alembic_version" in before
    for case in CASES:
        path = tmp_path / f"{case.name}.yaml"
        path.write_bytes(_content(case))
        result = docket("protocol", "register", str(path))
        assert result.exit_code == 2, f"{case.name}: {result.output}"
        check_output(result.stderr, path, case)
    assert row_counts(docket.url) == before
