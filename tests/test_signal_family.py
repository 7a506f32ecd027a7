"""``router_entropy_per_layer``: the documented family name of the per-layer router entropies
``router_entropy_L{l}``. Declared once under ``signals:``, it gives every member its polarity
(rules orient members by it, the registry checks it); rules and observations name members."""

from __future__ import annotations

import pytest

from docketml.ledger.cli.protocol import signal_registry
from docketml.ledger.verdict.rules import _orient
from docketml.ledger.verdict.signcheck import check_polarity
from docketml.protocols.errors import ProtocolErrors
from docketml.protocols.loader import load_protocol_text
from docketml.protocols.schema import SIGNAL_FAMILIES, signal_family

BASE = """\
docket: 1
id: per-layer
title: Per-layer router entropy
hypotheses:
  - {{id: H1, statement: a deep layer's router entropy flags OOD prompts, rule: r}}
signals:
{signals}
labels: {{source: regime, positive: ood, negative: in_domain, reference: in_domain}}
groups: [in_domain, ood]
decision_rules:
  r:
    kind: regime_wins
    metric: auroc
    job: probe
    candidates: {candidates}
    baselines: [max_softmax_mean]
    margin: 0.02
    ci: {{method: paired_bootstrap, level: 0.95, resamples: 200, seed: 1}}
    verdicts: {{PROVEN: {{min_wins: 1}}, DISPROVEN: {{max_wins: 0}}}}
jobs:
  - {{name: probe, kind: probe}}
"""
FAMILY = "  router_entropy_per_layer: {higher_means: positive}\n"
BASELINE = "  max_softmax_mean: {higher_means: negative, role: baseline}\n"


def _load(signals: str, candidates: str):  # type: ignore[no-untyped-def]
    return load_protocol_text(BASE.format(signals=signals, candidates=candidates)).protocol


def test_family_pattern_matches_layer_indices_only() -> None:
    assert set(SIGNAL_FAMILIES) == {"router_entropy_per_layer"}
    for name in ("router_entropy_L0", "router_entropy_L7", "router_entropy_L31"):
        assert signal_family(name) == "router_entropy_per_layer"
    for name in (
        "router_entropy_L",
        "router_entropy_L01",
        "router_entropy_mean",
        "xrouter_entropy_L1",
    ):
        assert signal_family(name) is None


def test_declaring_the_family_admits_its_members_and_orients_them() -> None:
    protocol = _load(FAMILY + BASELINE, "[router_entropy_L0, router_entropy_L3]")
    assert protocol.signal_spec("router_entropy_L3") == protocol.signals["router_entropy_per_layer"]
    assert protocol.declares_signal("router_entropy_L3")
    assert not protocol.declares_signal("router_entropy_per_layer")  # never an observation
    assert _orient(protocol, "router_entropy_L3") == 1.0
    assert _orient(protocol, "max_softmax_mean") == -1.0
    # a member declared by its own name keeps its own spec
    own = "  router_entropy_L3: {higher_means: negative, polarity_override_reason: test}\n"
    protocol = _load(FAMILY + own + BASELINE, "[router_entropy_L0, router_entropy_L3]")
    assert _orient(protocol, "router_entropy_L3") == -1.0
    assert _orient(protocol, "router_entropy_L0") == 1.0


def test_members_without_the_family_and_the_family_as_a_candidate_are_refused() -> None:
    with pytest.raises(ProtocolErrors, match="unknown signal"):
        _load(BASELINE, "[router_entropy_L0]")
    with pytest.raises(ProtocolErrors, match="router_entropy_per_layer is a signal family"):
        _load(FAMILY + BASELINE, "[router_entropy_per_layer]")


def test_polarity_registry_covers_the_family_and_its_members() -> None:
    registry = signal_registry()
    assert registry["router_entropy_per_layer"] == "positive"
    protocol = _load(FAMILY + BASELINE, "[router_entropy_L0]")
    checks = {c["target"]: c for c in check_polarity(protocol, registry)}
    assert checks["router_entropy_per_layer"]["passed"]
    assert checks["router_entropy_per_layer"]["expected"] == "higher_means positive (registry)"
    # a member declared with the wrong polarity is checked against the family's entry
    wrong = "  router_entropy_L2: {higher_means: negative}\n"
    protocol = _load(FAMILY + wrong + BASELINE, "[router_entropy_L2]")
    checks = {c["target"]: c for c in check_polarity(protocol, registry)}
    assert not checks["router_entropy_L2"]["passed"]
    assert "flip every AUROC" in checks["router_entropy_L2"]["cause"]


def test_ingest_accepts_family_members_and_refuses_the_family_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from docketml.ledger.ingest import parse_results

    protocol = _load(FAMILY + BASELINE, "[router_entropy_L1]")
    rows = [
        {
            "group": g,
            "item": f"{g}-{i}",
            "label": "",
            "signals": {"router_entropy_L0": 0.1 * i, "router_entropy_L1": 0.2 * i,
                        "max_softmax_mean": 0.5},
        }
        for g in ("in_domain", "ood")
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = parse_results(protocol, path, "probe")
    parsed.close()
    assert parsed.problems == []
    rows[0]["signals"]["router_entropy_per_layer"] = 1.0
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = parse_results(protocol, path, "probe")
    parsed.close()
    assert [(line, msg.split(";")[0]) for line, msg in parsed.problems] == [
        (1, "unknown signal 'router_entropy_per_layer'")
    ]
