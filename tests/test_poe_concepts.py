"""KV-cache identity and concept tracking (``poe_kv_identity``, ``poe_concepts``, per checkpoint
in ``poe_trajectory``), and ``poe_routing`` / ``poe_trajectory`` on ``hf:`` decoders.

Independent references: transformers' own ``generate(do_sample=False)`` with and without its KV
cache for ``hf:`` models; a numpy PoE argmax over a full re-forward for the built-in model; the
routing at cap recomputed from the model's ``output_hidden_states``."""

from __future__ import annotations

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

from docketml.runners.context import JobContext, JobResult, KnobAudit  # noqa: E402
from docketml.runners.jobs.poe import JOBS as POE_JOBS  # noqa: E402
from docketml.runners.jobs.poe import _corpus_split  # noqa: E402
from docketml.runners.jobs.poe_card_params import hf_checkpoint_dirs  # noqa: E402
from docketml.runners.jobs.poe_concepts import JOBS as CONCEPT_JOBS  # noqa: E402
from docketml.runners.models.concepts import parse_concepts  # noqa: E402
from docketml.runners.models.greedy_checks import first_divergence  # noqa: E402
from docketml.runners.models.hf import HFModelError  # noqa: E402
from docketml.runners.models.poe import BOS, PoELM, get_config, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
JOBS = {**POE_JOBS, **CONCEPT_JOBS}

