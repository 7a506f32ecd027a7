"""PoE per-stage-head LM: aggregate, KV cache, self-speculative decoding, routing, formulas."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from docketml.runners.jobs.poe import generate_corpus, split_corpus, train
from docketml.runners.models.poe import (
    BOS,
    CONFIGS,
    PoEConfig,
    PoELM,
    count_parameters,
    get_config,
    load_checkpoint,
    parameter_breakdown,
    poe_log_probs,
    save_checkpoint,
)
from docketml.runners.models.poe_decode import (
    greedy_decode,
    routing_at_cap,
    routing_projected_speedup,
    speculative_decode,
    speculative_projected_speedup,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _untrained(seed: int = 0, cfg: PoEConfig | None = None) -> PoELM:
    """A random tiny model whose per-stage heads are non-zero (so the stages really differ)."""
    torch.manual_seed(seed)
    model = PoELM(cfg or get_config("tiny")).eval()
    with torch.no_grad():
        for head in model.stage_heads:
            head.weight.normal_(0.0, 0.05)
    return model


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[BOS, *(rng.randrange(256) for _ in range(rng.randint(1, 24)))] for _ in range(n)]


@pytest.fixture(scope="module")
def trained() -> tuple[PoELM, list[float], bytes]:
    """A tiny PoE trained briefly on the generated English-like corpus."""
    torch.set_num_threads(1)
    train_data, held_out = split_corpus(generate_corpus(200_000))
    model, losses = train(
        get_config("tiny"), train_data, steps=150, batch_size=8, seq_len=64, lr=5e-3, seed=0
    )
    return model, losses, held_out


# ------------------------------------------------------------------------------ architecture


def test_count_parameters_matches_allocated_modules() -> None:
    gqa = PoEConfig(layout=(3, 2), n_embd=48, n_head=6, n_kv_head=2, mlp_hidden=80)
    for cfg in (CONFIGS["tiny"], CONFIGS["small"], gqa):
        assert count_parameters(cfg) == sum(p.numel() for p in PoELM(cfg).parameters())


def test_cognica_layout_config_reproduces_card_trunk_size() -> None:
    cfg = CONFIGS["cognica-3b-layout"]
    assert cfg.layout == (16, 6, 5, 5) and cfg.n_layer == 32
    assert cfg.depth_fraction(1) == 0.5
    parts = parameter_breakdown(cfg)
    # the card: "2.08B transformer trunk" (depth 32, d 2048, GQA 16/8 heads, relu^2 MLP 12800)
    assert parts["trunk"] == 2_080_374_784
    assert parts["stage_heads"] == 4 * 257 * 2048


def test_layout_defines_stage_boundaries() -> None:
    cfg = get_config("tiny", layout=(3, 1, 2))
    model = PoELM(cfg)
    logits = model.forward_stages(torch.tensor([[BOS, 1, 2]]))
    assert logits.shape == (3, 1, 3, 257)
    assert cfg.depth_fraction(1) == 0.5 and cfg.depth_fraction(2) == 4 / 6
    with pytest.raises(ValueError, match="layout"):
        PoEConfig(layout=(2, 0))


def test_poe_aggregate_is_normalised_and_matches_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2, 5, 11, generator=gen, dtype=torch.float64) * 3
    ref = np.zeros((4, 2, 5, 11))
    for n in range(1, 5):
        for b in range(2):
            for t in range(5):
                log_ps = []
                for k in range(n):
                    z = logits[k, b, t].numpy()
                    log_ps.append(z - math.log(sum(math.exp(v) for v in z)))
                mean = sum(log_ps) / n
                ref[n - 1, b, t] = mean - math.log(sum(math.exp(v) for v in mean))
    for n in range(1, 5):
        got = poe_log_probs(logits, n).double()
        np.testing.assert_allclose(got.numpy(), ref[n - 1], atol=1e-6)
        np.testing.assert_allclose(got.exp().sum(-1).numpy(), 1.0, atol=1e-6)
    # one stage: the aggregate is that stage's own distribution
    torch.testing.assert_close(poe_log_probs(logits, 1), torch.log_softmax(logits[0].float(), -1))


def test_per_stage_logits_are_shared_plus_stage_head() -> None:
    model = _untrained(1)
    idx = torch.tensor([[BOS, 72, 105]])
    logits = model.forward_stages(idx)
    x = model.wte(idx)
    layer = 0
    for k, n_layers in enumerate(model.cfg.layout):
        for _ in range(n_layers):
            x = model.blocks[layer](x, model.cos[:3], model.sin[:3], None, layer, 0)
            layer += 1
        h = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + model.cfg.norm_eps)
        expected = h @ model.lm_head.weight.T + h @ model.stage_heads[k].weight.T
        torch.testing.assert_close(logits[k], expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- KV cache


def test_cached_partial_stages_then_catch_up_matches_full_forward() -> None:
    model = _untrained(2)
    idx = torch.tensor([[BOS, *range(60, 80)]])
    reference = model.forward_stages(idx)
    with torch.inference_mode():
        cache = model.new_cache(1, 32)
        out = [model.forward_stages(idx[:, :8], cache=cache, start=0)]
        residuals, stage0 = [], []
        for pos in range(8, 14):  # stage 0 alone, one token at a time
            x, (l0,) = model.run_stages(model.embed(idx[:, pos : pos + 1]), 0, 1, cache, pos)
            residuals.append(x)
            stage0.append(l0)
        assert cache.lengths[:2] == [14, 14] and cache.lengths[2:] == [8, 8, 8]
        _, deeper = model.run_stages(torch.cat(residuals, 1), 1, 4, cache, start=8)
        out.append(torch.stack([torch.cat(stage0, 1), *deeper]))
        assert cache.lengths == [14] * 5
        out.append(model.forward_stages(idx[:, 14:], cache=cache, start=14))
    torch.testing.assert_close(torch.cat(out, dim=2), reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="fewer than start"):
        model.forward_stages(idx[:, :1], cache=model.new_cache(1, 32), start=3)


def test_kv_cache_greedy_equals_no_cache_greedy() -> None:
    model = _untrained(4)
    for prompt in _prompts(8, seed=1):
        assert greedy_decode(model, prompt, 24, use_cache=True) == greedy_decode(
            model, prompt, 24, use_cache=False
        )


def test_kv_cache_rollback_forgets_positions() -> None:
    model = _untrained(5)
    idx = torch.tensor([[BOS, 10, 11, 12, 13]])
    with torch.inference_mode():
        cache = model.new_cache(1, 16)
        model.forward_stages(idx, cache=cache, start=0)
        model.forward_stages(torch.tensor([[99, 98]]), cache=cache, start=5)  # to be rejected
        cache.truncate(5)
        assert cache.lengths == [5] * 5
        got = model.forward_stages(torch.tensor([[14]]), cache=cache, start=5)
    full = model.forward_stages(torch.tensor([[BOS, 10, 11, 12, 13, 14]]))[:, :, -1:]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- speculative decoding


@pytest.mark.parametrize(("k_draft", "n_prompts"), [(4, 50), (1, 10), (2, 10)])
def test_speculative_identical_to_greedy_untrained(k_draft: int, n_prompts: int) -> None:
    model = _untrained(6)
    proposed = accepted = 0
    for prompt in _prompts(n_prompts, seed=k_draft):
        spec, stats = speculative_decode(model, prompt, 16, k_draft)
        assert spec == greedy_decode(model, prompt, 16)
        assert stats.emitted == 15 and stats.accepted <= stats.proposed
        proposed, accepted = proposed + stats.proposed, accepted + stats.accepted
    assert accepted / proposed < 0.5  # random stages disagree: most drafts are rejected


@pytest.mark.slow
def test_speculative_identical_to_greedy_trained(trained) -> None:
    model, _, held_out = trained
    rng = random.Random(7)
    proposed = accepted = rounds = emitted = 0
    for _ in range(50):
        start = rng.randrange(len(held_out) - 40)
        prompt = [BOS, *held_out[start : start + rng.randint(4, 32)]]
        spec, stats = speculative_decode(model, prompt, 32, 4)
        assert spec == greedy_decode(model, prompt, 32)
        proposed, accepted = proposed + stats.proposed, accepted + stats.accepted
        rounds, emitted = rounds + stats.rounds, emitted + stats.emitted
    alpha = accepted / proposed
    assert alpha > 0.6  # trained stages agree on most greedy tokens
    assert emitted / rounds == pytest.approx(1 + accepted / rounds)


@pytest.mark.slow
def test_training_lowers_loss(trained) -> None:
    _, losses, _ = trained
    assert losses[0] > 5.0  # ~ln(257) at init
    assert sum(losses[-10:]) / 10 < 0.6 * losses[0]


def test_stop_grad_at_boundaries_blocks_gradient_into_earlier_stages() -> None:
    model = _untrained(8)
    idx = torch.tensor([[BOS, 5, 6, 7, 8, 9]])
    targets = torch.tensor([[5, 6, 7, 8, 9, 10]])
    stage0_params = [model.wte.weight, *model.blocks[0].parameters(), *model.blocks[1].parameters()]
    for stop in (True, False):
        model.zero_grad(set_to_none=True)
        logits = model.forward_stages(idx, stop_grad_at_boundaries=stop)
        torch.nn.functional.cross_entropy(logits[1, 0], targets[0]).backward()  # stage-1 loss
        norms = [0.0 if p.grad is None else float(p.grad.abs().sum()) for p in stage0_params]
        stage1_grad = float(model.blocks[2].mlp.fc.weight.grad.abs().sum())
        assert stage1_grad > 0
        if stop:
            assert all(n == 0.0 for n in norms)
        else:
            assert all(n > 0.0 for n in norms)
    loss, per_stage = model.loss(idx, targets, stop_grad_at_boundaries=True)
    torch.testing.assert_close(loss, per_stage.mean())


# ------------------------------------------------------------------------ formulas / routing


def test_speculative_projected_speedup_matches_card() -> None:
    # card: alpha 0.9852, m = 4 drafts, stage 0 = 16/32 layers -> 1.61x end-to-end
    assert speculative_projected_speedup(0.9852, 4, 0.5) == pytest.approx(1.61, abs=0.01)
    assert speculative_projected_speedup(1.0, 4, 0.5) == pytest.approx(5 / 3)
    assert speculative_projected_speedup(0.0, 4, 0.5) == pytest.approx(1 / 3)


def test_routing_projected_speedup_formula() -> None:
    assert routing_projected_speedup(0.0, 0.5) == 1.0
    assert routing_projected_speedup(1.0, 0.5) == 2.0
    assert routing_projected_speedup(0.5, 0.5) == pytest.approx(1 / 0.75)


def test_routing_at_cap_constructed_example() -> None:
    # positions by descending stage-0 confidence: stage 0 right, right, wrong, right, wrong
    conf = torch.tensor([0.2, 0.9, 0.5, 0.8, 0.6])  # order: idx 1, 3, 4, 2, 0
    correct0 = torch.tensor([0, 1, 1, 1, 0])
    correct_full = torch.tensor([1, 1, 1, 1, 1])
    # routing n: loss = (#stage-0 misses among the n most confident) / 5
    # n=0,1,2 -> 0; n=3 (adds idx 4, wrong) -> 0.2; n=4 (idx 2 right) -> 0.2; n=5 -> 0.4
    res = routing_at_cap(conf, correct0, correct_full, cap=0.0, d0=0.5)
    assert res.n_routed == 2 and res.routed_fraction == 0.4
    assert res.projected_speedup == pytest.approx(1 / (0.4 * 0.5 + 0.6))
    res = routing_at_cap(conf, correct0, correct_full, cap=0.2, d0=0.5)
    assert res.n_routed == 4 and res.acc_mixed == pytest.approx(0.8)
    assert routing_at_cap(conf, correct0, correct_full, cap=1.0, d0=0.5).routed_fraction == 1.0
    # stage 0 better than the full model on a position: routing it gains accuracy (loss < 0)
    res = routing_at_cap(conf, correct0, torch.tensor([1, 0, 1, 1, 1]), cap=0.0, d0=0.25)
    # n=1,2 -> loss -0.2; n=3,4 -> 0; n=5 -> 0.2
    assert res.n_routed == 4 and res.acc_mixed == pytest.approx(0.8)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_and_mismatch_errors(tmp_path: Path) -> None:
    model = _untrained(9)
    path = save_checkpoint(model, tmp_path / "a.pt", step=7)
    loaded, step = load_checkpoint(path)
    assert step == 7 and loaded.cfg == model.cfg
    idx = torch.tensor([[BOS, 1, 2, 3]])
    torch.testing.assert_close(loaded.forward_stages(idx), model.forward_stages(idx))

    payload = torch.load(path, weights_only=True)
    payload["config"]["layout"] = [2, 1, 1]  # a stage fewer than the weights
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"b\.pt.*unexpected=.*stage_heads\.3"):
        load_checkpoint(tmp_path / "b.pt")

    payload = torch.load(path, weights_only=True)
    payload["config"]["n_embd"] = 32
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_checkpoint(tmp_path / "c.pt")

    torch.save({"state_dict": {}}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="not a docket-poe-v1 checkpoint"):
        load_checkpoint(tmp_path / "d.pt")
