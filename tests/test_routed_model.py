"""The routed byte-level LM: size, routing, sparsity, cached generation, groups, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from docketml.runners.data import chat_prompt, load_corpus
from docketml.runners.models.routed import (
    BASE_GROUPS,
    CONFIGS,
    EOS,
    RoutedConfig,
    RoutedLM,
    attention_valid,
    encode,
    generate,
    generate_naive,
    get_config,
    group_parameters,
    load_checkpoint,
    pad_batch,
    param_groups,
    resolve_groups,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    chat_prompt("What is the capital of France?"),
    chat_prompt("Which countries border Peru?"),
    "The capital of",
    "x",
    "Here is some background. " * 4,
]


@pytest.fixture(scope="module")
def tiny() -> RoutedLM:
    torch.manual_seed(0)
    return RoutedLM(get_config("tiny")).eval()


def test_tilelli_10m_parameter_count_within_2_percent_of_paper() -> None:
    model = RoutedLM(get_config("tilelli-10m"))
    n = model.num_parameters()
    assert n == 10_182_913  # the arithmetic in the module docstring
    assert abs(n - 10.2e6) / 10.2e6 < 0.02
    router = sum(p.numel() for p in group_parameters(model, "router").values())
    assert router == 6_144  # the receipts' "router (6,144 parameters)"


def test_named_configs_match_the_brief() -> None:
    cfg = get_config("tilelli-10m")
    assert (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.top_k, cfg.ffn_mult) == (256, 8, 8, 16, 4)
    assert cfg.block_size == 256 and cfg.conv_kernel == 5
    assert set(CONFIGS) == {"tiny", "tilelli-10m"}
    with pytest.raises(ValueError, match="unknown routed model"):
        get_config("huge")


def test_gate_rows_sum_to_one_and_shapes(tiny: RoutedLM) -> None:
    idx, mask = pad_batch([encode(p) for p in PROMPTS])
    out = tiny(idx, mask)
    b, t = idx.shape
    assert out.logits.shape == (b, t, tiny.cfg.vocab_size)
    assert out.gates.shape == (b, t, tiny.cfg.n_layer, 3)
    assert out.abstain_p.shape == (b, t)
    assert torch.allclose(out.gates.sum(-1), torch.ones(b, t, tiny.cfg.n_layer), atol=1e-6)
    assert bool(((out.abstain_p > 0) & (out.abstain_p < 1)).all())


def test_topk_attention_keeps_exactly_min_k_visible_keys() -> None:
    torch.manual_seed(1)
    cfg = RoutedConfig(d_model=32, n_layer=1, n_head=2, top_k=5)
    block = RoutedLM(cfg).blocks[0]
    h = torch.randn(3, 20, 32)
    lengths = [20, 13, 7]  # left padding: row i has lengths[i] real tokens
    mask = torch.zeros(3, 20, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, 20 - n :] = 1
    _, _, _, probs = block.sparse(h, attention_valid(mask))
    nonzero = (probs > 0).sum(-1)  # (B, H, T)
    for i, n in enumerate(lengths):
        for t in range(20 - n, 20):
            visible = t - (20 - n) + 1
            assert (nonzero[i, :, t] == min(cfg.top_k, visible)).all(), (i, t)
        # the kept keys are real (non-pad) tokens only
        assert float(probs[i, :, 20 - n :, : 20 - n].detach().sum()) == 0.0
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_padding_does_not_change_real_positions(tiny: RoutedLM) -> None:
    seqs = [encode(p) for p in PROMPTS]
    for padding in ("left", "right"):
        idx, mask = pad_batch(seqs, padding)
        out = tiny(idx, mask)
        for i, s in enumerate(seqs):
            alone = tiny(torch.tensor([s]))
            real = mask[i].bool()
            assert torch.allclose(out.logits[i][real], alone.logits[0], atol=1e-5)
            assert torch.allclose(out.gates[i][real], alone.gates[0], atol=1e-6)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_cached_greedy_generation_equals_naive_reforward(padding: str) -> None:
    """Exact token equality, in float64: in float32 a batched and a single-row matmul may differ
    in the last bit, which can flip top-k membership or the argmax at a near-tie."""
    torch.manual_seed(3)
    model = RoutedLM(get_config("tiny")).eval()
    with torch.no_grad():  # sharpen the random model so greedy paths are not near-ties
        model.lm_head.weight.mul_(20)
    model = model.double()
    prompts = [encode(p) for p in PROMPTS]
    cached = generate(model, prompts, max_new_tokens=24, padding=padding)
    for i, p in enumerate(prompts):
        tokens, max_probs = generate_naive(model, p, max_new_tokens=24)
        assert cached.tokens[i] == tokens, f"prompt {i}"
        assert cached.max_probs[i] == pytest.approx(max_probs, abs=1e-10)
        with torch.no_grad():
            alone = model(torch.tensor([p]))
        assert torch.allclose(cached.prompt_gates[i], alone.gates[0].float(), atol=1e-6)
        assert cached.abstain_p[i] == pytest.approx(float(alone.abstain_p[0, -1]), abs=1e-7)


def test_cached_generation_float32_signals_match_naive() -> None:
    torch.manual_seed(3)
    model = RoutedLM(get_config("tiny")).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    prompts = [encode(p) for p in PROMPTS]
    cached = generate(model, prompts, max_new_tokens=24)
    for i, p in enumerate(prompts):
        tokens, max_probs = generate_naive(model, p, max_new_tokens=24)
        pairs = zip(tokens, cached.tokens[i], strict=False)
        n = next((k for k, (a, b) in enumerate(pairs) if a != b), None)
        n = len(tokens) if n is None else n + 1  # compare up to (and including) a divergence
        assert cached.max_probs[i][:n] == pytest.approx(max_probs[:n], abs=1e-4)


def test_generation_stops_at_eos() -> None:
    torch.manual_seed(4)
    model = RoutedLM(get_config("tiny")).eval()
    with torch.no_grad():  # make EOS the argmax everywhere
        model.lm_head.weight.zero_()
        model.lm_head.weight[EOS] = 1.0
        model.norm_f.bias.fill_(1.0)
        model.norm_f.weight.zero_()
    gen = generate(model, [encode("hi"), encode("hello there")], max_new_tokens=10)
    assert gen.tokens == [[EOS], [EOS]]
    with pytest.raises(ValueError, match="block_size"):
        generate(model, [encode("x" * 250)], max_new_tokens=10)


@pytest.mark.slow
def test_training_a_few_steps_lowers_loss() -> None:
    torch.manual_seed(5)
    model = RoutedLM(get_config("tiny"))
    data = torch.tensor(list(load_corpus().encode("utf-8")[:60_000]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        starts = torch.randint(len(data) - 65, (8,), generator=gen).tolist()
        window = torch.stack([data[s : s + 65] for s in starts])
        logits = model(window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 259), window[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > math.log(200)  # ~uniform over 259 at init
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5


def test_param_groups_partition_and_aliases(tiny: RoutedLM) -> None:
    groups = param_groups(tiny)
    names = [n for n, _ in tiny.named_parameters()]
    flat = [n for g in BASE_GROUPS for n in groups[g]]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert all(".router." in n for n in groups["router"])
    assert len(groups["router"]) == tiny.cfg.n_layer
    assert groups["abstain"] == ["abstain.weight", "abstain.bias"]
    assert resolve_groups("blocks") == {"local", "sparse", "dense", "block_norms"}
    assert "router" not in resolve_groups(["blocks", "lm_head"])
    with pytest.raises(ValueError, match="unknown parameter group"):
        resolve_groups(["routers"])


def test_checkpoint_roundtrip_and_clear_mismatch_errors(tiny: RoutedLM, tmp_path: Path) -> None:
    path = save_checkpoint(tiny, tmp_path / "model.pt", {"job": "t"})
    loaded = load_checkpoint(path)
    for (n1, p1), (n2, p2) in zip(
        tiny.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)

    payload = torch.load(path, weights_only=True)
    state = payload["state_dict"]
    del state["abstain.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["lm_head.weight"] = torch.zeros(10, 64)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing keys ['abstain.bias']" in msg
    assert "unexpected keys ['extra.weight']" in msg
    assert "lm_head.weight: checkpoint (10, 64) vs model (259, 64)" in msg

    torch.save({"format": "other", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a docket-routed-v1 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["n_experts"] = 4
    torch.save(payload, tmp_path / "cfg.pt")
    with pytest.raises(ValueError, match="unknown RoutedConfig keys.*n_experts"):
        load_checkpoint(tmp_path / "cfg.pt")
