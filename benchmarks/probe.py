"""Benchmark: the 210-prompt probe on ``tilelli-10m`` (random weights), batched with the KV cache,
against a naive per-prompt loop that re-forwards the whole sequence for every new token.

Random weights, with the lm head scaled x20 so that greedy paths are not decided by float-level
ties between near-uniform logits (the cost is unchanged). Both paths compute every probe signal
(max-softmax over up to 48 greedy tokens, router entropies over prompt positions, abstain_p).
The naive loop is timed on a slice of the prompts (stratified: the same number from every
regime, so prompt lengths are representative) and scaled to 210; the output says so. Also
prints the tiny config's training throughput (bytes/s).

    python benchmarks/probe.py [--naive-slice 14] [--threads N] [--batch-size 32]

``--threads 1`` is the right setting on a shared / oversubscribed machine: with more busy
processes than cores, OpenMP intra-op threads spin and 2 threads run several times slower.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docketml.runners.data import GROUPS, load_corpus, load_probe  # noqa: E402
from docketml.runners.jobs.routed import prompt_signals  # noqa: E402
from docketml.runners.models.routed import RoutedLM, encode, generate, generate_naive, get_config

MAX_NEW = 48


def cached_probe(model: RoutedLM, prompts: list[list[int]], batch_size: int) -> list[dict]:
    """The probe job's generation path: length-sorted batches, one prefill + cached steps."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[dict] = [{} for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        gen = generate(model, [prompts[i] for i in chunk], MAX_NEW)
        for j, i in enumerate(chunk):
            probs = gen.max_probs[j]
            out[i] = {
                "tokens": gen.tokens[j],
                "max_softmax_mean": sum(probs) / len(probs),
                "max_softmax_last": probs[-1],
                **prompt_signals(gen.prompt_gates[j], model.cfg.n_layer),
                "abstain_p": gen.abstain_p[j],
            }
    return out


@torch.no_grad()
def naive_probe_one(model: RoutedLM, prompt: list[int]) -> dict:
    """Per prompt: a full forward for the prompt signals, then a full re-forward per token."""
    full = model(torch.tensor([prompt]))
    tokens, probs = generate_naive(model, prompt, MAX_NEW)
    return {
        "tokens": tokens,
        "max_softmax_mean": sum(probs) / len(probs),
        "max_softmax_last": probs[-1],
        **prompt_signals(full.gates[0], model.cfg.n_layer),
        "abstain_p": float(full.abstain_p[0, -1]),
    }


def float64_agrees(
    model: RoutedLM, prompts: list[list[int]], items: list[int], batch_size: int
) -> int:
    """Re-run cached (in the same batch as the probe) and naive generation in float64."""
    double = copy.deepcopy(model).double()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    agree = 0
    for i in items:
        pos = order.index(i)
        chunk = order[pos - pos % batch_size : pos - pos % batch_size + batch_size]
        gen = generate(double, [prompts[j] for j in chunk], MAX_NEW)
        agree += gen.tokens[chunk.index(i)] == generate_naive(double, prompts[i], MAX_NEW)[0]
    return agree


def training_throughput(steps: int = 20, batch_size: int = 16, seq_len: int = 128) -> float:
    """Bytes/s of AdamW training of the tiny config on corpus windows (after 3 warm-up steps)."""
    torch.manual_seed(0)
    model = RoutedLM(get_config("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    data = torch.tensor(list(load_corpus().encode("utf-8")))
    gen = torch.Generator().manual_seed(0)
    t0 = 0.0
    for step in range(steps + 3):
        if step == 3:
            t0 = time.perf_counter()
        starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=gen).tolist()
        window = torch.stack([data[s : s + seq_len + 1] for s in starts])
        logits = model(window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size * seq_len / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naive-slice", type=int, default=14, help="prompts timed naively")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    torch.manual_seed(0)
    model = RoutedLM(get_config("tilelli-10m")).eval()
    with torch.no_grad():  # random weights give near-uniform logits, where float-level argmax
        model.lm_head.weight.mul_(20)  # ties would make the equality check below meaningless
    rows = load_probe()
    prompts = [encode(r["prompt"]) for r in rows]
    mean_len = sum(map(len, prompts)) / len(prompts)
    print(
        f"tilelli-10m: {model.num_parameters():,} parameters, {len(prompts)} prompts, "
        f"{MAX_NEW} new tokens, mean prompt {mean_len:.0f} tokens"
    )

    t0 = time.perf_counter()
    cached = cached_probe(model, prompts, args.batch_size)
    cached_s = time.perf_counter() - t0
    n_tokens = sum(len(c["tokens"]) for c in cached)
    print(
        f"cached batched probe : {cached_s:8.1f} s for all {len(prompts)} prompts "
        f"({n_tokens} generated tokens, {n_tokens / cached_s:.0f} tok/s)"
    )

    per_group = max(1, args.naive_slice // len(GROUPS))
    slice_idx = [
        i for g in GROUPS for i in [j for j, r in enumerate(rows) if r["group"] == g][:per_group]
    ]
    t0 = time.perf_counter()
    naive = {i: naive_probe_one(model, prompts[i]) for i in slice_idx}
    naive_slice_s = time.perf_counter() - t0
    naive_s = naive_slice_s * len(prompts) / len(slice_idx)
    mismatched = [i for i in slice_idx if naive[i]["tokens"] != cached[i]["tokens"]]
    same = len(slice_idx) - len(mismatched)
    worst = max(
        abs(naive[i][k] - cached[i][k])
        for i in slice_idx
        for k in ("max_softmax_mean", "router_entropy_mean", "abstain_p")
    )
    print(
        f"naive re-forward     : {naive_slice_s:8.1f} s measured on {len(slice_idx)} prompts "
        f"({per_group} per regime) -> {naive_s:.1f} s scaled to {len(prompts)} (estimate)"
    )
    print(f"same generations on the slice (float32): {same}/{len(slice_idx)}; "
          f"max signal diff {worst:.2e}")  # fmt: skip
    if mismatched:
        ok = float64_agrees(model, prompts, mismatched, args.batch_size)
        print(f"  the {len(mismatched)} float32 mismatch(es) are float-level near-ties (top-k "
              f"membership / argmax): identical in float64: {ok}/{len(mismatched)}")  # fmt: skip
    verdict = "yes" if cached_s < 60 else "NO"
    print(
        f"speed-up (naive / cached): {naive_s / cached_s:.1f}x   "
        f"[goal >= 10x; whole probe < 60 s: {verdict}]"
    )

    for seq_len in (64, 128):  # 64 = the pretrain job's default window
        bps = training_throughput(seq_len=seq_len)
        print(f"tiny training throughput: {bps:,.0f} bytes/s (batch 16 x {seq_len}, AdamW)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