SMALL = dict(
    vocab_size=260,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
PROMPTS = ["The quiet river", "A small child opened", "Every doctor", "Some old boat"]


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


def _llama(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _llama(tmp_path_factory.mktemp("concepts") / "llama", 0)


def _generate(path: Path, prompt: list[int], n: int, use_cache: bool) -> list[int]:
    model = transformers.LlamaForCausalLM.from_pretrained(path, local_files_only=True).eval()
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=n,
        do_sample=False,
        use_cache=use_cache,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


def _text(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def test_first_divergence_and_concept_parsing() -> None:
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    [c] = parse_concepts([{"prompt": "The day after Saturday is", "expect": "Sunday"}], "j")
    assert (c.id, c.grade(" Sunday."), c.grade(" sunday")) == ("c000", 1, 0)
    for bad, field in (
        ([], "'concepts'"),
        ([{"prompt": "", "expect": "x"}], r"'concepts\[0\].prompt'"),
        ([{"prompt": "p", "expect": []}], r"'concepts\[0\].expect'"),
        ([{"prompt": "p", "expect": "x", "id": "a"}, {"prompt": "q", "expect": "y", "id": "a"}],
         r"'concepts\[1\].id' 'a' is used twice"),
        ([{"prompt": "p", "expect": "x", "colour": 1}], r"'concepts\[0\]' must be a mapping"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=f"job 'j': field {field}"):
            parse_concepts(bad, "job 'j'")


def test_hf_kv_identity_matches_transformers_generate_with_and_without_cache(
    ckpt: Path, tmp_path: Path
) -> None:
    n = 12
    params = {"model": f"hf:{ckpt}", "prompts": PROMPTS, "max_new_tokens": n}
    res, ctx = run_job("poe_kv_identity", tmp_path, params)
    assert ctx.knobs.silent_noops() == []
    obs = {(o.item, o.signal): o.value for o in res.observations}
    identical = 0
    for i, prompt in enumerate(PROMPTS):
        ids = list(prompt.encode())
        cached, plain = _generate(ckpt, ids, n, True), _generate(ckpt, ids, n, False)
        div = first_divergence(cached, plain)
        identical += div is None
        assert obs[(f"p{i:03d}", "kv_identical")] == float(div is None)
        assert obs[(f"p{i:03d}", "kv_first_divergence")] == (n if div is None else div)
        assert res.texts[f"p{i:03d}"] == prompt + "|" + _text(cached)
    got = {m.name: m.value for m in res.metrics}
    assert got["kv_identical_rate"] == identical / len(PROMPTS)
    assert res.extra["hf_checkpoint"]["path"] == str(ckpt)


def test_builtin_kv_identity_matches_a_numpy_full_reforward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PoELM(get_config("tiny")).eval()
    for head in model.stage_heads:  # non-trivial stage heads so the PoE differs from stage 0
        torch.nn.init.normal_(head.weight, std=0.2)
    path = save_checkpoint(model, tmp_path / "final.pt", 7)
    n = 10
    res, ctx = run_job(
        "poe_kv_identity", tmp_path, {"prompts": PROMPTS, "max_new_tokens": n}, {"t": path}
    )
    assert ctx.knobs.silent_noops() == []
    for i, prompt in enumerate(PROMPTS):
        ids = [BOS, *prompt.encode()]
        ref: list[int] = []
        for _ in range(n):  # independent: full re-forward, numpy log-softmax mean over stages
            with torch.no_grad():
                z = model.forward_stages(torch.tensor([ids]))[:, 0, -1].double().numpy()
            lp = z - z.max(-1, keepdims=True)
            lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
            tok = int(lp.mean(0).argmax())
            ref.append(tok)
            ids.append(tok)
        assert res.texts[f"p{i:03d}"] == prompt + "|" + _text(ref)
    got = {m.name: m.value for m in res.metrics}
    assert got["kv_identical_rate"] == 1.0 and got["kv_first_divergence_min"] == n
    assert res.extra["step"] == 7
    # poe_concepts on the same checkpoint grades the same greedy continuations
    first = res.texts["p000"].split("|", 1)[1]
    concepts = [
        {"id": "hit", "prompt": PROMPTS[0], "expect": first[2:5] or first},
        {"id": "miss", "prompt": PROMPTS[0], "expect": first + "\u2603"},
    ]
    con, cctx = run_job(
        "poe_concepts", tmp_path, {"concepts": concepts, "max_new_tokens": n}, {"t": path}
    )
    assert cctx.knobs.silent_noops() == []
    assert {o.item: o.value for o in con.observations} == {"hit": 1.0, "miss": 0.0}
    assert con.texts["hit"] == res.texts["p000"]


def test_hf_concepts_graded_against_generate(ckpt: Path, tmp_path: Path) -> None:
    n = 8
    texts = {p: _text(_generate(ckpt, list(p.encode()), n, True)) for p in PROMPTS[:2]}
    hit = next(s for s in (texts[PROMPTS[0]][1:3], texts[PROMPTS[0]][:2]) if s.strip())
    concepts = [
        {"id": "hit", "prompt": PROMPTS[0], "expect": [hit]},
        {"id": "miss", "prompt": PROMPTS[1], "expect": "\u2603 never"},
    ]
    params = {"model": f"hf:{ckpt}", "concepts": concepts, "max_new_tokens": n}
    res, ctx = run_job("poe_concepts", tmp_path, params)
    assert ctx.knobs.silent_noops() == []
    obs = {(o.group, o.item, o.signal): o.value for o in res.observations}
    assert obs == {
        ("concepts", "hit", "concept_hit"): 1.0,
        ("concepts", "miss", "concept_hit"): 0.0,
    }
    assert res.texts == {
        "hit": f"{PROMPTS[0]}|{texts[PROMPTS[0]]}",
        "miss": f"{PROMPTS[1]}|{texts[PROMPTS[1]]}",
    }
    got = {m.name: m.value for m in res.metrics}
    assert got == {"concept_accuracy": 0.5, "concept_hits": 1.0}


def _routing_reference(path: Path, boundaries: list[int], n_eval: int, cap: float) -> float:
    """Routed fraction recomputed from output_hidden_states (one window, byte tokens)."""
    model = transformers.LlamaForCausalLM.from_pretrained(path, local_files_only=True).eval()
    ids = list(_corpus_split()[1][:n_eval])
    with torch.no_grad():
        hs = model(torch.tensor([ids[:-1]]), output_hidden_states=True).hidden_states
        lps = []
        for b in boundaries:
            x = hs[b] if b == len(hs) - 1 else model.model.norm(hs[b])
            lps.append(torch.log_softmax(model.lm_head(x)[0].double(), -1).numpy())
    tgt = np.array(ids[1:])
    a = np.mean(lps, axis=0)
    full = (a.argmax(-1) == tgt).astype(float)
    s0 = (lps[0].argmax(-1) == tgt).astype(float)
    conf = np.exp(lps[0]).max(-1)
    order = np.argsort(-conf, kind="stable")
    best = 0
    for k in range(len(tgt) + 1):
        mixed = s0[order[:k]].sum() + full[order[k:]].sum()
        if full.mean() - mixed / len(tgt) <= cap + 1e-12:
            best = k
    return best / len(tgt)


def test_hf_routing_at_cap_matches_an_independent_computation(ckpt: Path, tmp_path: Path) -> None:
    boundaries, n_eval = [1, 3, 4], 300
    for cap in (0.0, 0.05):
        params = {
            "model": f"hf:{ckpt}",
            "boundaries": boundaries,
            "eval_bytes": n_eval,
            "seq_len": 512,
            "cap": cap,
        }
        res, ctx = run_job("poe_routing", tmp_path, params)
        got = {m.name: m.value for m in res.metrics}
        assert got["routed_fraction"] == pytest.approx(
            _routing_reference(ckpt, boundaries, n_eval, cap), abs=1e-12
        )
        f, d0 = got["routed_fraction"], boundaries[0] / SMALL["num_hidden_layers"]
        assert got["routing_projected_speedup"] == pytest.approx(1 / (f * d0 + 1 - f))
        assert ctx.knobs.silent_noops() == []


def test_hf_trajectory_over_a_directory_of_checkpoints(ckpt: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    _llama(root / "checkpoint-20", 1)
    _llama(root / "checkpoint-3", 2)
    (root / "notes").mkdir()
    (root / "step-5").mkdir()  # no config.json: not a checkpoint
    assert [s for s, _ in hf_checkpoint_dirs(root)] == [3, 20]
    concepts = [{"id": "day", "prompt": "The day after Saturday is", "expect": "Sunday"}]
    params = {
        "model": f"hf:{root}",
        "boundaries": [2, 4],
        "eval_bytes": 300,
        "seq_len": 64,
        "n_prompts": 2,
        "max_new_tokens": 6,
        "concepts": concepts,
        "concept_max_new_tokens": 6,
    }
    res, ctx = run_job("poe_trajectory", tmp_path / "art", params)
    assert ctx.knobs.silent_noops() == []
    by = {(m.name, m.step): m.value for m in res.metrics}
    for step in (3, 20):
        probe, _ = run_job(
            "poe_probe",
            tmp_path / f"p{step}",
            {"model": f"hf:{root}/checkpoint-{step}", "boundaries": [2, 4], "eval_bytes": 300,
             "seq_len": 64},
        )  # fmt: skip
        ref = {m.name: m.value for m in probe.metrics}
        assert by[("bpb_full", step)] == pytest.approx(ref["bpb_full"], rel=1e-9)
        assert by[("acc_stage0", step)] == pytest.approx(ref["acc_stage0"], rel=1e-9)
        for name in ("identical_rate", "kv_identical_rate", "concept_accuracy", "routed_fraction"):
            assert (name, step) in by
        text = res.texts[f"day@{step:05d}"]
        hit = [o.value for o in res.observations if o.item == f"day@{step:05d}"]
        assert hit == [float("Sunday" in text.split("|", 1)[1])]
        assert by[("concept_accuracy", step)] == hit[0]
    assert {o.group for o in res.observations} == {"step-00003", "step-00020"}
    assert [c["step"] for c in res.extra["checkpoints"]] == [3, 20]

    (root / "step-3").mkdir()
    (root / "step-3" / "config.json").write_text("{}")
    with pytest.raises(HFModelError, match=r"more than one checkpoint directory for steps \[3\]"):
        run_job("poe_trajectory", tmp_path / "art2", params)
    with pytest.raises(HFModelError, match="neither a checkpoint"):
        run_job("poe_trajectory", tmp_path / "art3", {**params, "model": f"hf:{root}/notes"})


def test_builtin_trajectory_records_kv_identity_and_concepts_per_checkpoint(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    ckpt_dir = tmp_path / "checkpoints"
    for step in (5, 10):
        save_checkpoint(PoELM(get_config("tiny")), ckpt_dir / f"step-{step:05d}.pt", step)
    final = save_checkpoint(PoELM(get_config("tiny")), tmp_path / "final.pt", 10)
    concepts = [
        {"id": "a", "prompt": "The", "expect": " "},
        {"id": "b", "prompt": "A", "expect": "zq"},
    ]
    params = {
        "eval_bytes": 512,
        "n_prompts": 2,
        "max_new_tokens": 6,
        "concepts": concepts,
        "concept_max_new_tokens": 5,
    }
    res, ctx = run_job("poe_trajectory", tmp_path / "art", params, {"train": final})
    assert ctx.knobs.silent_noops() == []
    for name in ("kv_identical_rate", "kv_first_divergence_min", "concept_accuracy", "bpb_full"):
        assert [m.step for m in res.metrics if m.name == name] == [5, 10], name
    for step in (5, 10):
        hits = {
            o.item: o.value
            for o in res.observations
            if o.signal == "concept_hit" and o.group == f"step-{step:05d}"
        }
        for cid, expect in (("a", " "), ("b", "zq")):
            continuation = res.texts[f"{cid}@{step:05d}"].split("|", 1)[1]
            assert hits[f"{cid}@{step:05d}"] == float(expect in continuation)
        acc = next(m.value for m in res.metrics if m.name == "concept_accuracy" and m.step == step)
        assert acc == sum(hits.values()) / 2
    kv = [o for o in res.observations if o.signal == "kv_identical"]
    assert len(kv) == 4 and all(o.value == 1.0 for o in kv)


def test_preflight_checks_concepts_and_checkpoint_directories(ckpt: Path, tmp_path: Path) -> None:
    from docketml.protocols.schema import JobSpec
    from docketml.runners.jobs.preflight import model_checks

    bad = JobSpec(name="c", kind="poe_concepts", params={"concepts": [{"prompt": "p"}]})
    [(subject, problem)] = model_checks(bad)
    assert subject == "concepts" and problem is not None
    assert "job 'c': field 'concepts[0].expect'" in problem
    bad = JobSpec(name="k", kind="poe_kv_identity", params={"prompts": ["ok", ""]})
    assert model_checks(bad) == [
        ("prompts", "job 'k': field 'prompts[1]' must be a non-empty string")
    ]
    root = tmp_path / "run"
    _llama(root / "checkpoint-1", 1)
    _llama(root / "checkpoint-2", 2)
    traj = JobSpec(
        name="t", kind="poe_trajectory", params={"model": f"hf:{root}", "boundaries": [2, 4]}
    )
    assert model_checks(traj) == [(f"hf:{root}", None)]
    wide = JobSpec(name="t", kind="poe_trajectory", params={**traj.params, "boundaries": [2, 9]})
    [(_, problem)] = model_checks(wide)
    assert problem is not None and "field 'boundaries'" in problem
    (root / "notes").mkdir()
    empty = JobSpec(
        name="t", kind="poe_trajectory", params={**traj.params, "model": f"hf:{root / 'notes'}"}
    )
    [(_, problem)] = model_checks(empty)
    assert problem is not None and "neither a checkpoint" in problem
