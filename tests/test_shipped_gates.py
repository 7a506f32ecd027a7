"""The shipped protocol's deploy gates and claims (issue 13, item 5): the paper's gate table for
its deployed checkpoint v4 (gibberish mean abstain_p 0.60, 0% in-domain false positives at
0.775, 9 / 10 held-out refusals) decided by the shipped rules, and every claim bound to a metric
the probe job really records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from docketml.ledger.verdict.rules import Dataset, SourceData, evaluate
from docketml.protocols.loader import load_protocol_file
from docketml.runners.data import GROUPS
from docketml.runners.jobs.routed import gate_metrics

SHIPPED = (
    Path(__file__).resolve().parents[1] / "protocols" / "library" / "router_entropy_metacog.yaml"
)


def probe_source(gibberish_mean: float, fp: int, refusals: int, per_group: int, name: str):
    """Probe-shaped rows: ``abstain_p`` per group (gibberish spread around ``gibberish_mean``,
    ``fp`` in-domain items at 0.9, the rest at 0.2) and ``refused`` (``refusals`` of the
    ood_topic items)."""
    rows = []
    spread = np.linspace(-0.1, 0.1, per_group)
    for g in GROUPS:
        for i in range(per_group):
            item = f"{g}-{i:02d}"
            if g == "gibberish":
                a = gibberish_mean + float(spread[i])
            elif g == "in_domain":
                a = 0.9 if i < fp else 0.2
            else:
                a = 0.5
            refused = float(g == "ood_topic" and i < refusals)
            rows += [(g, item, None, "abstain_p", a), (g, item, None, "refused", refused)]
    return SourceData.from_rows(rows, name=name)


def gates(gibberish_mean: float, fp: int, refusals: int) -> dict[str, str]:
    protocol = load_protocol_file(SHIPPED).protocol
    ds = Dataset(
        {
            "probe_base": probe_source(gibberish_mean, fp, 0, 30, "probe_base"),
            "idk_gate": probe_source(0.5, 0, refusals, 10, "idk_gate"),
        }
    )
    out = evaluate(protocol, ds)["hypotheses"]
    return {h["id"]: h["verdict"] for h in out if h["id"] in ("D1", "D2", "D3", "H4")}


def test_the_papers_v4_gate_table() -> None:
    # v4: gibberish 0.60 (target > 0.775: fails), FP 0% (passes), 9 / 10 refusals (passes)
    assert gates(0.60, 0, 9) == {
        "D1": "DISPROVEN",
        "D2": "PROVEN",
        "D3": "PROVEN",
        "H4": "DISPROVEN",
    }
    # v7-like: gibberish 0.94 passes; 20% in-domain false positives fail the 0% gate
    assert gates(0.94, 6, 9)["D1"] == "PROVEN" and gates(0.94, 6, 9)["D2"] == "DISPROVEN"
    # a checkpoint passing every gate; one refusal fewer fails the count gate
    assert gates(0.94, 0, 10) == {"D1": "PROVEN", "D2": "PROVEN", "D3": "PROVEN", "H4": "PROVEN"}
    assert gates(0.94, 0, 8)["D3"] == "DISPROVEN"


def test_every_claim_reads_a_metric_its_job_records() -> None:
    protocol = load_protocol_file(SHIPPED).protocol
    assert len(protocol.claims) >= 5
    items = [(g, 0.5, False) for g in GROUPS]
    recorded = {m.name for m in gate_metrics(items, 0.775)}
    recorded |= {"coherence_bpb", "loop_rate", "refusal_rate", "failure_rate"}
    for name, claim in protocol.claims.items():
        job = protocol.job(claim.job)
        assert job.kind == "probe", name
        assert claim.metric in recorded, (name, claim.metric)
    idk = protocol.job("idk_gate")
    assert idk.params["limit_per_group"] == 10 and idk.after == ["base"]
    assert protocol.claims["base_heldout_refusals"].metric == "refused.ood_topic"
