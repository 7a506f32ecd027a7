"""``docket reproduce``: re-run a claim's job, compare, record the attempt, exit 1 outside
tolerance. The jobs are the model-free builtin kinds (``sleep`` reports ``slept_s`` = its knob,
exactly), so the observed numbers are deterministic."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sqlalchemy import select

from docketml.ledger.reproduce import within_tolerance
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ReproductionRow

CLAIMS = """\
docket: 1
id: claims
title: Bound numbers
hypotheses:
  - {id: H1, statement: it slept, rule: r}
decision_rules:
  r: {kind: threshold, statistic: metric, metric: slept_s, job: nap, op: ">=", bound: 0.0}
jobs:
  - {name: nap, kind: sleep, params: {seconds: 0.02}}
  - {name: boom, kind: fail, params: {message: the checkpoint is gone}}
claims:
  nap_ok: {job: nap, metric: slept_s, expected: 0.02, tolerance: 0.0, description: exact}
  nap_off: {job: nap, metric: slept_s, expected: 0.5, tolerance: 0.1}
  no_metric: {job: nap, metric: auroc, expected: 0.85, tolerance: 0.05}
  boom_claim: {job: boom, metric: slept_s, expected: 1.0, tolerance: 0.5}
"""

BROKE = """\
docket: 1
id: broke
title: No money left
hypotheses:
  - {id: H1, statement: it slept, rule: r}
decision_rules:
  r: {kind: threshold, statistic: metric, metric: slept_s, job: gpu_nap, op: ">=", bound: 0.0}
jobs:
  - {name: gpu_nap, kind: sleep, hardware: h100, estimate_seconds: 60, params: {seconds: 0.01}}
budget: {usd: 0}
claims:
  nap_ok: {job: gpu_nap, metric: slept_s, expected: 0.01, tolerance: 0.0}
"""


def register_and_freeze(docket, tmp_path: Path, text: str, name: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    for args in (
        ("protocol", "register", name),
        ("protocol", "freeze", name.removesuffix(".yaml")),
    ):
        result = docket(*args)
        assert result.exit_code == 0, result.output


def attempts(url: str) -> list[tuple[str, bool, float | None]]:
    led = open_ledger(url)
    try:
        with led.session() as session:
            rows = session.scalars(select(ReproductionRow).order_by(ReproductionRow.id))
            return [(r.claim, r.passed, r.observed) for r in rows]
    finally:
        led.engine.dispose()


def test_reproduce_within_and_outside_tolerance(docket, tmp_path: Path) -> None:
    register_and_freeze(docket, tmp_path, CLAIMS, "claims.yaml")
    ok = docket("reproduce", "nap_ok", "--json")
    assert ok.exit_code == 0, ok.output
    (data,) = json.loads(ok.stdout)
    assert (data["ref"], data["observed"], data["expected"], data["passed"]) == (
        "claims:nap_ok",
        0.02,
        0.02,
        True,
    )
    assert data["run_id"] is not None
    off = docket("reproduce", "claims:nap_off")
    assert off.exit_code == 1, off.output
    for shown in ("0.5", "0.02", "0.1", "NOT REPRODUCED", "claims:nap_off"):
        assert shown in off.output
    assert "1 of 1 claim(s) not reproduced" in off.output
    assert attempts(docket.url) == [("nap_ok", True, 0.02), ("nap_off", False, 0.02)]
    runs = json.loads(docket("runs", "list", "--json").stdout)
    assert [(r["job"], r["status"]) for r in runs] == [("nap", "succeeded")] * 2  # re-run each time


def test_reproduce_all_records_every_attempt(docket_sqlite, tmp_path: Path) -> None:
    docket = docket_sqlite
    register_and_freeze(docket, tmp_path, CLAIMS, "claims.yaml")
    result = docket("reproduce", "--all", "--json")
    assert result.exit_code == 1
    by_claim = {d["claim"]: d for d in json.loads(result.stdout)}
    assert [c for c in by_claim] == ["nap_ok", "nap_off", "no_metric", "boom_claim"]
    assert by_claim["nap_ok"]["passed"] is True
    assert by_claim["nap_off"]["passed"] is False and by_claim["nap_off"]["observed"] == 0.02
    assert "recorded no metric 'auroc'" in by_claim["no_metric"]["detail"]
    assert "slept_s" in by_claim["no_metric"]["detail"]
    boom = by_claim["boom_claim"]
    assert boom["observed"] is None and boom["run_id"] is not None
    assert "failed" in boom["detail"] and "the checkpoint is gone" in boom["detail"]
    assert [(c, p) for c, p, _ in attempts(docket.url)] == [
        ("nap_ok", True),
        ("nap_off", False),
        ("no_metric", False),
        ("boom_claim", False),
    ]
    assert docket("audit").exit_code == 0


def test_claim_lookup_and_budget_refusal(docket_sqlite, tmp_path: Path) -> None:
    docket = docket_sqlite
    register_and_freeze(docket, tmp_path, CLAIMS, "claims.yaml")
    register_and_freeze(docket, tmp_path, BROKE, "broke.yaml")
    ambiguous = docket("reproduce", "nap_ok")
    assert ambiguous.exit_code == 2 and "broke:nap_ok, claims:nap_ok" in ambiguous.output
    unknown = docket("reproduce", "nope")
    assert unknown.exit_code == 2 and "known claims: broke:nap_ok, claims:nap_ok" in unknown.output
    assert docket("reproduce", "nap_ok", "--all").exit_code == 2
    assert docket("reproduce").exit_code == 2
    assert docket("reproduce", "nap_ok", "--protocol", "claims").exit_code == 0
    refused = docket("reproduce", "broke:nap_ok", "--json")
    assert refused.exit_code == 1
    (data,) = json.loads(refused.stdout)
    assert data["observed"] is None and data["run_id"] is None
    assert "refused" in data["detail"] and "budget exceeded" in data["detail"]
    forced = docket(
        "reproduce", "broke:nap_ok", "--allow-over-budget", "--reason", "one more check"
    )
    assert forced.exit_code == 0, forced.output
    journal = json.loads(docket("journal", "list", "--protocol", "broke", "--json").stdout)
    assert len(journal) == 1 and "one more check" in json.dumps(journal[0]["entry"])
    assert attempts(docket.url) == [
        ("nap_ok", True, 0.02),
        ("nap_ok", False, None),
        ("nap_ok", True, 0.01),
    ]


def test_within_tolerance_is_exact_on_written_numbers() -> None:
    assert within_tolerance(0.90, 0.85, 0.05)  # 0.90 - 0.85 is 0.05000000000000004 in floats
    assert within_tolerance(0.80, 0.85, 0.05)
    assert not within_tolerance(0.9000001, 0.85, 0.05)
    assert within_tolerance(0.02, 0.02, 0.0)
    assert not within_tolerance(math.nan, 0.85, 0.05)
    assert not within_tolerance(math.inf, 0.85, math.inf)
