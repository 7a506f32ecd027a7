"""Replicates and run selection in the frozen protocol (``replicates:``, ``select:``).

- The shipped protocols keep their sha256 (the new JobSpec fields are left out of the canonical
  JSON when unset), and the fields change the hash when set.
- The seed-flip scenario: a second ingest of the same job with other data does not change the
  verdict under the default ``select: first``, and the verdict says that a rerun exists.
- ``select: all`` pools every declared replicate per item (the mean), and is INCONCLUSIVE naming
  a missing seed; ``select: median_of`` uses the replicate with the median headline statistic.
- ``docket run`` runs a job once per declared seed; ingest checks ``--seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docketml.protocols.loader import load_protocol_file, load_protocol_text

REPO = Path(__file__).resolve().parents[1]

# The sha256 of every shipped protocol, as frozen before replicates/select existed: a schema
# change that alters any of them breaks every ledger that holds them.
SHIPPED_SHA256 = {
    "examples/own-model/protocol.yaml": (
        "172c696b505e070e400448f732cc7548f404dccd8c4c22d7940274e7047075e6"
    ),
    "protocols/library/examples/inverted_forgetting.yaml": (
        "e406827589a4f2aec66cc60d818a2cf1a8773f08ff295fe0abebba519e17b462"
    ),
    "protocols/library/poe_self_speculative.yaml": (
        "7524617e0d03bc76e4d32b5572ed0da811b74a14369269c52d6c4549f72e2aaf"
    ),
    "protocols/library/router_entropy_metacog.yaml": (
        "6d496884a03563663a0eac7461b2f01836cf81c42f5578397d4cfcf4a17c50ba"
    ),
}

PID = "rep-study"


def study_yaml(job: str, bound: float = 0.5) -> str:
    """A one-rule study: mean of ``s`` on job ``probe`` >= ``bound``; ``job`` is its flow map."""
    return "\n".join(
        [
            "docket: 1",
            f"id: {PID}",
            "title: replicate selection",
            "hypotheses:",
            "  - {id: H1, statement: s is high on the probe, rule: r1}",
            "signals:",
            "  s: {higher_means: positive}",
            "labels: {source: judged, positive: failure}",
            "groups: [g1]",
            "decision_rules:",
            f"  r1: {{kind: threshold, statistic: mean, signal: s, job: probe, bound: {bound}}}",
            "jobs:",
            f"  - {job}",
            "",
        ]
    )


def freeze(docket, tmp_path: Path, job: str, bound: float = 0.5) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(study_yaml(job, bound))
    r = docket("protocol", "register", str(path))
    assert r.exit_code == 0, r.output
    r = docket("protocol", "freeze", PID)
    assert r.exit_code == 0, r.output


def rows(values: list[float]) -> list[dict]:
    return [
        {"group": "g1", "item": f"i{k:02d}", "label": k % 2, "signals": {"s": v}}
        for k, v in enumerate(values)
    ]


def ingest(docket, tmp_path: Path, data: list[dict], *extra: str) -> dict:
    path = tmp_path / f"data-{len(list(tmp_path.glob('data-*')))}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    r = docket("ingest", PID, str(path), "--job", "probe", *extra, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def verdict(docket) -> dict:
    r = docket("verdict", PID, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


# --- the canonical form -------------------------------------------------------------------------


@pytest.mark.parametrize("rel", sorted(SHIPPED_SHA256))
def test_shipped_protocols_keep_their_sha256(rel: str) -> None:
    loaded = load_protocol_file(REPO / rel)
    assert loaded.sha256 == SHIPPED_SHA256[rel]
    assert '"replicates"' not in loaded.canonical and '"select"' not in loaded.canonical


def test_replicates_and_select_are_hashed_when_set() -> None:
    plain = load_protocol_text(study_yaml("{name: probe, kind: synthetic}"), "a.yaml")
    reps = load_protocol_text(
        study_yaml("{name: probe, kind: synthetic, replicates: {seeds: [0, 1, 2]}}"), "b.yaml"
    )
    pooled = load_protocol_text(
        study_yaml("{name: probe, kind: synthetic, replicates: {seeds: [0, 1, 2]}, select: all}"),
        "c.yaml",
    )
    first = load_protocol_text(study_yaml("{name: probe, kind: synthetic, select: first}"), "d")
    assert len({plain.sha256, reps.sha256, pooled.sha256, first.sha256}) == 4
    assert '"replicates":{"seeds":[0,1,2]}' in reps.canonical
    assert '"select":"all"' in pooled.canonical


@pytest.mark.parametrize(
    ("job", "needle"),
    [
        ("{name: probe, kind: synthetic, select: all}", "select: all needs replicates"),
        (
            "{name: probe, kind: synthetic, replicates: {seeds: [0, 1, 0]}}",
            "duplicate seed(s) [0]",
        ),
        (
            "{name: probe, kind: synthetic, seed: 3, replicates: {seeds: [0, 1]}}",
            "either seed or replicates",
        ),
        ("{name: probe, kind: synthetic, select: latest}", "select"),
    ],
)
def test_bad_replicate_declarations_exit_2_naming_the_line(
    docket_sqlite, tmp_path: Path, job: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(study_yaml(job))
    r = docket_sqlite("protocol", "register", str(path))
    assert r.exit_code == 2, r.output
    assert needle in r.output and "bad.yaml:13: jobs[0]" in r.output
    assert "Traceback" not in r.output


# --- selection ----------------------------------------------------------------------------------


def test_seed_flip_second_ingest_does_not_change_the_verdict_under_first(
    docket, tmp_path: Path
) -> None:
    freeze(docket, tmp_path, "{name: probe, kind: synthetic}")
    good = ingest(docket, tmp_path, rows([2.0 + 0.01 * k for k in range(40)]))
    before = verdict(docket)
    assert before["verdict"] == "PROVEN" and before["reruns"] == []
    bad = ingest(docket, tmp_path, rows([-1.0 + 0.01 * k for k in range(40)]))
    assert any(f"keeps using #{good['run_id']}" in n for n in bad["notes"])
    after = verdict(docket)
    assert after["verdict"] == "PROVEN"
    assert after["inputs_sha256"] == before["inputs_sha256"]
    assert after["recorded"] == "look"
    used = good["run_id"]
    note = f"2 runs of probe exist (1 declared); the verdict used #{used} under select: first"
    assert after["reruns"] == [note]
    (sel,) = after["selection"]
    assert sel["runs"] == [good["run_id"], bad["run_id"]] and sel["used"] == [good["run_id"]]
    text = docket("verdict", PID)
    assert text.exit_code == 0 and note in " ".join(text.output.split())
    r = docket("report", PID, "--out", str(tmp_path / "report"))
    assert r.exit_code == 0, r.output
    assert note in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")


def test_select_all_pools_every_replicate_and_names_a_missing_seed(docket, tmp_path: Path) -> None:
    freeze(
        docket,
        tmp_path,
        "{name: probe, kind: synthetic, replicates: {seeds: [0, 1, 2]}, select: all}",
    )
    r = docket("ingest", PID, str(tmp_path / "x.jsonl"), "--job", "probe")
    assert r.exit_code == 2 and "give --seed" in r.output and "[0, 1, 2]" in r.output
    values = {s: [s + 0.1 * k for k in range(10)] for s in (0, 1, 2)}
    ids = [ingest(docket, tmp_path, rows(values[s]), "--seed", str(s))["run_id"] for s in (0, 1)]
    partial = verdict(docket)
    assert partial["verdict"] == "INCONCLUSIVE"
    assert "no succeeded run of seed(s) 2" in json.dumps(partial["hypotheses"])
    assert partial["selection"][0]["missing_seeds"] == [2]
    ids.append(ingest(docket, tmp_path, rows(values[2]), "--seed", "2")["run_id"])
    full = verdict(docket)
    (h,) = full["hypotheses"]
    # pooled per item: the mean over the 3 replicates is 1 + 0.1 k; the rule's mean over items
    expected = sum(sum(values[s][k] for s in (0, 1, 2)) / 3 for k in range(10)) / 10
    assert h["value"] == pytest.approx(expected, abs=1e-12)
    assert full["selection"][0]["used"] == ids and full["verdict"] != "INCONCLUSIVE"
    assert full["inputs"]["parts"]["job:probe"] == [ids]
    # a rerun of seed 0 with other data changes nothing: only each seed's first run counts
    ingest(docket, tmp_path, rows([9.0] * 10), "--seed", "0")
    again = verdict(docket)
    assert again["hypotheses"][0]["value"] == h["value"] and again["recorded"] == "look"
    assert "4 runs of probe exist (3 declared)" in again["reruns"][0]
    # the recorded inputs hash re-derives from the stored parts (what the audit checks)
    r = docket("audit", "--json")
    assert r.exit_code == 0, r.output


def test_select_median_of_uses_the_replicate_with_the_median_statistic(
    docket_sqlite, tmp_path: Path
) -> None:
    freeze(
        docket_sqlite,
        tmp_path,
        "{name: probe, kind: synthetic, replicates: {seeds: [0, 1, 2]}, select: median_of}",
    )
    ids = {
        s: ingest(docket_sqlite, tmp_path, rows([m] * 10), "--seed", str(s))["run_id"]
        for s, m in ((0, 5.0), (1, 1.0), (2, 3.0))
    }
    data = verdict(docket_sqlite)
    sel = data["selection"][0]
    assert sel["headline"] == {"0": 5.0, "1": 1.0, "2": 3.0}
    assert sel["used"] == [ids[2]] and data["hypotheses"][0]["value"] == 3.0


def test_docket_run_runs_each_declared_seed_once(docket_sqlite, tmp_path: Path) -> None:
    freeze(
        docket_sqlite,
        tmp_path,
        "{name: probe, kind: synthetic, params: {n_per_class: 10}, "
        "replicates: {seeds: [4, 5, 6]}, select: all}",
    )
    r = docket_sqlite("run", PID, "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [(o["seed"], o["status"]) for o in out] == [(s, "succeeded") for s in (4, 5, 6)]
    again = json.loads(docket_sqlite("run", PID, "--no-progress", "--json").output)
    assert [(o["seed"], o["status"]) for o in again] == [(s, "up_to_date") for s in (4, 5, 6)]
    listed = json.loads(docket_sqlite("runs", "list", "--json").output)
    assert sorted(r["seed"] for r in listed) == [4, 5, 6]
    data = verdict(docket_sqlite)
    assert data["selection"][0]["used"] == [o["run_id"] for o in out]
    assert data["reruns"] == []


def test_start_run_records_the_replicate_seed_it_is_given(docket_sqlite, tmp_path: Path) -> None:
    import docketml
    from docketml.ledger.errors import UserError

    freeze(
        docket_sqlite,
        tmp_path,
        "{name: probe, kind: python, entry: 'x.y:z', replicates: {seeds: [3, 7]}, select: all}",
    )
    for seed, value in ((7, 2.0), (3, 4.0)):
        with docketml.start_run(PID, "probe", ledger=docket_sqlite.url, seed=seed) as run:
            assert run.seed == seed
            for k in range(10):
                run.observe(group="g1", item=f"i{k}", signal="s", value=value, label=k % 2)
    with pytest.raises(UserError, match="seed 5 is not one of its replicates"):
        with docketml.start_run(PID, "probe", ledger=docket_sqlite.url, seed=5):
            pass
    data = verdict(docket_sqlite)
    assert data["hypotheses"][0]["value"] == 3.0  # the mean of the two replicates
    assert data["selection"][0]["missing_seeds"] == []
