"""The mandatory sign-check: shipped protocols pass; inverted math is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from docketml.ledger.cli.protocol import signal_registry
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import SignCheckRow
from docketml.ledger.verdict.signcheck import sign_check
from docketml.protocols.loader import load_protocol_file, load_protocol_text

LIBRARY = Path(__file__).resolve().parents[1] / "protocols" / "library"
SHIPPED = sorted(LIBRARY.glob("*.yaml"))
ROUTER = LIBRARY / "router_entropy_metacog.yaml"
INVERTED = LIBRARY / "examples" / "inverted_forgetting.yaml"


def failures(report: dict) -> list[dict]:
    return [c for c in report["checks"] if not c["passed"]]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_protocols_pass(path: Path) -> None:
    report = sign_check(load_protocol_file(path).protocol, registry=signal_registry())
    assert report["passed"], failures(report)
    kinds = {c["check"] for c in report["checks"]}
    assert {"rule: true effect", "rule: null", "rule: inverted"} <= kinds
    assert any("capped at 2000" in n for n in report["notes"])


def test_inverted_forgetting_is_refused_by_freeze(docket, tmp_path: Path) -> None:
    assert docket("protocol", "register", str(INVERTED)).exit_code == 0
    r = docket("protocol", "freeze", "inverted-forgetting")
    assert r.exit_code == 1
    out = " ".join(r.output.split())
    assert "FAIL" in out and "forgetting" in out
    assert "better = -0.01, worse = -0.4" in out and "lower_is_better" in out
    assert "refused to freeze inverted-forgetting" in out
    shown = json.loads(docket("protocol", "show", "inverted-forgetting", "--json").output)
    assert shown["status"] == "registered" and shown["sign_check"]["passed"] is False


def test_inverted_forgetting_report_states_expected_found_cause() -> None:
    report = sign_check(load_protocol_file(INVERTED).protocol, registry={})
    [bad] = failures(report)
    assert bad["check"] == "metric direction"
    assert bad["expected"] == "lower_is_better: better < worse"
    assert bad["found"] == "better = -0.01, worse = -0.4"
    assert "rewards the opposite of what was meant" in bad["cause"]


def _router(text_edit: tuple[str, str]) -> str:
    text = ROUTER.read_text()
    old, new = text_edit
    assert old in text
    return text.replace(old, new)


CONF = "router_conf: {higher_means: negative, description: 1 - router_entropy_mean / log 3}"


def test_polarity_contradiction_refused_then_overridden_with_stored_reason(
    docket_sqlite, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(_router((CONF, "router_conf: {higher_means: positive}")))
    assert docket_sqlite("protocol", "register", str(wrong)).exit_code == 0
    r = docket_sqlite("protocol", "freeze", "router-entropy-metacog", "--json")
    assert r.exit_code == 1
    report = json.loads(r.output[: r.output.rindex("}") + 1])["sign_check"]
    [bad] = failures(report)
    assert (bad["check"], bad["target"]) == ("signal polarity", "router_conf")
    assert bad["expected"] == "higher_means negative (registry)"
    assert bad["found"] == "higher_means positive"
    assert "polarity_override_reason" in bad["cause"]

    reason = "our router_conf is logged as an uncertainty, not a confidence"
    fixed = tmp_path / "override.yaml"
    fixed.write_text(
        _router(
            (CONF, f"router_conf: {{higher_means: positive, polarity_override_reason: '{reason}'}}")
        )
    )
    r = docket_sqlite("protocol", "amend", "router-entropy-metacog", str(fixed), "--reason", "x")
    assert r.exit_code == 0, r.output
    r = docket_sqlite("protocol", "freeze", "router-entropy-metacog")
    assert r.exit_code == 0, r.output
    led = open_ledger(docket_sqlite.url)
    try:
        with led.session() as s:
            rows = list(s.scalars(select(SignCheckRow).order_by(SignCheckRow.id)))
    finally:
        led.engine.dispose()
    assert [row.passed for row in rows] == [False, True]
    stored = json.loads(rows[-1].report_json)
    check = next(c for c in stored["checks"] if c["target"] == "router_conf")
    assert check["passed"] and reason in check["cause"]


INVERTED_VERDICTS = """
    verdicts:
      PROVEN: {max_wins: 0}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {min_wins: 4}
"""
RIGHT_VERDICTS = """
    verdicts:
      PROVEN: {min_wins: 4, require_any_of: [gibberish, factual_misleading, neo_false_inability]}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
"""


def test_inverted_verdict_thresholds_are_refused(docket_sqlite, tmp_path: Path) -> None:
    text = _router((RIGHT_VERDICTS, INVERTED_VERDICTS))
    report = sign_check(load_protocol_text(text).protocol, registry=signal_registry())
    bad = {c["check"]: c for c in failures(report)}
    assert set(bad) == {"rule: true effect", "rule: null", "rule: inverted"}
    assert bad["rule: true effect"]["expected"] == "PROVEN"
    assert bad["rule: true effect"]["found"].startswith("PARTIAL (")
    assert "look inverted" in bad["rule: true effect"]["cause"]
    assert bad["rule: null"]["found"].startswith("PROVEN")
    path = tmp_path / "inverted_thresholds.yaml"
    path.write_text(text)
    assert docket_sqlite("protocol", "register", str(path)).exit_code == 0
    r = docket_sqlite("protocol", "freeze", "router-entropy-metacog")
    assert r.exit_code == 1 and "look inverted" in " ".join(r.output.split())


@pytest.mark.parametrize(
    ("edit", "check", "phrase"),
    [
        (
            ("    margin: 0.02\n    best_baseline", "    margin: 0.6\n    best_baseline"),
            "rule: true effect",
            "margin 0.6 exceeds 0.5",
        ),
        (("    bound: 0.75", "    bound: 0.3"), "rule: null", "a signal at chance"),
        (
            ("    margin: 0.05\n", "    margin: 0.05\n    higher_is_better: false\n"),
            "rule: true effect",
            "higher_is_better is false",
        ),
        (
            (
                "      - better: {bpb_before: 2.10, bpb_after: 2.12}\n"
                "        worse: {bpb_before: 2.10, bpb_after: 3.40}\n",
                "",
            ),
            "metric direction",
            "every derived metric must be exercised",
        ),
    ],
)
def test_rule_math_that_contradicts_intent_is_refused(edit, check, phrase) -> None:
    text = _router(edit)
    if "bpb_after: 3.40" in edit[0]:
        text = text.replace("    sign_check:\n", "    sign_check: []\n")
    report = sign_check(load_protocol_text(text).protocol, registry=signal_registry())
    assert not report["passed"]
    bad = [c for c in failures(report) if c["check"] == check]
    assert bad and phrase in bad[0]["cause"], failures(report)


def test_signcheck_command_prints_a_table_and_exits_1_on_failure(docket_sqlite) -> None:
    assert docket_sqlite("protocol", "register", str(INVERTED)).exit_code == 0
    r = docket_sqlite("protocol", "signcheck", "inverted-forgetting")
    assert r.exit_code == 1
    for word in ("expected", "found", "likely cause", "sign-check FAILED"):
        assert word in r.output
