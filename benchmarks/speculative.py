"""Tokens/s of plain greedy PoE decoding (KV cache) vs self-speculative decoding, same run.

Usage::

    python benchmarks/speculative.py                      # trains the 'small' PoE first
    python benchmarks/speculative.py --checkpoint PATH    # reuse a docket-poe-v1 checkpoint

Setting: batch 1, ``torch.inference_mode``, ``--threads`` intra-op threads (1 by default: for a
model this small one thread is fastest and least disturbed by other processes), the same held-out
prompts for both decoders, plain and speculative alternating first per prompt after one warm-up.
The 'small' model has the card's asymmetric shape scaled down, layout (4, 2, 1, 1): stage 0 is
half of the 8 layers (d0 = 0.5). At this size a forward step is dominated by per-layer dispatch
overhead, so a (k+1)-token verify pass costs about what a one-token step costs, which is the
regime where speculation can win on a CPU. Prints tokens/s of both decoders, the speedup ratio,
acceptance alpha, tokens per round, the identity rate and the Leviathan projection
``E / (k * d0 + 1)``; exits 1 if any speculative output differs from plain greedy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from docketml.runners.jobs.poe import (
    held_out_prompts,
    load_corpus,
    split_corpus,
    train,
)  # noqa: E402
from docketml.runners.models.poe import (
    PoELM,
    get_config,
    load_checkpoint,
    poe_log_probs,
    save_checkpoint,
)
from docketml.runners.models.poe_decode import (
    compare_decoding,
    speculative_projected_speedup,
)  # noqa: E402


@torch.inference_mode()
def step_costs(model: PoELM, prompt: list[int], k: int, repeats: int = 200) -> dict[str, float]:
    """Median seconds of the three kinds of forward call the decoders make (after ``prompt``):
    a plain greedy step (1 token, all stages, PoE aggregate, argmax), a stage-0 draft step
    (1 token, stage-0 layers and head, argmax) and a verify catch-up (deeper stages on k+1
    positions from stage-0 residuals, PoE aggregate over k+1 positions)."""
    n = len(prompt)
    cache = model.new_cache(1, n + k + 1)
    ids = torch.tensor([prompt])
    model.forward_stages(ids, cache=cache, start=0)
    one = torch.tensor([[prompt[-1]]])
    x0, (l0,) = model.run_stages(model.embed(torch.tensor([prompt[-k - 1 :]])), 0, 1, cache, n)

    def plain() -> None:
        int(poe_log_probs(model.forward_stages(one, cache=cache, start=n)[:, :, -1]).argmax(-1))

    def draft() -> None:
        int(model.run_stages(model.embed(one), 0, 1, cache, n)[1][0][0, -1].argmax(-1))

    def verify() -> None:
        _, deeper = model.run_stages(x0, 1, model.cfg.n_stages, cache, n)
        poe_log_probs(torch.stack([l0, *deeper]))[0].argmax(-1).tolist()

    out = {}
    for name, fn in (("plain_step", plain), ("draft_step", draft), ("verify_catch_up", verify)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = sorted(times)[len(times) // 2]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="reuse this checkpoint instead of training")
    parser.add_argument("--model", default="small", help="config to train (default: small)")
    parser.add_argument("--n-embd", type=int, help="override the width (MLP hidden = 4x)")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--save", type=Path, help="write the trained checkpoint here")
    parser.add_argument("--k", type=int, default=4, help="drafted tokens per round")
    parser.add_argument("--n-prompts", type=int, default=20)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train_data, held_out = split_corpus(load_corpus())
    if args.checkpoint:
        model, step = load_checkpoint(args.checkpoint)
        print(f"checkpoint {args.checkpoint} (step {step})")
    else:
        cfg = get_config(args.model)
        if args.n_embd:
            cfg = get_config(args.model, n_embd=args.n_embd, mlp_hidden=4 * args.n_embd)
        t0 = time.perf_counter()
        model, losses = train(
            cfg, train_data, args.steps, args.batch_size, args.seq_len, args.lr, seed=args.seed
        )
        print(
            f"trained {args.model} layout={cfg.layout} d={cfg.n_embd} for {args.steps} steps in "
            f"{time.perf_counter() - t0:.1f}s: loss {losses[0]:.3f} -> "
            f"{sum(losses[-20:]) / len(losses[-20:]):.3f}"
        )
        if args.save:
            save_checkpoint(model, args.save, args.steps)
    cfg = model.cfg
    d0 = cfg.depth_fraction(1)
    prompts = held_out_prompts(held_out, args.n_prompts, args.prompt_len, args.seed)
    compare_decoding(model, prompts[0], args.max_new_tokens, args.k)  # warm-up
    results = [
        compare_decoding(model, p, args.max_new_tokens, args.k, spec_first=bool(i % 2))
        for i, p in enumerate(prompts)
    ]
    n_tokens = len(results) * args.max_new_tokens
    plain_s = sum(r.plain_s for r in results)
    spec_s = sum(r.spec_s for r in results)
    proposed = sum(r.stats.proposed for r in results)
    accepted = sum(r.stats.accepted for r in results)
    alpha = accepted / proposed
    rounds = sum(r.stats.rounds for r in results)
    emitted = sum(r.stats.emitted for r in results)
    identical = sum(r.identical for r in results)
    print(
        f"model layout={cfg.layout} d={cfg.n_embd} d0={d0:.3f} k={args.k} threads={args.threads} "
        f"prompts={len(results)} x {args.max_new_tokens} new tokens"
    )
    print(f"plain greedy (KV cache) : {n_tokens / plain_s:8.1f} tokens/s  ({plain_s:.2f}s)")
    print(f"self-speculative        : {n_tokens / spec_s:8.1f} tokens/s  ({spec_s:.2f}s)")
    print(f"speedup (plain/spec)    : {plain_s / spec_s:8.3f}x wall-clock")
    per_prompt = sorted(r.speedup for r in results)
    print(f"per-prompt speedup      : median {per_prompt[len(per_prompt) // 2]:.3f}x wall-clock")
    cpu = sum(r.plain_cpu_s for r in results) / sum(r.spec_cpu_s for r in results)
    print(f"speedup (plain/spec)    : {cpu:8.3f}x process CPU time")
    print(f"acceptance alpha        : {alpha:8.4f}  ({accepted}/{proposed} drafts)")
    print(f"tokens per round        : {emitted / rounds:8.3f}")
    proj = speculative_projected_speedup(alpha, args.k, d0)
    print(f"projected (Leviathan)   : {proj:8.3f}x  (iid acceptance, cost k*d0+1)")
    print(f"  with measured tokens/round: {emitted / rounds / (args.k * d0 + 1):.3f}x")
    costs = step_costs(model, prompts[0], args.k)
    round_cost = (args.k + 1) * costs["draft_step"] + costs["verify_catch_up"]
    print(
        f"step costs (median)     : plain {costs['plain_step'] * 1e3:.3f}ms, "
        f"draft {costs['draft_step'] * 1e3:.3f}ms (d0_eff "
        f"{costs['draft_step'] / costs['plain_step']:.3f}), verify catch-up "
        f"{costs['verify_catch_up'] * 1e3:.3f}ms"
    )
    print(
        f"  cost model from step costs and measured tokens/round: "
        f"{emitted / rounds * costs['plain_step'] / round_cost:.3f}x"
    )
    print(f"identical to greedy     : {identical}/{len(results)}")
    return 0 if identical == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
