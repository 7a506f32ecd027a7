"""``model: "hf:PATH"``: tiny Mixtral / Llama checkpoints saved with ``save_pretrained`` into a
temp dir, loaded offline, probed; router signals checked against numpy on the model's own
router logits, max-softmax against a no-cache re-forward of the whole prefix."""

from __future__ import annotations

import hashlib
import json
import os
import sys
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

from docketml.runners.context import JobContext, JobResult, KnobAudit  # noqa: E402
from docketml.runners.data import load_probe  # noqa: E402
from docketml.runners.jobs.routed import JOBS  # noqa: E402
from docketml.runners.models.hf import HFModelError, load_hf  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(
    vocab_size=260,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
N_EXPERTS = 4
MAX_NEW = 5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    moe = transformers.MixtralForCausalLM(
        transformers.MixtralConfig(**SMALL, num_local_experts=N_EXPERTS, num_experts_per_tok=2)
    )
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL))
    out = {"moe": root / "moe", "llama": root / "llama"}
    moe.save_pretrained(out["moe"])
    llama.save_pretrained(out["llama"])
    return out


def run_probe(tmp: Path, params: dict[str, Any]) -> tuple[JobResult, JobContext]:
    ctx = JobContext(
        job="probe_moe",
        kind="probe",
        params=params,
        seed=1,
        artifacts_dir=tmp,
        knobs=KnobAudit(params),
    )
    return JOBS["probe"](ctx), ctx


