"""PoE jobs end to end: train with checkpoints, probe, speculative, routing, trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from docketml.runners.context import JobContext, JobResult, KnobAudit, sha256_file
from docketml.runners.jobs.poe import (
    JOBS,
    generate_corpus,
    list_checkpoints,
    load_corpus,
)
from docketml.runners.models.poe import load_checkpoint
from docketml.runners.registry import job_kinds

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains models


STRUCTURAL_KEYS = job_kinds().structural_keys("poe_train")  # what the executor ignores


def _ctx(kind: str, params: dict[str, Any], tmp: Path, inputs: dict[str, Path] | None = None):
    return JobContext(
        job=kind,
        kind=kind,
        params=params,
        seed=0,
        artifacts_dir=tmp,
        inputs=inputs or {},
        knobs=KnobAudit(params),
    )


def _run(ctx: JobContext) -> tuple[JobResult, dict[str, float]]:
    result = JOBS[ctx.kind](ctx)
    assert ctx.knobs.silent_noops(ignore=STRUCTURAL_KEYS) == []
    return result, {m.name: m.value for m in result.metrics if m.step is None}


TRAIN = {
    "steps": 60,
    "checkpoint_every": 20,
    "batch_size": 8,
    "seq_len": 64,
    "lr": 5e-3,
    "warmup_steps": 10,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobResult, Path]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("poe_train")
    ctx = _ctx("poe_train", {"model": "tiny", **TRAIN}, tmp)
    result, _ = _run(ctx)
    assert ctx.knobs.fired_counts["checkpoint_every"] == 3
    return result, tmp


def test_train_writes_checkpoints_and_lowers_loss(trained) -> None:
    result, tmp = trained
    assert result.checkpoint == tmp / "final.pt" and result.checkpoint.is_file()
    rows = result.extra["checkpoints"]
    assert [r["step"] for r in rows] == [20, 40, 60]
    for row in rows:
        path = Path(row["path"])
        assert path == tmp / "checkpoints" / f"step-{row['step']:05d}.pt"
        assert row["sha256"] == sha256_file(path)
        assert load_checkpoint(path)[1] == row["step"]
    assert sha256_file(result.checkpoint) == rows[-1]["sha256"]
    metrics = {m.name: m.value for m in result.metrics if m.step is None}
    assert metrics["train_loss_last"] < 0.7 * metrics["train_loss_first"]
    assert [m.step for m in result.metrics if m.name == "train_loss"] == [20, 40, 60]


def test_probe_reports_every_stage_prefix_and_full(trained, tmp_path: Path) -> None:
    result, _ = trained
    ctx = _ctx("poe_probe", {"eval_bytes": 4096}, tmp_path, {"train": result.checkpoint})
    _, metrics = _run(ctx)
    for k in range(4):
        assert 0.0 < metrics[f"bpb_stage{k}"] < 8.0 and 0.0 <= metrics[f"acc_stage{k}"] <= 1.0
    for name in ("bpb_prefix2", "bpb_prefix3", "acc_prefix2", "acc_prefix3", "bpb_full"):
        assert name in metrics
    assert "bpb_prefix1" not in metrics and "bpb_prefix4" not in metrics  # = stage0 / full
    assert metrics["bpb_full"] < 8.0 - 1.0  # learned something: far below uniform over bytes
    assert ctx.knobs.fired_counts["eval_bytes"] == 1


def test_speculative_job_reports_per_prompt_observations(trained, tmp_path: Path) -> None:
    result, _ = trained
    params = {"k_draft": 3, "max_new_tokens": 24, "n_prompts": 6}
    ctx = _ctx("poe_speculative", params, tmp_path, {"train": result.checkpoint})
    res, metrics = _run(ctx)
    assert len(res.observations) == 6 * 5
    assert {o.item for o in res.observations} == {f"p{i:03d}" for i in range(6)}
    signals = {"speedup", "cpu_speedup", "alpha", "tokens_per_round", "identical"}
    assert {o.signal for o in res.observations} == signals
    assert all(o.group == "prompts" for o in res.observations)
    assert metrics["identical_rate"] == 1.0
    assert 0.0 <= metrics["alpha"] <= 1.0 and 1.0 <= metrics["tokens_per_round"] <= 4.0
    assert metrics["speedup_mean"] > 0 and metrics["projected_speedup"] > 0
    assert len(res.texts) == 6


def test_routing_job_cap_bounds(trained, tmp_path: Path) -> None:
    result, _ = trained
    inputs = {"train": result.checkpoint}
    fractions = []
    for cap in (0.0, 0.05, 1.0):
        ctx = _ctx("poe_routing", {"cap": cap, "eval_bytes": 4096}, tmp_path, inputs)
        _, metrics = _run(ctx)
        assert metrics["acc_full"] - metrics["acc_mixed"] <= cap + 1e-9
        d0 = 2 / 5
        f = metrics["routed_fraction"]
        assert metrics["routing_projected_speedup"] == pytest.approx(1 / (f * d0 + 1 - f))
        fractions.append(f)
    assert fractions[0] <= fractions[1] <= fractions[2] == 1.0


def test_trajectory_one_row_per_checkpoint(trained, tmp_path: Path) -> None:
    result, tmp = trained
    params = {"eval_bytes": 2048, "n_prompts": 2, "max_new_tokens": 12}
    ctx = _ctx("poe_trajectory", params, tmp_path, {"train": result.checkpoint})
    res, _ = _run(ctx)
    assert [s for s, _ in list_checkpoints(result.checkpoint)] == [20, 40, 60]
    names = ("bpb_full", "bpb_stage0", "acc_full", "alpha", "speedup", "routed_fraction")
    for name in names:
        assert [m.step for m in res.metrics if m.name == name] == [20, 40, 60]
    bpb = [m.value for m in res.metrics if m.name == "bpb_full"]
    assert bpb[-1] < bpb[0]  # training continued to help between checkpoints


def test_probe_needs_a_checkpoint_and_model_knob_must_match(trained, tmp_path: Path) -> None:
    result, _ = trained
    with pytest.raises(ValueError, match="needs one checkpoint"):
        JOBS["poe_probe"](_ctx("poe_probe", {}, tmp_path))
    ctx = _ctx("poe_probe", {"checkpoint": str(result.checkpoint), "model": "small"}, tmp_path)
    with pytest.raises(ValueError, match="not a 'small' model"):
        JOBS["poe_probe"](ctx)


def test_non_default_knob_that_never_fires_is_reported(tmp_path: Path) -> None:
    # a single-stage model has no boundary: stop_grad_at_boundaries cannot take effect
    params = {"model": "tiny", "layout": [2], "steps": 2, "batch_size": 2, "seq_len": 16}
    ctx = _ctx("poe_train", {**params, "stop_grad_at_boundaries": True}, tmp_path)
    JOBS["poe_train"](ctx)
    assert ctx.knobs.silent_noops(ignore=STRUCTURAL_KEYS) == ["stop_grad_at_boundaries"]


def test_train_refuses_a_model_too_large_for_the_cpu(tmp_path: Path) -> None:
    ctx = _ctx("poe_train", {"model": "cognica-3b-layout"}, tmp_path)
    with pytest.raises(ValueError, match="2,083,532,800 parameters: too large"):
        JOBS["poe_train"](ctx)


def test_generated_corpus_is_deterministic_english_like(tmp_path: Path) -> None:
    text = generate_corpus(5000)
    assert text == generate_corpus(5000) and len(text) == 5000
    assert text.decode("ascii")[0].isupper() and b". " in text
    assert load_corpus(tmp_path / "missing.txt") == generate_corpus()
