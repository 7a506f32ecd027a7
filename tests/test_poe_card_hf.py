"""``poe_card`` on ``hf:`` stage heads: a tiny Llama really trained for a few steps and saved with
``save_pretrained`` as ``step-N`` checkpoints, stage heads trained by ``poe_train_heads``; every
number recomputed in numpy from the model's ``output_hidden_states`` and the heads file; hf param
rules checked as the sign-check sees them. No network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("CI") == "true":  # CI installs every extra: a missing one is a failure
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

from conftest import DocketCli  # noqa: E402

from docketml.protocols.schema import JobSpec  # noqa: E402
from docketml.runners.context import JobContext, JobResult, KnobAudit  # noqa: E402
from docketml.runners.jobs.poe import JOBS, _corpus_split  # noqa: E402
from docketml.runners.jobs.poe_card import run_card  # noqa: E402
from docketml.runners.jobs.poe_card_params import hf_checkpoint_dirs  # noqa: E402
from docketml.runners.jobs.preflight import model_checks, param_checks  # noqa: E402
from docketml.runners.models.hf import HFModelError  # noqa: E402
from docketml.runners.models.hf_stages import read_heads  # noqa: E402
from docketml.runners.registry import job_kinds  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
BOUNDARIES = [1, 3, 4]
CAL, EVAL, SEQ = 600, 600, 64
CARD = {"boundaries": BOUNDARIES, "calib_bytes": CAL, "eval_bytes": EVAL, "seq_len": SEQ}
STRUCTURAL = job_kinds().structural_keys("poe_card")


def _ctx(kind: str, params: dict[str, Any], tmp: Path, inputs: dict[str, Path] | None = None):
    return JobContext(
        job=f"j_{kind}", kind=kind, params=params, seed=3, artifacts_dir=tmp,
        inputs=inputs or {}, knobs=KnobAudit(params),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """``root/step-3`` and ``root/step-6``: a tiny Llama trained on the corpus bytes."""
    root = tmp_path_factory.mktemp("hf_card") / "run"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL))
    data = torch.tensor(list(_corpus_split()[0][:20000]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(1, 7):
        starts = torch.randint(0, data.numel() - 65, (8,), generator=gen)
        batch = torch.stack([data[s : s + 65] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 3 == 0:
            model.save_pretrained(root / f"step-{step}")
    return root, losses


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _parts(ckpt: Path, text: bytes, heads: list[np.ndarray] | None) -> tuple[Any, Any, Any]:
    """(base, delta, targets) in numpy from output_hidden_states: base_k = lm_head(x_k),
    delta_k = W_k x_k with x_k = norm(h_{b_k}) (the last hidden state is normed already)."""
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt, local_files_only=True).eval()
    ids = list(text)
    base, delta, targets = [], [], []
    for lo in range(0, len(ids) - 1, SEQ):
        tgt = ids[lo + 1 : lo + SEQ + 1]
        inp = ids[lo : lo + len(tgt)]
        with torch.no_grad():
            hs = model(torch.tensor([inp]), output_hidden_states=True).hidden_states
            xs = [hs[b] if b == len(hs) - 1 else model.model.norm(hs[b]) for b in BOUNDARIES]
            base.append(np.stack([model.lm_head(x)[0].double().numpy() for x in xs]))
            x_np = [x[0].double().numpy() for x in xs]
        zero = [np.zeros((SMALL["vocab_size"], SMALL["hidden_size"]))] * len(BOUNDARIES)
        delta.append(np.stack([x @ w.T for x, w in zip(x_np, heads or zero, strict=True)]))
        targets.extend(tgt)
    return np.concatenate(base, 1), np.concatenate(delta, 1), np.array(targets)


def _poe(logits: np.ndarray, n: int | None = None) -> np.ndarray:
    lp = _np_log_softmax(logits)
    return _np_log_softmax(lp[: n or lp.shape[0]].mean(0))


def _bpb(lp: np.ndarray, targets: np.ndarray, n_bytes: int) -> float:
    return float(-lp[np.arange(targets.size), targets].sum() / n_bytes / math.log(2))


def _by_step(result: JobResult) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for m in result.metrics:
        if m.step is not None:
            out.setdefault(m.step, {})[m.name] = m.value
    return out


def test_directory_of_checkpoints_gives_wand_and_crossover_per_step(trained, tmp_path) -> None:
    root, losses = trained
    assert sum(losses[-2:]) < sum(losses[:2])  # the trunk really trained
    ctx = _ctx("poe_card", {**CARD, "model": f"hf:{root}"}, tmp_path)
    result = run_card(ctx)
    assert ctx.knobs.silent_noops(ignore=STRUCTURAL) == []
    rows = _by_step(result)
    assert sorted(rows) == [3, 6]
    assert result.extra["probes"] == ["wand", "crossover"]  # zero heads: nothing else applies
    _, held_out = _corpus_split()
    n_bytes = EVAL - 1  # byte tokenizer, no BOS: the first byte is context only
    for step, got in rows.items():
        base, _, targets = _parts(root / f"step-{step}", held_out[CAL : CAL + EVAL], None)
        assert got["bpb_full"] == pytest.approx(_bpb(_poe(base), targets, n_bytes), rel=1e-5)
        deep = _bpb(_np_log_softmax(base[-1]), targets, n_bytes)
        assert got["bpb_deepest"] == pytest.approx(deep, rel=1e-5)
        cal_base, _, _ = _parts(root / f"step-{step}", held_out[:CAL], None)
        cum = [_poe(cal_base, k + 1) for k in range(3)]
        for k in range(2):
            d = cum[k + 1] - cum[k]
            bound = np.percentile(d.max(-1) - d.min(-1), 99)
            assert got[f"wand_bound{k}"] == pytest.approx(bound, rel=1e-4)
        assert "wand_bound2" not in got


@pytest.fixture(scope="module")
def heads(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = trained
    params = {"model": f"hf:{root / 'step-6'}", "boundaries": BOUNDARIES, "steps": 8,
              "batch_size": 4, "seq_len": SEQ, "lr": 1e-2}  # fmt: skip
    ctx = _ctx("poe_train_heads", params, tmp_path_factory.mktemp("heads"))
    result = JOBS["poe_train_heads"](ctx)
    assert result.checkpoint is not None
    return Path(result.checkpoint)


def test_trained_heads_give_diversity_and_beta_sweep(trained, heads: Path, tmp_path) -> None:
    from sklearn.utils.extmath import svd_flip

    root, _ = trained
    params = {**CARD, "model": f"hf:{root / 'step-6'}", "heads": "h", "betas": [0, 2],
              "beta_stages": [0, 2]}  # fmt: skip
    ctx = _ctx("poe_card", params, tmp_path, {"h": heads})
    result = run_card(ctx)
    assert ctx.knobs.silent_noops(ignore=STRUCTURAL) == []
    got = _by_step(result)[6]
    weights = [w.double().numpy() for _, w in sorted(read_heads(heads)["state_dict"].items())]
    assert all(np.abs(w).max() > 0 for w in weights)
    us = [svd_flip(*np.linalg.svd(w, full_matrices=False)[::2])[0][:, 0] for w in weights]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert got[f"head_cos{i}_{j}"] == pytest.approx(float(us[i] @ us[j]), abs=1e-6)
    a = np.stack([w.reshape(-1) for w in weights], axis=1)
    unique = np.diag(np.linalg.qr(a)[1]) ** 2 / (a**2).sum(0)
    assert [got["head_unique1"], got["head_unique2"]] == pytest.approx(unique[1:], rel=1e-6)
    _, held_out = _corpus_split()
    base, delta, targets = _parts(root / "step-6", held_out[CAL : CAL + EVAL], weights)
    n_bytes = EVAL - 1
    full = _bpb(_poe(base + delta), targets, n_bytes)
    assert got["bpb_full"] == pytest.approx(full, rel=1e-5)
    for beta in (0.0, 2.0):
        for k in (0, 2):
            scale = np.ones((3, 1, 1))
            scale[k] = beta
            ref = _bpb(_poe(base + scale * delta), targets, n_bytes)
            assert got[f"bpb_beta{beta:g}_stage{k}"] == pytest.approx(ref, rel=1e-5)
        ref_all = _bpb(_poe(base + beta * delta), targets, n_bytes)
        assert got[f"bpb_beta{beta:g}_all"] == pytest.approx(ref_all, rel=1e-5)
    assert "bpb_beta0_stage1" not in got  # not in beta_stages
    assert got["ablation_dbpb_stage2"] == pytest.approx(got["bpb_beta0_stage2"] - full, rel=1e-4)


def test_hf_refusals_name_the_field(trained, heads: Path, tmp_path) -> None:
    root, _ = trained
    with pytest.raises(HFModelError, match=r"field 'probes' asks for \['diversity'\]"):
        run_card(
            _ctx("poe_card", {**CARD, "model": f"hf:{root}", "probes": ["diversity"]}, tmp_path)
        )
    with pytest.raises(HFModelError, match="directory of 2 checkpoints"):
        run_card(
            _ctx("poe_card", {**CARD, "model": f"hf:{root}", "heads": "h"}, tmp_path, {"h": heads})
        )
    with pytest.raises(HFModelError, match=r"field 'beta_stages' .* 0\.\.2"):
        run_card(
            _ctx(
                "poe_card",
                {**CARD, "model": f"hf:{root / 'step-6'}", "heads": "h", "beta_stages": [3]},
                tmp_path,
                {"h": heads},
            )
        )
    # as the sign-check sees them: K from the boundaries of the job or of its heads dependency
    train = JobSpec(
        name="h",
        kind="poe_train_heads",
        params={"model": f"hf:{root / 'step-6'}", "boundaries": BOUNDARIES},
    )
    card = JobSpec(
        name="card", kind="poe_card", after=["h"], params={"heads": "h", "beta_stages": [0, 3]}
    )
    [problem] = param_checks(card, [train, card])
    assert problem.startswith("job 'card': field 'beta_stages'") and "0..2" in problem
    params = {"model": f"hf:{root}", "boundaries": BOUNDARIES, "probes": ["beta"]}
    no_heads = JobSpec(name="c2", kind="poe_card", params=params)
    assert "field 'probes'" in param_checks(no_heads, [no_heads])[0]
    ok = JobSpec(name="c3", kind="poe_card", params={"model": f"hf:{root}", "boundaries": [1, 4]})
    assert param_checks(ok, [ok]) == []


def test_checkpoint_directory_listing(tmp_path: Path) -> None:
    for name in ("step-20", "checkpoint-5", "step-x", "notes"):
        (tmp_path / name).mkdir()
    for name in ("step-20", "checkpoint-5"):
        (tmp_path / name / "config.json").write_text("{}")
    assert hf_checkpoint_dirs(tmp_path) == [
        (5, tmp_path / "checkpoint-5"),
        (20, tmp_path / "step-20"),
    ]
    assert hf_checkpoint_dirs(tmp_path / "step-20") == [(20, tmp_path / "step-20")]
    (tmp_path / "step-5").mkdir()
    (tmp_path / "step-5" / "config.json").write_text("{}")
    with pytest.raises(HFModelError, match=r"more than one checkpoint directory for steps \[5\]"):
        hf_checkpoint_dirs(tmp_path)
    with pytest.raises(HFModelError, match="neither a checkpoint"):
        hf_checkpoint_dirs(tmp_path / "notes")


def test_preflight_checks_every_checkpoint_of_a_directory(trained) -> None:
    root, _ = trained
    job = JobSpec(name="c", kind="poe_card", params={"model": f"hf:{root}", "boundaries": [1, 4]})
    assert model_checks(job) == [(f"hf:{root}", None)]
    bad = JobSpec(name="c", kind="poe_card", params={"model": f"hf:{root}", "boundaries": [1, 9]})
    [(_, problem)] = model_checks(bad)
    assert problem is not None and "field 'boundaries'" in problem


PROTOCOL = """\
docket: 1
id: card-hf
title: PoE card probes on hf checkpoints
hypotheses:
  - {id: H1, statement: the p99 WAND bound of boundary 0 covers the evaluation slice, rule: covered}
decision_rules:
  covered: {kind: threshold, statistic: metric, metric: wand_coverage0, op: ">=", bound: 0.9}
jobs:
  - name: card
    kind: poe_card
    params: {model: "hf:%s", boundaries: [1, 3, 4], calib_bytes: 600, eval_bytes: 600, seq_len: 64}
"""


def test_docket_run_then_trajectory_on_hf_checkpoints(trained, docket_sqlite: DocketCli) -> None:
    root, _ = trained
    (docket_sqlite.cwd / "p.yaml").write_text(PROTOCOL % root)
    for args in (("protocol", "register", "p.yaml"), ("protocol", "freeze", "card-hf"),
                 ("run", "card-hf", "--no-progress")):  # fmt: skip
        result = docket_sqlite(*args)
        assert result.exit_code == 0, result.output
    data = json.loads(docket_sqlite("trajectory", "card-hf", "--json").output)
    assert data["steps"] == [3, 6]
    assert set(data["metrics"]) == {"bpb_full", "bpb_deepest", "crossover_gap", "wand_bound0",
                                    "wand_bound1", "wand_coverage0", "wand_coverage1",
                                    "wand_mean_stages", "wand_agreement"}  # fmt: skip
