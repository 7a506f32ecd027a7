"""Routed-LM jobs on the tiny config: the study pipeline, freezing, splice, knob audit, probe,
detectors and the data build."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from docketml.runners.context import JobContext, JobResult, KnobAudit
from docketml.runners.data import (
    DATA_DIR,
    GROUPS,
    build_data,
    load_chat,
    load_ood_train,
    load_probe,
)
from docketml.runners.jobs import routed as jobs
from docketml.runners.jobs.routed import JOBS, is_loop, is_refusal
from docketml.runners.models.routed import group_of, load_checkpoint
from docketml.runners.registry import job_kinds

SEED = 1234
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains models


STRUCTURAL_KEYS = job_kinds().structural_keys("probe")  # what the executor ignores


def run_job(
    tmp: Path, job: str, kind: str, params: dict[str, Any], inputs: dict[str, Path]
) -> tuple[JobResult, JobContext]:
    ctx = JobContext(
        job=job,
        kind=kind,
        params=params,
        seed=SEED,
        artifacts_dir=tmp / job,
        inputs=inputs,
        knobs=KnobAudit(params),
    )
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return JOBS[kind](ctx), ctx


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """pretrain -> chat_sft -> abstain_sft (the deployed base) with few steps."""
    tmp = tmp_path_factory.mktemp("routed_study")
    out: dict[str, Any] = {"tmp": tmp}
    res, ctx = run_job(tmp, "pretrain", "pretrain", {"steps": 20, "seq_len": 64}, {})
    out["pretrain"], out["pretrain_ctx"] = res, ctx
    res, ctx = run_job(tmp, "chat", "chat_sft", {"steps": 8}, {"pretrain": res.checkpoint})
    out["chat"], out["chat_ctx"] = res, ctx
    res, ctx = run_job(tmp, "base", "abstain_sft", {"steps": 8}, {"chat": res.checkpoint})
    out["base"], out["base_ctx"] = res, ctx
    return out


def state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict()


def test_pipeline_jobs_write_checkpoints_and_fire_their_knobs(study: dict[str, Any]) -> None:
    for name in ("pretrain", "chat", "base"):
        res: JobResult = study[name]
        ctx: JobContext = study[f"{name}_ctx"]
        assert res.checkpoint == ctx.artifacts_dir / "model.pt" and res.checkpoint.is_file()
        payload = torch.load(res.checkpoint, weights_only=True)
        assert payload["format"] == "docket-routed-v1" and payload["config"]["name"] == "tiny"
        assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []
        names = {m.name for m in res.metrics}
        assert {"loss", "final_loss", "first_loss"} <= names
    pre = {m.name: m.value for m in study["pretrain"].metrics if m.step is None}
    assert pre["final_loss"] < pre["first_loss"]
    assert study["pretrain_ctx"].knobs.fired_counts["seq_len"] == 20
    assert {"abstain_bce", "ce"} <= {m.name for m in study["base"].metrics}


def test_jobs_are_seeded(study: dict[str, Any], tmp_path: Path) -> None:
    res, _ = run_job(
        tmp_path, "chat", "chat_sft", {"steps": 8}, {"pretrain": study["pretrain"].checkpoint}
    )
    a, b = state(res.checkpoint), state(study["chat"].checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_joint_finetune_updates_only_the_trainable_groups(
    study: dict[str, Any], tmp_path: Path
) -> None:
    base = study["base"].checkpoint
    params = {
        "steps": 4,
        "mc_weight": 5.0,
        "abstain_weight": 1.0,
        "trainable": ["router", "abstain"],
    }
    res, ctx = run_job(tmp_path, "v8a", "joint_finetune", params, {"base": base})
    before, after = state(base), state(res.checkpoint)
    for name in before:
        if group_of(name) in ("router", "abstain"):
            assert not torch.equal(before[name], after[name]), name
        else:
            assert torch.equal(before[name], after[name]), name
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []
    assert ctx.knobs.fired_counts["mc_weight"] == 4
    metrics = {m.name for m in res.metrics}
    assert {"mc_loss", "entropy_gap", "abstain_gap", "abstain_bce", "ce"} <= metrics

    params = {"steps": 3, "abstain_weight": 5.0, "trainable": ["abstain"]}  # the corollary
    res, ctx = run_job(tmp_path, "corollary", "joint_finetune", params, {"base": base})
    after = state(res.checkpoint)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"abstain.weight", "abstain.bias"}
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []


def test_splice_copies_exactly_the_named_groups(study: dict[str, Any], tmp_path: Path) -> None:
    base = study["base"].checkpoint
    donor = study["chat"].checkpoint  # differs from base everywhere
    params = {"base": "base", "donor": "donor", "groups": ["abstain", "router"]}
    res, ctx = run_job(tmp_path, "splice", "splice", params, {"base": base, "donor": donor})
    b, d, s = state(base), state(donor), state(res.checkpoint)
    for name in s:
        source = d if group_of(name) in ("abstain", "router") else b
        assert torch.equal(s[name], source[name]), name
        assert not torch.equal(b[name], d[name]), name  # the test can tell them apart
    assert sorted(res.extra["copied"]) == sorted(
        n for n in s if group_of(n) in ("abstain", "router")
    )
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []


def test_miswired_mc_weight_is_reported_as_a_silent_noop(
    study: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mc_term_never_added(loss, gates, batch, weight, ctx):  # type: ignore[no-untyped-def]
        return loss, 0.0  # the bug: the term is computed nowhere and never reaches the loss

    monkeypatch.setattr(jobs, "_add_mc_term", mc_term_never_added)
    params = {"steps": 2, "mc_weight": 20.0}
    _, ctx = run_job(tmp_path, "v7", "joint_finetune", params, {"base": study["base"].checkpoint})
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == ["mc_weight"]


def test_unknown_knob_and_model_mismatch(study: dict[str, Any], tmp_path: Path) -> None:
    params = {"steps": 1, "mc_wieght": 5.0}  # a typo never fires
    _, ctx = run_job(tmp_path, "v7", "joint_finetune", params, {"base": study["base"].checkpoint})
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == ["mc_wieght"]
    with pytest.raises(ValueError, match="model='tilelli-10m'.*'tiny'"):
        run_job(
            tmp_path, "x", "chat_sft", {"model": "tilelli-10m"}, {"p": study["pretrain"].checkpoint}
        )
    with pytest.raises(ValueError, match="needs an input checkpoint"):
        run_job(tmp_path, "y", "chat_sft", {}, {})


def test_probe_emits_every_signal_for_all_210_items(study: dict[str, Any], tmp_path: Path) -> None:
    res, ctx = run_job(tmp_path, "probe_base", "probe", {}, {"base": study["base"].checkpoint})
    n_layer = 4
    signals = set(jobs.PROBE_SIGNALS) | {f"router_entropy_L{i}" for i in range(n_layer)}
    per_item: dict[str, set[str]] = {}
    for obs in res.observations:
        per_item.setdefault(obs.item, set()).add(obs.signal)
        assert obs.label in (0, 1)
    assert len(per_item) == 210 and all(s == signals for s in per_item.values())
    assert len(res.observations) == 210 * len(signals)
    assert Counter(o.group for o in res.observations if o.signal == "abstain_p") == {
        g: 30 for g in GROUPS
    }
    assert set(res.texts) == set(per_item)
    metrics = {m.name: m.value for m in res.metrics}
    gate = {"abstain_auroc", "fp_rate_at_cut"}
    gate |= {f"{m}.{g}" for m in ("abstain_p_mean", "refused") for g in GROUPS}
    assert set(metrics) == {"coherence_bpb", "loop_rate", "refusal_rate", "failure_rate"} | gate
    assert 0 < metrics["coherence_bpb"] < 8.5
    # the headline metrics against independent computations from the recorded observations
    from sklearn.metrics import roc_auc_score

    obs = {(o.group, o.item, o.signal): o.value for o in res.observations}
    items = sorted({(g, i) for g, i, _ in obs})
    ap = [obs[(g, i, "abstain_p")] for g, i in items]
    is_ood = [int(g != "in_domain") for g, _ in items]
    assert metrics["abstain_auroc"] == pytest.approx(roc_auc_score(is_ood, ap), abs=1e-12)
    for g in GROUPS:
        mine = [(obs[(g, i, "abstain_p")], obs[(g, i, "refused")]) for gg, i in items if gg == g]
        assert metrics[f"abstain_p_mean.{g}"] == pytest.approx(sum(a for a, _ in mine) / 30)
        assert metrics[f"refused.{g}"] == sum(r for _, r in mine)
        assert {r for _, r in mine} <= {0.0, 1.0}
        texts = [res.texts[i] for gg, i in items if gg == g]
        assert metrics[f"refused.{g}"] == sum(jobs.is_refusal(t) for t in texts)
    ind = [obs[("in_domain", i, "abstain_p")] for g, i in items if g == "in_domain"]
    assert metrics["fp_rate_at_cut"] == sum(a >= 0.775 for a in ind) / 30
    conf = {o.item: o.value for o in res.observations if o.signal == "router_conf"}
    ent = {o.item: o.value for o in res.observations if o.signal == "router_entropy_mean"}
    assert all(abs(conf[i] - (1 - ent[i] / math.log(3))) < 1e-9 for i in conf)
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []
    assert res.checkpoint is None


def test_probe_knobs_fire_only_when_they_change_something(
    study: dict[str, Any], tmp_path: Path
) -> None:
    ckpt = {"base": study["base"].checkpoint}
    params = {"checkpoint": "base", "limit_per_group": 2, "max_new_tokens": 8, "padding": "right"}
    res, ctx = run_job(tmp_path, "p1", "probe", params, ckpt)
    assert len({o.item for o in res.observations}) == 14
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []
    res, ctx = run_job(tmp_path, "p2", "probe", {"limit_per_group": 100, "max_new_tokens": 4}, ckpt)
    assert len(res.texts) == 210
    assert ctx.knobs.silent_noops(STRUCTURAL_KEYS) == ["limit_per_group"]  # cut nothing
    local = {"checkpoint": str(study["base"].checkpoint), "limit_per_group": 1, "max_new_tokens": 2}
    res, ctx = run_job(tmp_path, "p3", "probe", local, {})  # a checkpoint from a local path
    assert len(res.texts) == 7 and ctx.knobs.silent_noops(STRUCTURAL_KEYS) == []


def test_refusal_and_loop_detectors() -> None:
    assert is_refusal(" I don't know.")
    assert is_refusal("Sorry, I do not know that")
    assert is_refusal("i dont know")
    assert is_refusal("I don\u2019t know.")
    assert not is_refusal("The capital of France is Paris.")
    assert not is_refusal("I know the answer: Paris.")
    assert is_loop("abcabcabcabcabc")  # "abc" x5
    assert is_loop("lelllllllllllllll")
    assert is_loop("The capital is the capital is the capital is the capital is the cap")
    assert not is_loop("abcabcabcabc")  # only 4 repeats
    assert not is_loop(" The capital of France is Paris.")
    assert not is_loop("")


def test_data_build_is_deterministic(tmp_path: Path) -> None:
    digests = build_data.build_all(build_data.load_facts(), tmp_path / "a")
    build_data.build_all(build_data.load_facts(), tmp_path / "b")
    for name in build_data.OUTPUT_FILES:
        committed = (DATA_DIR / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == committed, name
        assert (tmp_path / "b" / name).read_bytes() == committed, name
    assert set(digests) == set(build_data.OUTPUT_FILES)


def test_facts_extraction_from_the_pinned_wheel(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "countryinfo==1.0.1", "--no-deps"]
    cmd += ["--only-binary=:all:", "-d", str(tmp_path), "-q", "--timeout", "10"]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("countryinfo wheel not downloadable here")
    facts = build_data.extract_facts(tmp_path / build_data.WHEEL_NAME)
    assert facts == build_data.load_facts()


def test_probe_set_construction() -> None:
    rows = load_probe()
    assert Counter(r["group"] for r in rows) == {g: 30 for g in GROUPS}
    assert len({r["item"] for r in rows}) == 210
    assert all(len(r["prompt"].encode()) + 1 + 48 <= 256 for r in rows)
    assert all(r["prompt"] == f"USER: {r['question']}\nASSISTANT:" for r in rows)
    long = [len(r["prompt"]) for r in rows if r["group"] == "long_input"]
    short = [len(r["prompt"]) for r in rows if r["group"] == "in_domain"]
    assert min(long) > 2.5 * max(short) / 1.5
    train_q = {r["question"] for r in load_chat("train")}
    ood_q = {r["question"] for r in load_ood_train()}
    assert not ({r["question"] for r in rows} & (train_q | ood_q))
    held = {(r["country"], r["attribute"]) for r in load_chat("heldout")}
    trained = {(r["country"], r["attribute"]) for r in load_chat("train")}
    assert not held & trained
    answerable = [r for r in rows if r["expected"] == "answer"]
    assert all((r["country"], r["attribute"]) in held for r in answerable)
