"""One definition per rule: which metric row counts, read identically by the verdict, by
``docket reproduce`` and by the store's own reader (the case the layout issue measured: a run
that logs ``acc`` = 0.70 at step 100 and ``acc`` = 0.90 with no step)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from docketml.ledger.reproduce import read_metric
from docketml.ledger.store import protocols
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.results import effective_metrics, load_payload, run_metrics
from docketml.ledger.store.runs import complete_run, create_run, start_run
from docketml.ledger.verdicts import compute_verdict

PROTOCOL = """\
docket: 1
id: metric-rows
title: Which metric row counts
hypotheses:
  - {id: H1, statement: accurate, rule: r}
decision_rules:
  r: {kind: threshold, statistic: metric, metric: acc, job: train, op: ">=", bound: 0.8}
jobs:
  - {name: train, kind: sleep, params: {seconds: 0.0}}
"""


def _row(name: str, step: int | None, row_id: int, value: float) -> SimpleNamespace:
    return SimpleNamespace(name=name, step=step, id=row_id, value=value)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a row without a step is the final value, whatever order it was written in
        ([_row("acc", 100, 1, 0.70), _row("acc", None, 2, 0.90)], 0.90),
        ([_row("acc", None, 1, 0.90), _row("acc", 100, 2, 0.70)], 0.90),
        # otherwise the highest step counts
        ([_row("acc", 300, 1, 0.85), _row("acc", 100, 2, 0.70)], 0.85),
        # the same step twice: the later row
        ([_row("acc", 100, 1, 0.70), _row("acc", 100, 2, 0.75)], 0.75),
        ([_row("acc", None, 1, 0.60), _row("acc", None, 2, 0.65)], 0.65),
    ],
)
def test_effective_metric_row(rows: list[SimpleNamespace], expected: float) -> None:
    assert effective_metrics(rows)["acc"].value == expected


def _frozen(docket, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "p.yaml").write_text(PROTOCOL, encoding="utf-8")
    for args in (("protocol", "register", "p.yaml"), ("protocol", "freeze", "metric-rows")):
        result = docket(*args)
        assert result.exit_code == 0, result.output


def _succeeded_run(s, **results: Any) -> int:  # noqa: ANN001
    """A succeeded run of the frozen protocol's ``train`` job with ``results`` (complete_run's
    observations / metrics); returns its id."""
    row = protocols.latest_frozen(s, "metric-rows")
    run = create_run(
        s, protocol_pk=row.id, protocol_sha256=row.sha256, job="train", kind="sleep", config={}
    )
    start_run(s, run.id, worker="test")
    complete_run(s, run.id, status="succeeded", **results)
    return run.id


def test_verdict_reproduce_and_store_read_the_same_row(docket, tmp_path: Path) -> None:
    _frozen(docket, tmp_path)
    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            run_id = _succeeded_run(
                s,
                metrics=[
                    {"name": "acc", "value": 0.70, "step": 100},
                    {"name": "acc", "value": 0.90},
                ],
            )
        with led.session() as s:
            verdict = compute_verdict(s, "metric-rows", record=False)
            assert verdict["hypotheses"][0]["value"] == 0.90
            assert read_metric(s, run_id, "acc") == (0.90, None)
            assert run_metrics(s, run_id)["acc"].value == 0.90
            assert load_payload(s, [run_id]).metrics["acc"][0] == 0.90
    finally:
        led.engine.dispose()


def test_load_payload_merges_in_the_given_run_order_and_filters_signals(
    docket, tmp_path: Path
) -> None:
    """The report's reader: runs merge in the order given (a later run overrides an earlier
    one, whatever their ids), and ``signals`` reads only those signals."""
    _frozen(docket, tmp_path)
    led = open_ledger(docket.url)
    try:
        run_ids = []
        with led.session() as s:
            for value in (0.1, 0.2):
                observations = [
                    {"group": "g", "item": "i1", "label": 1, "signal": sig, "value": value + off}
                    for sig, off in (("a", 0.0), ("b", 10.0))
                ]
                if value == 0.1:
                    observations.append(
                        {"group": "g", "item": "i2", "label": 0, "signal": "a", "value": 5.0}
                    )
                run_ids.append(_succeeded_run(s, observations=observations))
        first, second = run_ids
        with led.session() as s:
            forward = load_payload(s, [first, second]).observations
            backward = load_payload(s, [second, first]).observations
            only_a = load_payload(s, [second, first], signals=["a"]).observations
        assert forward[("g", "i1", "a")] == (1, 0.2) and forward[("g", "i1", "b")] == (1, 10.2)
        assert backward[("g", "i1", "a")] == (1, 0.1) and backward[("g", "i1", "b")] == (1, 10.1)
        assert forward[("g", "i2", "a")] == backward[("g", "i2", "a")] == (0, 5.0)
        assert only_a == {k: v for k, v in backward.items() if k[2] == "a"}
        assert len(only_a) == 2
    finally:
        led.engine.dispose()
