"""PoE / early exit on an ``hf:`` decoder: a tiny Llama saved with ``save_pretrained`` into a
temp dir; stage logits checked against the model's own logits and ``output_hidden_states``,
``poe_probe`` bits per byte recomputed independently in numpy, ``poe_train_heads`` checked to
lower stage-0 BPB with the trunk untouched, and bad boundaries refused with a clear message."""

from __future__ import annotations

import hashlib
import math
import os
import random
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

from docketml.protocols.schema import JobSpec  # noqa: E402
from docketml.runners.context import JobContext, JobResult, KnobAudit  # noqa: E402
from docketml.runners.jobs.hf_poe import fit_heads  # noqa: E402
from docketml.runners.jobs.poe import JOBS, _corpus_split  # noqa: E402
from docketml.runners.jobs.preflight import model_checks  # noqa: E402
from docketml.runners.models.hf import HFModelError, load_hf  # noqa: E402
from docketml.runners.models.hf_stages import (  # noqa: E402
    HFStages,
    greedy_decode,
    speculative_decode,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(
    vocab_size=260,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
BOUNDARIES = [1, 3, 4]
EVAL_BYTES = 700
SEQ_LEN = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf_stages") / "llama"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).save_pretrained(root)
    return root


def run_job(
    kind: str, tmp: Path, params: dict[str, Any], inputs: dict[str, Path] | None = None
) -> tuple[JobResult, JobContext]:
    ctx = JobContext(
        job=f"j_{kind}",
        kind=kind,
        params=params,
        seed=3,
        artifacts_dir=tmp,
        inputs=inputs or {},
        knobs=KnobAudit(params),
    )
    return JOBS[kind](ctx), ctx


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_stage_logits_match_the_model_and_its_hidden_states(ckpt: Path) -> None:
    hf = load_hf(ckpt)
    stages = HFStages(hf, BOUNDARIES)
    assert [n for n, _ in stages.named_parameters()] == [
        "heads.0.weight",
        "heads.1.weight",
        "heads.2.weight",
    ]
    ids = torch.tensor([list(b"The quiet river opened a window.")])
    with torch.no_grad():
        logits, _ = stages.stage_logits(ids)
        out = hf.model(ids, output_hidden_states=True)
        # last boundary = num_layers, zero head: the model's own logits
        assert torch.allclose(logits[-1], out.logits, atol=1e-5)
        # untrained heads = plain early exit lm_head(norm(h_b)) from output_hidden_states
        for k, b in enumerate(BOUNDARIES[:-1]):
            exit_k = hf.model.lm_head(hf.model.model.norm(out.hidden_states[b]))
            assert torch.allclose(logits[k], exit_k, atol=1e-5)
        # a non-zero head adds exactly head(norm(h_b))
        torch.nn.init.normal_(stages.heads[0].weight)
        with_head, _ = stages.stage_logits(ids)
        x0 = hf.model.model.norm(out.hidden_states[BOUNDARIES[0]])
        assert torch.allclose(with_head[0], logits[0] + stages.heads[0](x0), atol=1e-5)
        # the KV cache: prefill then one-token steps give the same stage logits
        first, cache = stages.stage_logits(ids[:, :10], use_cache=True)
        steps = [first]
        for t in range(10, ids.size(1)):
            step, cache = stages.stage_logits(ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(step)
        assert torch.allclose(torch.cat(steps, dim=2), with_head, atol=1e-5)


def _independent_bpb(ckpt: Path, heads: dict[str, Any] | None = None) -> dict[str, float]:
    """bits per byte of every stage, of the PoE prefix of 2 and of the full PoE, from the model's
    output_hidden_states and numpy (byte tokenizer: one token per byte, first byte context)."""
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt, local_files_only=True).eval()
    ids = list(_corpus_split()[1][:EVAL_BYTES])
    nll = {name: 0.0 for name in ("s0", "s1", "s2", "p2", "full")}
    hits0 = 0
    for lo in range(0, len(ids) - 1, SEQ_LEN):
        inp, tgt = ids[lo : lo + SEQ_LEN], np.array(ids[lo + 1 : lo + SEQ_LEN + 1])
        inp = inp[: len(tgt)]
        with torch.no_grad():
            hs = model(torch.tensor([inp]), output_hidden_states=True).hidden_states
            lps = []
            for k, b in enumerate(BOUNDARIES):
                # the last entry of hidden_states is already normed by transformers
                x = hs[b] if b == len(hs) - 1 else model.model.norm(hs[b])
                z = model.lm_head(x)
                if heads is not None:
                    z = z + x @ heads[f"{k}.weight"].T
                lps.append(_log_softmax(z[0].double().numpy()))
        rows = np.arange(len(tgt))
        for k in range(3):
            nll[f"s{k}"] -= lps[k][rows, tgt].sum()
        hits0 += int((lps[0].argmax(-1) == tgt).sum())
        for name, n in (("p2", 2), ("full", 3)):
            a = np.mean(lps[:n], axis=0)
            nll[name] -= _log_softmax(a)[rows, tgt].sum()
    n_bytes = len(ids) - 1
    out = {k: v / n_bytes / math.log(2) for k, v in nll.items()}
    out["acc0"] = hits0 / n_bytes
    return out


def test_poe_probe_on_hf_bits_per_byte_match_an_independent_computation(
    ckpt: Path, tmp_path: Path
) -> None:
    params = {
        "model": f"hf:{ckpt}",
        "boundaries": BOUNDARIES,
        "eval_bytes": EVAL_BYTES,
        "seq_len": SEQ_LEN,
        "batch_size": 4,
    }
    res, ctx = run_job("poe_probe", tmp_path, params)
    got = {m.name: m.value for m in res.metrics}
    assert set(got) == {
        "bpb_stage0", "acc_stage0", "bpb_stage1", "acc_stage1", "bpb_stage2", "acc_stage2",
        "bpb_prefix2", "acc_prefix2", "bpb_full", "acc_full",
    }  # fmt: skip
    ref = _independent_bpb(ckpt)
    for name, key in (
        ("bpb_stage0", "s0"),
        ("bpb_stage1", "s1"),
        ("bpb_stage2", "s2"),
        ("bpb_prefix2", "p2"),
        ("bpb_full", "full"),
        ("acc_stage0", "acc0"),
    ):
        assert got[name] == pytest.approx(ref[key], rel=1e-5), name
    assert res.extra["n_bytes"] == EVAL_BYTES - 1
    assert res.extra["boundaries"] == BOUNDARIES
    assert ctx.knobs.silent_noops() == []


def test_trained_heads_lower_stage0_bpb_and_leave_the_trunk_unchanged(
    ckpt: Path, tmp_path: Path
) -> None:
    hf = load_hf(ckpt)
    stages = HFStages(hf, BOUNDARIES)
    trunk_before = {k: v.clone() for k, v in hf.model.state_dict().items()}
    data = torch.tensor(list(_corpus_split()[0][:20000]))
    losses = fit_heads(stages, data, 20, 8, 32, 1e-2, 0.0, torch.Generator().manual_seed(0))
    assert losses[-1] < losses[0]
    after = hf.model.state_dict()
    assert all(torch.equal(trunk_before[k], after[k]) for k in trunk_before)
    assert all(not p.requires_grad for p in hf.model.parameters())
    assert float(stages.heads[0].weight.detach().abs().sum()) > 0

    # the job: heads saved as the run's checkpoint, loaded by poe_probe through heads: <job>
    train_dir, probe_dir = tmp_path / "train", tmp_path / "probe"
    train_params = {
        "model": f"hf:{ckpt}",
        "boundaries": BOUNDARIES,
        "steps": 30,
        "seq_len": 32,
        "lr": 1e-2,
    }
    trained, tctx = run_job("poe_train_heads", train_dir, train_params)
    assert trained.checkpoint is not None and trained.checkpoint.is_file()
    assert trained.extra["trunk_sha256"] == HFStages(load_hf(ckpt), BOUNDARIES).trunk_sha256()
    assert tctx.knobs.silent_noops() == []
    probe_params = {"heads": "heads", "eval_bytes": EVAL_BYTES, "seq_len": SEQ_LEN}
    res, _ = run_job("poe_probe", probe_dir, probe_params, {"heads": trained.checkpoint})
    got = {m.name: m.value for m in res.metrics}
    heads = torch.load(trained.checkpoint, weights_only=True)["state_dict"]
    ref = _independent_bpb(ckpt, heads)
    assert got["bpb_stage0"] == pytest.approx(ref["s0"], rel=1e-5)
    plain = _independent_bpb(ckpt)
    assert got["bpb_stage0"] < plain["s0"] - 0.1

    # poe_speculative on the trained heads (model and boundaries from the heads file)
    spec_params = {"heads": "heads", "draft_stage": 0, "k_draft": 3, "n_prompts": 4}
    spec_params["max_new_tokens"] = 10
    res, sctx = run_job(
        "poe_speculative", tmp_path / "spec", spec_params, {"heads": trained.checkpoint}
    )
    got = {m.name: m.value for m in res.metrics}
    assert got["identical_rate"] == 1.0
    assert 0.0 <= got["alpha"] <= 1.0 and got["tokens_per_round"] >= 1.0
    assert {o.signal for o in res.observations} == {
        "speedup", "cpu_speedup", "alpha", "tokens_per_round", "identical",
    }  # fmt: skip
    assert len(res.texts) == 4
    assert res.extra["draft_depth_fraction"] == BOUNDARIES[0] / SMALL["num_hidden_layers"]
    assert sctx.knobs.silent_noops() == []


@pytest.mark.parametrize("bad", [[3, 2], [0, 2], [1, 5], [], "3,5", [1.5, 2], [2, 2]])
def test_bad_boundaries_are_refused_naming_job_and_field(
    ckpt: Path, tmp_path: Path, bad: Any
) -> None:
    params = {"model": f"hf:{ckpt}", "boundaries": bad, "eval_bytes": 200}
    with pytest.raises(HFModelError, match=r"job 'j_poe_probe': field 'boundaries' .*1\.\.4"):
        run_job("poe_probe", tmp_path, params)
    job = JobSpec(name="stages", kind="poe_probe", params=params)
    [(subject, problem)] = model_checks(job)
    assert problem is not None and "field 'boundaries'" in problem and "1..4" in problem
    good = JobSpec(name="stages", kind="poe_probe", params={**params, "boundaries": [2, 4]})
    assert model_checks(good) == [(f"hf:{ckpt}", None)]


def test_heads_from_another_checkpoint_are_refused(ckpt: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).save_pretrained(other)
    heads_file = HFStages(load_hf(other), BOUNDARIES).save_heads(tmp_path / "h.pt")
    params = {"model": f"hf:{ckpt}", "heads": "h", "eval_bytes": 200}
    with pytest.raises(HFModelError, match="trained on the checkpoint with weight sha256"):
        run_job("poe_probe", tmp_path, params, {"h": heads_file})
    with pytest.raises(HFModelError, match="field 'heads' is 'nope'"):
        run_job("poe_probe", tmp_path, {**params, "heads": "nope"}, {"h": heads_file})


def test_speculative_decoding_equals_greedy_poe_and_transformers_generate(ckpt: Path) -> None:
    hf = load_hf(ckpt)
    stages = HFStages(hf, BOUNDARIES)
    torch.manual_seed(5)
    for head in stages.heads:  # non-trivial stage heads, so drafts and the PoE disagree often
        torch.nn.init.normal_(head.weight, std=0.3)
    rng = random.Random(0)
    held_out = _corpus_split()[1]
    accepted = proposed = 0
    for i in range(10):
        start = rng.randrange(len(held_out) - 40)
        prompt = list(held_out[start : start + rng.randrange(4, 30)])
        plain = greedy_decode(stages, prompt, 12)
        for k, draft in ((1 + i % 4, 0), (3, 1)):
            spec, stats = speculative_decode(stages, prompt, 12, k_draft=k, draft_stage=draft)
            assert spec == plain, (i, k, draft)
            accepted, proposed = accepted + stats.accepted, proposed + stats.proposed
    assert 0 < accepted < proposed  # drafts were both accepted and rejected
    # the draft runs only the layers up to its boundary: deeper layers' cache does not grow
    ids = torch.tensor([list(b"abc")])
    _, cache = stages.stage_states(ids, use_cache=True)
    _, cache = stages.stage_states(ids[:, :1], cache, use_cache=True, n_stages=1)
    assert [layer.keys.size(-2) for layer in cache.layers] == [4, 3, 3, 3]
    # one stage ending at the last layer with a zero head is the model: transformers' generate
    one = HFStages(hf, [SMALL["num_hidden_layers"]])
    prompt = list(b"The small river")
    out = hf.model.generate(
        torch.tensor([prompt]),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert greedy_decode(one, prompt, 12) == out[0, len(prompt) :].tolist()


def test_trajectory_refuses_stage_heads(ckpt: Path, tmp_path: Path) -> None:
    params = {"model": f"hf:{ckpt}", "boundaries": BOUNDARIES, "heads": "h"}
    with pytest.raises(HFModelError, match="field 'heads' does not apply to poe_trajectory"):
        run_job("poe_trajectory", tmp_path, params)


STAGES_PROTOCOL = """\
docket: 1
id: {pid}
title: Stage heads of a local decoder
hypotheses:
  - {{id: H1, statement: stage 0 with trained heads is a usable exit, rule: r}}
decision_rules:
  r: {{kind: threshold, statistic: metric, metric: bpb_stage0, job: stages, op: "<=",
      bound: 100.0}}
jobs:
  - {{name: heads, kind: poe_train_heads,
      params: {{model: "hf:{path}", boundaries: {boundaries}, steps: 3, seq_len: 16}}}}
  - {{name: stages, kind: poe_probe, after: [heads],
      params: {{heads: heads, eval_bytes: 300, seq_len: 32}}}}
"""


def test_docket_run_trains_heads_stores_them_by_sha256_and_probes_them(
    docket_sqlite: Any, ckpt: Path, tmp_path: Path
) -> None:
    import json

    from test_costs import register_and_freeze

    bad = STAGES_PROTOCOL.format(pid="hf_bad", path=ckpt, boundaries="[2, 9]")
    path = tmp_path / "bad.yaml"
    path.write_text(bad, encoding="utf-8")
    pid = json.loads(docket_sqlite("protocol", "register", str(path), "--json").output)["id"]
    frozen = docket_sqlite("protocol", "freeze", pid)
    assert frozen.exit_code == 1, frozen.output
    assert "field 'boundaries'" in frozen.output and "Traceback" not in frozen.output

    text = STAGES_PROTOCOL.format(pid="hf_stages", path=ckpt, boundaries="[1, 3, 4]")
    pid = register_and_freeze(docket_sqlite, tmp_path, text, name="ok.yaml")
    ok = docket_sqlite("run", pid, "--no-progress")
    assert ok.exit_code == 0, ok.output
    runs = json.loads(docket_sqlite("runs", "list", "--json").output)
    assert sorted(r["status"] for r in runs) == ["succeeded", "succeeded"], runs
    shown = {
        r["job"]: json.loads(docket_sqlite("runs", "show", str(r["id"]), "--json").output)
        for r in runs
    }
    heads = shown["heads"]
    assert heads["checkpoint_sha256"] == heads["extra"]["heads_sha256"]
    stored = Path(heads["checkpoint_path"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == heads["checkpoint_sha256"]
    probe = shown["stages"]
    assert probe["extra"]["hf_checkpoint"]["sha256"] == heads["extra"]["hf_checkpoint"]["sha256"]
    assert probe["extra"]["boundaries"] == [1, 3, 4]
