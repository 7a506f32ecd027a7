"""The hf: router probe's generation: batched KV-cached decoding against a naive loop.

On a small Mixtral-style checkpoint built from a config (``--hidden``, ``--layers``, 4 experts,
byte vocabulary, saved with ``save_pretrained`` to a temp dir and loaded through
``runners.models.hf.load_hf``), ``--prompts`` prompts of 40..120 bytes, ``--new`` greedy tokens
each, one torch thread, in the same run (best of ``--repeats``):

* **naive**: per prompt, per generated token, a forward over the whole prefix (no KV cache), the
  max softmax read from the last position: what a probe written without a cache does;
* **cached**: ``probe_prompt`` per prompt (prompt forward with router logits, then one token per
  forward with the KV cache);
* **batched**: ``probe_batch`` over ``--batch`` prompts at a time (left-padded, masked), the
  job's default path.

It checks that all three give the same greedy tokens for every prompt, and prints prompts/s and
the ratios. Goal (issue 12 item 7): batched >= 10x naive.

Run: ``python benchmarks/hf_probe.py`` (options: --prompts, --new, --batch, --hidden, --layers,
--repeats).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402

from docketml.runners.jobs.hf_probe import probe_batch, probe_prompt  # noqa: E402
from docketml.runners.models.hf import HFModel, load_hf  # noqa: E402


@torch.no_grad()
def naive(hf: HFModel, tokens: list[int], max_new: int) -> list[int]:
    seq = list(tokens)
    for _ in range(max_new):
        logits = hf.model(input_ids=torch.tensor([seq])).logits[0, -1].double()
        seq.append(int(torch.softmax(logits, -1).argmax()))
    return seq[len(tokens) :]


def best_of(repeats: int, fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = transformers.MixtralConfig(
        vocab_size=260, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(40, 121, (args.prompts,), generator=g).tolist()
    prompts = [torch.randint(32, 127, (n,), generator=g).tolist() for n in lengths]
    with tempfile.TemporaryDirectory() as tmp:
        transformers.MixtralForCausalLM(config).save_pretrained(tmp)
        hf = load_hf(tmp)
        params = sum(p.numel() for p in hf.model.parameters())
        t_naive, out_naive = best_of(
            args.repeats, lambda: [naive(hf, p, args.new) for p in prompts]
        )
        t_cached, out_cached = best_of(
            args.repeats, lambda: [probe_prompt(hf, p, args.new)["tokens"] for p in prompts]
        )

        def batched() -> list[list[int]]:
            out: list[list[int]] = []
            for s in range(0, len(prompts), args.batch):
                out += [r["tokens"] for r in probe_batch(hf, prompts[s : s + args.batch], args.new)]
            return out

        t_batched, out_batched = best_of(args.repeats, batched)
    same = out_naive == out_cached == out_batched
    n = len(prompts)
    print(
        f"Mixtral-style, {params:,} params, {n} prompts x {args.new} new tokens, 1 thread, "
        f"best of {args.repeats}; same greedy tokens in all three: {same}"
    )
    print(
        f"naive (no cache, re-forward the prefix): {t_naive:7.2f} s  {n / t_naive:7.1f} prompts/s"
    )
    print(
        f"cached, one prompt at a time:           {t_cached:7.2f} s  {n / t_cached:7.1f} prompts/s"
        f"  {t_naive / t_cached:5.1f}x naive"
    )
    print(
        f"batched ({args.batch}) + cached (the job's default): {t_batched:7.2f} s  "
        f"{n / t_batched:7.1f} prompts/s  {t_naive / t_batched:5.1f}x naive"
    )
    if not same:
        raise SystemExit("the three paths disagree on the greedy tokens")


if __name__ == "__main__":
    main()