def _entropy_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return -(p * np.log(p)).sum(-1)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_moe_probe_signals_match_an_independent_computation(
    ckpts: dict[str, Path], tmp_path: Path, batch_size: int
) -> None:
    """One prompt at a time the job's signals equal numpy on the model's own router logits to
    1e-9 relative; batched (padding masked) to float32 rounding of a different batch shape."""
    params = {
        "model": f"hf:{ckpts['moe']}",
        "limit_per_group": 1,
        "max_new_tokens": MAX_NEW,
        "batch_size": batch_size,
    }
    tight = batch_size == 1

    def close(expected: float, rel: float) -> Any:
        return pytest.approx(expected, rel=rel) if tight else pytest.approx(expected, abs=1e-7)

    res, ctx = run_probe(tmp_path, params)
    rows = load_probe()
    seen: set[str] = set()
    firsts = [r for r in rows if not (r["group"] in seen or seen.add(r["group"]))]
    assert len(res.texts) == len(firsts)
    got = {(o.item, o.signal): o.value for o in res.observations}
    model = transformers.MixtralForCausalLM.from_pretrained(ckpts["moe"], local_files_only=True)
    model.eval()
    for row in firsts[:3]:
        tokens = list(row["prompt"].encode("utf-8"))  # byte fallback: no tokenizer files
        with torch.no_grad():
            out = model(torch.tensor([tokens]), output_router_logits=True)
        h = np.stack([_entropy_np(lg.double().numpy()) for lg in out.router_logits], axis=1)
        per_pos = h.mean(1)  # (T,)
        item = row["item"]
        assert got[(item, "router_entropy_mean")] == close(per_pos.mean(), 1e-9)
        assert got[(item, "router_entropy_var")] == close(per_pos.var(), 1e-6)
        for layer in range(2):
            assert got[(item, f"router_entropy_L{layer}")] == close(h[:, layer].mean(), 1e-6)
        conf = 1 - per_pos.mean() / np.log(N_EXPERTS)
        assert got[(item, "router_conf")] == close(conf, 1e-9)
        # max softmax over greedy tokens: naive loop re-forwarding the whole prefix (no cache)
        seq, maxp = list(tokens), []
        with torch.no_grad():
            for _ in range(MAX_NEW):
                logits = model(torch.tensor([seq])).logits[0, -1].double().numpy()
                p = np.exp(logits - logits.max())
                p /= p.sum()
                maxp.append(p.max())
                seq.append(int(p.argmax()))
        assert got[(item, "max_softmax_mean")] == pytest.approx(np.mean(maxp), rel=1e-5)
        assert got[(item, "max_softmax_last")] == pytest.approx(maxp[-1], rel=1e-5)
        assert res.texts[item] == bytes(t for t in seq[len(tokens) :] if t < 256).decode(
            "utf-8", errors="replace"
        )
    files = sorted(ckpts["moe"].glob("*.safetensors"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    assert res.extra["hf_checkpoint"]["sha256"] == digest.hexdigest()
    assert res.extra["hf_checkpoint"]["tokenizer"] == "bytes"
    assert {m.name for m in res.metrics} == {
        "coherence_bpb",
        "loop_rate",
        "refusal_rate",
        "failure_rate",
    }
    assert 0 < next(m.value for m in res.metrics if m.name == "coherence_bpb") < 20
    assert ctx.knobs.silent_noops(ignore={"model"}) == []


def test_dense_model_is_refused_for_router_signals(ckpts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(HFModelError) as err:
        run_probe(tmp_path, {"model": f"hf:{ckpts['llama']}", "limit_per_group": 1})
    assert str(ckpts["llama"]) in str(err.value) and "router logits" in str(err.value)


def test_missing_or_broken_checkpoints_are_refused(ckpts: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(HFModelError, match="no such local directory") as err:
        load_hf(f"hf:{missing}")
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HFModelError, match="no config.json") as err:
        load_hf(empty)
    assert str(empty) in str(err.value)
    vit = tmp_path / "vit"
    transformers.ViTConfig().save_pretrained(vit)
    with pytest.raises(HFModelError, match="not a causal LM"):
        load_hf(vit)
    remote = tmp_path / "remote"
    remote.mkdir()
    cfg = json.loads((ckpts["llama"] / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFModelError, match="trust_remote_code"):
        load_hf(remote)


def test_sha256_covers_the_weights(ckpts: dict[str, Path], tmp_path: Path) -> None:
    a = load_hf(ckpts["llama"])
    assert a.sha256 == load_hf(ckpts["llama"]).sha256
    assert a.sha256 != load_hf(ckpts["moe"]).sha256
    with torch.no_grad():
        a.model.model.embed_tokens.weight[0, 0] += 1.0
    a.model.save_pretrained(tmp_path / "edited")
    assert load_hf(tmp_path / "edited").sha256 != a.sha256


PROBE_PROTOCOL = """\
docket: 1
id: hf_probe
title: Router signals of a local MoE checkpoint
hypotheses:
  - {{id: H1, statement: the checkpoint is coherent, rule: r}}
decision_rules:
  r: {{kind: threshold, statistic: metric, metric: coherence_bpb, job: probe_moe, op: "<=",
      bound: 100.0}}
jobs:
  - {{name: probe_moe, kind: probe,
      params: {{model: "hf:{path}", limit_per_group: 1, max_new_tokens: 2}}}}
"""


def test_docket_run_checks_the_path_first_and_records_the_sha256(
    docket_sqlite, ckpts: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from test_costs import register_and_freeze

    moved = tmp_path / "moved"  # present at freeze, gone when the job starts
    shutil.copytree(ckpts["moe"], moved)
    pid = register_and_freeze(docket_sqlite, tmp_path, PROBE_PROTOCOL.format(path=moved))
    shutil.rmtree(moved)
    missing = moved
    refused = docket_sqlite("run", pid, "--no-progress")
    assert refused.exit_code == 2, refused.output
    assert str(missing) in refused.output and "Traceback" not in refused.output
    assert json.loads(docket_sqlite("runs", "list", "--json").output) == []
    text = PROBE_PROTOCOL.format(path=ckpts["moe"]).replace("id: hf_probe", "id: hf_probe2")
    pid = register_and_freeze(docket_sqlite, tmp_path, text, name="ok.yaml")
    ok = docket_sqlite("run", pid, "--no-progress")
    assert ok.exit_code == 0, ok.output
    runs = json.loads(docket_sqlite("runs", "list", "--json").output)
    assert [r["status"] for r in runs] == ["succeeded"], runs
    shown = json.loads(docket_sqlite("runs", "show", str(runs[0]["id"]), "--json").output)
    assert shown["extra"]["hf_checkpoint"]["sha256"] == load_hf(ckpts["moe"]).sha256
    assert shown["extra"]["hf_checkpoint"]["path"] == str(ckpts["moe"])


def test_without_the_hf_extra_the_error_names_it(
    ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from docketml.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "transformers", None)  # what an install without it gives
    with pytest.raises(MissingExtra, match=r"pip install 'docketml\[hf\]'"):
        load_hf(ckpts["moe"])


def _register(docket: Any, tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = docket("protocol", "register", str(path), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["id"]


def test_signcheck_and_freeze_check_the_checkpoint_first(
    docket_sqlite, ckpts: dict[str, Path], tmp_path: Path
) -> None:
    """What can be known before a run is refused at sign-check time, naming the path: a missing
    directory, and a dense model under a router-signal probe; an MoE checkpoint passes."""
    cases = {
        "gone": (tmp_path / "gone", "no such local directory"),
        "dense": (ckpts["llama"], "has no router logits"),
    }
    for name, (path, why) in cases.items():
        text = PROBE_PROTOCOL.format(path=path).replace("id: hf_probe", f"id: hf_{name}")
        pid = _register(docket_sqlite, tmp_path, text, f"{name}.yaml")
        checked = docket_sqlite("protocol", "signcheck", pid, "--json")
        report = json.loads(checked.output)
        inputs = [c for c in report["checks"] if c["check"] == "job input"]
        assert not report["passed"] and len(inputs) == 1 and not inputs[0]["passed"], report
        assert str(path) in inputs[0]["cause"] and why in inputs[0]["cause"], inputs
        frozen = docket_sqlite("protocol", "freeze", pid)
        assert frozen.exit_code == 1, frozen.output
        assert why in frozen.output and "Traceback" not in frozen.output
        shown = json.loads(docket_sqlite("protocol", "show", pid, "--json").output)
        assert shown["status"] != "frozen", shown
    text = PROBE_PROTOCOL.format(path=ckpts["moe"]).replace("id: hf_probe", "id: hf_ok")
    pid = _register(docket_sqlite, tmp_path, text, "ok.yaml")
    report = json.loads(docket_sqlite("protocol", "signcheck", pid, "--json").output)
    inputs = [c for c in report["checks"] if c["check"] == "job input"]
    assert report["passed"] and [c["passed"] for c in inputs] == [True], report


def test_batched_probe_equals_one_prompt_at_a_time(ckpts: dict[str, Path]) -> None:
    """Left padding is masked and positions count real tokens: every prompt of a batch of
    different lengths gets the tokens and (to float rounding) the signals it gets alone."""
    from docketml.runners.jobs.hf_probe import probe_batch, probe_prompt

    hf = load_hf(ckpts["moe"])
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 259, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 2, 12)]
    alone = [probe_prompt(hf, p, MAX_NEW) for p in prompts]
    together = probe_batch(hf, prompts, MAX_NEW)
    assert len(together) == len(prompts)
    for a, b in zip(alone, together, strict=True):
        assert a["tokens"] == b["tokens"]
        assert np.allclose(a["max_probs"], b["max_probs"], rtol=0, atol=1e-7)
        assert a["signals"].keys() == b["signals"].keys()
        for key, value in a["signals"].items():
            assert b["signals"][key] == pytest.approx(value, abs=1e-7), key
