"""PoE jobs: train the PoE LM and probe it (BPB, speculative decoding, routing, trajectory).

Kinds (``JOBS``): ``poe_train``, ``poe_probe``, ``poe_speculative``, ``poe_routing``,
``poe_trajectory``, and ``poe_train_heads`` (stage heads on a frozen ``hf:`` decoder;
``poe_probe`` / ``poe_speculative`` with ``model: "hf:PATH"`` or ``heads`` probe such a decoder;
both in ``runners/jobs/hf_poe.py``; ``poe_routing`` and ``poe_trajectory`` on ``hf:`` in
``runners/jobs/hf_trajectory.py``). ``poe_kv_identity`` and ``poe_concepts`` live in
``runners/jobs/poe_concepts.py``, which the trajectory also runs per checkpoint. Every job's
knobs and defaults are in ``DEFAULTS[kind]`` (the ``hf:`` ones in ``hf_poe``); the keys in
``STRUCTURAL_KEYS`` define the model and are ignored by the silent-no-op check (they still fire
where they are applied).

Data (:func:`load_corpus`): ``runners/data/corpus.txt`` when that file exists, else a deterministic
English-like text generated from a small embedded word list by a fixed sentence grammar
(:func:`generate_corpus`, seed 0, ~400 kB). The last ``HELD_OUT_FRACTION`` of the bytes is the
held-out split used by every probe; training samples random windows from the rest.

Checkpoints of ``poe_train``: ``<artifacts>/checkpoints/step-XXXXX.pt`` every ``checkpoint_every``
steps and at the last step, and ``<artifacts>/final.pt`` (``JobResult.checkpoint``); the
trajectory job finds the ``checkpoints/`` directory beside the final checkpoint it receives.

Probe jobs take their checkpoint from the knob ``checkpoint`` (a path: real checkpoints load from a
local path), else from their single dependency, else from the dependency named by knob ``input``.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..context import JobContext, JobFn, JobResult, MetricValue, Observation, sha256_file
from ..models.hf import HFModelError, is_hf_ref
from ..models.poe import (
    BOS,
    PoEConfig,
    PoELM,
    count_parameters,
    get_config,
    load_checkpoint,
    save_checkpoint,
)
from ..models.poe_decode import (
    DecodeComparison,
    PositionStats,
    RoutingResult,
    bits_per_byte,
    compare_decoding,
    position_stats,
    routing_at_cap,
    speculative_projected_speedup,
)

CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "corpus.txt"
HELD_OUT_FRACTION = 0.1
STRUCTURAL_KEYS = frozenset({"model", "layout", "checkpoint", "boundaries", "heads"})
MAX_CPU_TRAIN_PARAMS = 100_000_000

_PROBE = {"checkpoint": None, "input": None, "model": None}
_EVAL = {"eval_bytes": 32768, "seq_len": 128, "batch_size": 16}
_DECODE = {
    "k_draft": 4,
    "max_new_tokens": 64,
    "n_prompts": 20,
    "prompt_len": 32,
    "decode_threads": 1,
}
_ROUTE = {"cap": 0.02, "routing_signal": "max_prob"}
DEFAULTS: dict[str, dict[str, Any]] = {
    "poe_train": {
        "model": "tiny",
        "layout": None,
        "steps": 300,
        "batch_size": 16,
        "seq_len": 128,
        "lr": 3e-3,
        "weight_decay": 0.0,
        "warmup_steps": 30,
        "grad_clip": 1.0,
        "checkpoint_every": 100,
        "stop_grad_at_boundaries": False,
    },
    "poe_probe": {**_PROBE, **_EVAL},
    "poe_speculative": {**_PROBE, **_DECODE},
    "poe_routing": {**_PROBE, **_EVAL, **_ROUTE},
    "poe_trajectory": {
        **_PROBE,
        **_EVAL,
        "eval_bytes": 16384,
        **_DECODE,
        "max_new_tokens": 48,
        "n_prompts": 8,
        **_ROUTE,
    },
}

# ---------------------------------------------------------------------------------------- data

_WORDS = {
    "det": "the a this that every one no some each another".split(),
    "adj": (
        "small large old young quiet bright dark green cold warm early late quick slow happy "
        "tired careful strange simple heavy empty gentle"
    ).split(),
    "noun": (
        "river house garden teacher child window market village doctor letter bird forest road "
        "city engine boat student mountain story farmer table lamp winter question friend"
    ).split(),
    "verb": (
        "found watched carried opened followed painted visited helped answered built crossed "
        "remembered cleaned moved wrote heard saw"
    ).split(),
    "intrans": "slept waited laughed arrived stayed returned listened smiled worked".split(),
    "prep": "near under behind across beside through over into after before".split(),
    "adv": "slowly quietly again today often never soon later together carefully".split(),
    "conj": "and but because while so".split(),
}


def generate_corpus(n_bytes: int = 400_000, seed: int = 0) -> bytes:
    """Deterministic English-like text (ASCII) from the embedded word list.

    Grammar: ``clause := NP VP [PP] [ADV]``, ``NP := det [adj] noun``, ``VP := verb NP | intrans``,
    ``PP := prep NP``; a sentence is one clause or two joined by a conjunction, capitalised and
    ended by ``.``; a paragraph is 3-7 sentences ended by a newline. ``random.Random(seed)``.
    """
    rng = random.Random(seed)

    def pick(kind: str) -> str:
        return rng.choice(_WORDS[kind])

    def noun_phrase() -> str:
        adj = f"{pick('adj')} " if rng.random() < 0.4 else ""
        return f"{pick('det')} {adj}{pick('noun')}"

    def clause() -> str:
        verb = f"{pick('verb')} {noun_phrase()}" if rng.random() < 0.7 else pick("intrans")
        parts = [noun_phrase(), verb]
        if rng.random() < 0.35:
            parts.append(f"{pick('prep')} {noun_phrase()}")
        if rng.random() < 0.2:
            parts.append(pick("adv"))
        return " ".join(parts)

    out: list[str] = []
    size = 0
    while size < n_bytes:
        sentences = []
        for _ in range(rng.randint(3, 7)):
            text = clause()
            if rng.random() < 0.25:
                text = f"{text} {pick('conj')} {clause()}"
            sentences.append(text[0].upper() + text[1:] + ".")
        paragraph = " ".join(sentences) + "\n"
        out.append(paragraph)
        size += len(paragraph)
    return "".join(out).encode("ascii")[:n_bytes]


def load_corpus(path: Path | None = None) -> bytes:
    """The byte corpus: ``runners/data/corpus.txt`` if present, else :func:`generate_corpus`."""
    path = CORPUS_PATH if path is None else Path(path)
    if path.is_file():
        data = path.read_bytes()
        if len(data) < 10_000:
            raise ValueError(f"{path}: corpus of {len(data)} bytes is too small (need >= 10000)")
        return data
    return generate_corpus()


def split_corpus(data: bytes) -> tuple[bytes, bytes]:
    """``(train, held_out)``: the held-out split is the last ``HELD_OUT_FRACTION`` of the bytes."""
    cut = int(len(data) * (1.0 - HELD_OUT_FRACTION))
    return data[:cut], data[cut:]


@lru_cache(maxsize=1)
def _corpus_split() -> tuple[bytes, bytes]:
    """:func:`split_corpus` of :func:`load_corpus`, read once per process for the jobs."""
    return split_corpus(load_corpus())


def sample_batch(
    data: Tensor, batch_size: int, seq_len: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random windows ``w`` of ``seq_len`` bytes: inputs ``[BOS] + w[:-1]``, targets ``w``."""
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=gen)
    targets = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
    inputs = torch.cat([torch.full_like(targets[:, :1], BOS), targets[:, :-1]], dim=1)
    return inputs, targets


def decode_prompts(ctx: JobContext) -> list[list[int]]:
    """The decoding jobs' prompt set: :func:`held_out_prompts` of the held-out split with the
    job's ``n_prompts`` and ``prompt_len`` knobs (both fired) and its seed."""
    knobs = ctx.knobs
    _, held_out = _corpus_split()
    prompts = held_out_prompts(
        held_out, int(knobs.get("n_prompts")), int(knobs.get("prompt_len")), ctx.seed
    )
    knobs.fire("n_prompts")
    knobs.fire("prompt_len")
    return prompts


def held_out_prompts(held_out: bytes, n: int, length: int, seed: int) -> list[list[int]]:
    """``n`` prompts ``[BOS] + length bytes`` from the held-out text, starting at the beginning of a
    word (after a space) at positions drawn by ``random.Random(seed)``."""
    rng = random.Random(seed)
    spaces = [i + 1 for i, b in enumerate(held_out[: len(held_out) - length - 1]) if b == 32]
    if not spaces:
        raise ValueError("held-out text too short for prompts")
    return [[BOS, *held_out[s : s + length]] for s in (rng.choice(spaces) for _ in range(n))]


# ------------------------------------------------------------------------------------ training


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``0.1 * lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    cfg: PoEConfig,
    data: bytes,
    steps: int,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    warmup_steps: int = 30,
    grad_clip: float = 1.0,
    stop_grad_at_boundaries: bool = False,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, PoELM, float], None] | None = None,
    fire: Callable[[str], None] = lambda name: None,
) -> tuple[PoELM, list[float]]:
    """Train ``PoELM(cfg)`` with AdamW (betas 0.9/0.95) on the mean per-stage CE loss.

    ``on_step(step, model, loss)`` is called after every optimiser step (step counts from 1);
    ``fire(knob)`` is called where each knob takes effect. Returns the model and the loss curve.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PoELM(cfg).to(device)
    model.train()
    tokens = torch.tensor(list(data), dtype=torch.long)
    if tokens.numel() <= seq_len:
        raise ValueError(f"training text of {tokens.numel()} bytes is not longer than seq_len")
    if seq_len > cfg.max_seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the model's max_seq_len={cfg.max_seq_len}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}], lr=lr, betas=(0.9, 0.95)
    )
    fire("lr")
    fire("weight_decay")
    use_stop_grad = stop_grad_at_boundaries and cfg.n_stages > 1
    losses: list[float] = []
    for step in range(steps):
        fire("steps")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_steps)
        fire("warmup_steps")
        inputs, targets = sample_batch(tokens, batch_size, seq_len, gen)
        fire("batch_size")
        fire("seq_len")
        loss, _ = model.loss(
            inputs.to(device), targets.to(device), stop_grad_at_boundaries=use_stop_grad
        )
        if use_stop_grad:
            fire("stop_grad_at_boundaries")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            fire("grad_clip")
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, model, losses[-1])
    model.eval()
    return model, losses


def _model_config(ctx: JobContext) -> PoEConfig:
    knobs = ctx.knobs
    name = knobs.get("model")
    ctx.knobs.fire("model")
    layout = knobs.get("layout")
    if layout is not None:
        ctx.knobs.fire("layout")
        return get_config(name, layout=tuple(layout))
    return get_config(name)


def run_train(ctx: JobContext) -> JobResult:
    """``poe_train``: train on the byte corpus, checkpoint every ``checkpoint_every`` steps."""
    knobs = ctx.knobs
    knobs.set_defaults(DEFAULTS["poe_train"])
    cfg = _model_config(ctx)
    n_params = count_parameters(cfg)
    if ctx.device == "cpu" and n_params > MAX_CPU_TRAIN_PARAMS:
        raise ValueError(
            f"model {knobs.get('model')!r} has {n_params:,} parameters: too large to train on a "
            f"CPU (limit {MAX_CPU_TRAIN_PARAMS:,}); use it for count_parameters() or a GPU"
        )
    steps = int(knobs.get("steps"))
    every = int(knobs.get("checkpoint_every"))
    train_data, _ = _corpus_split()
    ckpt_dir = Path(ctx.artifacts_dir) / "checkpoints"
    checkpoints: list[dict[str, Any]] = []
    loss_at_ckpt: list[MetricValue] = []
    losses_so_far: list[float] = []

    def on_step(step: int, model: PoELM, loss: float) -> None:
        losses_so_far.append(loss)
        ctx.progress(step, steps, "poe_train")
        periodic = every > 0 and step % every == 0
        if periodic or step == steps:
            if periodic:
                knobs.fire("checkpoint_every")
            path = save_checkpoint(model, ckpt_dir / f"step-{step:05d}.pt", step)
            checkpoints.append({"step": step, "path": str(path), "sha256": sha256_file(path)})
            recent = losses_so_far[-min(10, len(losses_so_far)) :]
            loss_at_ckpt.append(MetricValue("train_loss", sum(recent) / len(recent), step=step))

    t0 = time.perf_counter()
    model, losses = train(
        cfg,
        train_data,
        steps,
        batch_size=int(knobs.get("batch_size")),
        seq_len=int(knobs.get("seq_len")),
        lr=float(knobs.get("lr")),
        weight_decay=float(knobs.get("weight_decay")),
        warmup_steps=int(knobs.get("warmup_steps")),
        grad_clip=float(knobs.get("grad_clip")),
        stop_grad_at_boundaries=bool(knobs.get("stop_grad_at_boundaries")),
        seed=ctx.seed,
        device=ctx.device,
        on_step=on_step,
        fire=knobs.fire,
    )
    wall = time.perf_counter() - t0
    final = Path(ctx.artifacts_dir) / "final.pt"
    if checkpoints:
        shutil.copyfile(checkpoints[-1]["path"], final)
    else:
        save_checkpoint(model, final, steps)
    tail = losses[-min(10, len(losses)) :] if losses else [float("nan")]
    metrics = [
        MetricValue("train_loss_first", losses[0] if losses else float("nan")),
        MetricValue("train_loss_last", sum(tail) / len(tail)),
        *loss_at_ckpt,
    ]
    extra = {
        "checkpoints": checkpoints,
        "config": asdict(cfg),
        "n_parameters": n_params,
        "loss_curve": losses[:: max(1, len(losses) // 100)],
        "train_seconds": wall,
        "corpus": str(CORPUS_PATH) if CORPUS_PATH.is_file() else "generated",
    }
    return JobResult(metrics=metrics, checkpoint=final, extra=extra)


# -------------------------------------------------------------------------------------- probes


def _checkpoint_path(ctx: JobContext) -> Path:
    knobs = ctx.knobs
    if knobs.get("checkpoint") is not None:
        knobs.fire("checkpoint")
        return Path(knobs.get("checkpoint"))
    name = knobs.get("input")
    if name is not None:
        if name not in ctx.inputs:
            raise ValueError(f"knob input={name!r} is not a dependency; have {sorted(ctx.inputs)}")
        knobs.fire("input")
        return Path(ctx.inputs[name])
    if len(ctx.inputs) != 1:
        raise ValueError(
            f"{ctx.kind} needs one checkpoint: set knob 'checkpoint' (a path) or 'input' (one of "
            f"the dependencies {sorted(ctx.inputs)})"
        )
    return Path(next(iter(ctx.inputs.values())))


def _builtin_only(ctx: JobContext) -> None:
    """Refuse ``heads`` on a built-in trajectory (heads belong to one ``hf:`` checkpoint)."""
    if ctx.params.get("heads") is not None:
        raise HFModelError(
            f"job {ctx.job!r}: field 'heads' does not apply to kind {ctx.kind!r} (stage heads "
            "belong to one hf: checkpoint; a trajectory runs every checkpoint with zero heads)"
        )


def _load(ctx: JobContext, path: Path) -> tuple[PoELM, int]:
    model, step = load_checkpoint(path)
    expected = ctx.knobs.get("model")
    if expected is not None:  # structural: the checkpoint must be of that named size
        ctx.knobs.fire("model")
        if replace(get_config(expected), layout=model.cfg.layout) != model.cfg:
            raise ValueError(f"{path}: checkpoint is not a {expected!r} model ({model.cfg})")
    return model.to(ctx.device), step


def _eval_stats(ctx: JobContext, model: PoELM) -> PositionStats:
    knobs = ctx.knobs
    _, held_out = _corpus_split()
    n_bytes = int(knobs.get("eval_bytes"))
    if n_bytes < len(held_out):
        knobs.fire("eval_bytes")
    seq_len = min(int(knobs.get("seq_len")), model.cfg.max_seq_len)
    knobs.fire("seq_len")
    knobs.fire("batch_size")
    return position_stats(model, held_out[:n_bytes], seq_len, int(knobs.get("batch_size")))


def bpb_metrics(stats: PositionStats, n_bytes: int | None = None) -> list[MetricValue]:
    """bpb/acc of every stage alone, of every proper prefix K' = 2..K-1, and of the full PoE.

    ``n_bytes``: UTF-8 bytes of the predicted text when a token is not one byte (``hf:``
    models); see :func:`~docketml.runners.models.poe_decode.bits_per_byte`."""
    k_total = stats.nll_stage.size(0)
    values: dict[str, float] = {}
    for k in range(k_total):
        values[f"bpb_stage{k}"] = bits_per_byte(stats.nll_stage[k], n_bytes)
        values[f"acc_stage{k}"] = float(stats.correct_stage[k].double().mean())
    for j in range(2, k_total):
        values[f"bpb_prefix{j}"] = bits_per_byte(stats.nll_prefix[j - 1], n_bytes)
        values[f"acc_prefix{j}"] = float(stats.correct_prefix[j - 1].double().mean())
    values["bpb_full"] = bits_per_byte(stats.nll_prefix[-1], n_bytes)
    values["acc_full"] = float(stats.correct_prefix[-1].double().mean())
    return [MetricValue(name, value) for name, value in values.items()]


def run_probe(ctx: JobContext) -> JobResult:
    """``poe_probe``: per-stage, prefix-K' and full-PoE bits per byte and top-1 accuracy.

    With ``model: "hf:PATH"`` (and ``boundaries``) or ``heads: <job>`` the stages are those of a
    Hugging Face decoder (:func:`docketml.runners.jobs.hf_poe.probe_hf_stages`)."""
    if is_hf_ref(ctx.params.get("model")) or ctx.params.get("heads") is not None:
        from .hf_poe import probe_hf_stages

        return probe_hf_stages(ctx)
    ctx.knobs.set_defaults(DEFAULTS["poe_probe"])
    model, step = _load(ctx, _checkpoint_path(ctx))
    stats = _eval_stats(ctx, model)
    extra = {"step": step, "n_positions": int(stats.nll_stage.size(1)), "layout": model.cfg.layout}
    return JobResult(metrics=bpb_metrics(stats), extra=extra)


def _speculative(
    ctx: JobContext, model: PoELM, report_progress: bool = True
) -> tuple[dict[str, float], list[Observation], dict[str, str]]:
    knobs = ctx.knobs
    k_draft = int(knobs.get("k_draft"))
    knobs.fire("k_draft")
    max_new = int(knobs.get("max_new_tokens"))
    knobs.fire("max_new_tokens")
    prompts = decode_prompts(ctx)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(int(knobs.get("decode_threads")))  # batch-1 decoding of a small model
    knobs.fire("decode_threads")
    try:
        compare_decoding(model, prompts[0], max_new, k_draft)  # warm-up, untimed
        results = []
        for i, prompt in enumerate(prompts):
            results.append(
                compare_decoding(model, prompt, max_new, k_draft, spec_first=bool(i % 2))
            )
            if report_progress:
                ctx.progress(i + 1, len(prompts), "poe_speculative")
    finally:
        torch.set_num_threads(threads_before)
    prompt_texts = [_text(prompt[1:]) for prompt in prompts]
    texts = [_text(res.spec_tokens) for res in results]
    return speculative_summary(
        results, prompt_texts, texts, max_new, k_draft, model.cfg.depth_fraction(1)
    )


def speculative_summary(
    results: list[DecodeComparison],
    prompt_texts: list[str],
    texts: list[str],
    max_new: int,
    k_draft: int,
    d0: float,
) -> tuple[dict[str, float], list[Observation], dict[str, str]]:
    """Metrics, per-prompt observations (``speedup``, ``cpu_speedup``, ``alpha``,
    ``tokens_per_round``, ``identical``; item ``pNNN``) and texts (``prompt|continuation``) of
    plain-vs-speculative decodes; ``d0`` is the drafting stage's depth fraction."""
    observations: list[Observation] = []
    out_texts: dict[str, str] = {}
    for i, res in enumerate(results):
        item = f"p{i:03d}"
        for signal, value in (
            ("speedup", res.speedup),
            ("cpu_speedup", res.cpu_speedup),
            ("alpha", res.stats.alpha),
            ("tokens_per_round", res.stats.tokens_per_round),
            ("identical", 1.0 if res.identical else 0.0),
        ):
            observations.append(Observation("prompts", item, signal, float(value)))
        out_texts[item] = prompt_texts[i] + "|" + texts[i]
    proposed = sum(r.stats.proposed for r in results)
    accepted = sum(r.stats.accepted for r in results)
    alpha = accepted / proposed if proposed else float("nan")
    summary = {
        "speedup_mean": sum(r.speedup for r in results) / len(results),
        "speedup_total": sum(r.plain_s for r in results) / sum(r.spec_s for r in results),
        "cpu_speedup_total": sum(r.plain_cpu_s for r in results)
        / sum(r.spec_cpu_s for r in results),
        "alpha": alpha,
        "tokens_per_round": sum(r.stats.emitted for r in results)
        / sum(r.stats.rounds for r in results),
        "identical_rate": sum(r.identical for r in results) / len(results),
        "projected_speedup": speculative_projected_speedup(alpha, k_draft, d0),
        "plain_tokens_per_s": len(results) * max_new / sum(r.plain_s for r in results),
        "spec_tokens_per_s": len(results) * max_new / sum(r.spec_s for r in results),
    }
    return summary, observations, out_texts


def _text(tokens: list[int]) -> str:
    """Byte ids as text (UTF-8 with replacement; BOS dropped)."""
    return bytes(t for t in tokens if t < 256).decode("utf-8", "replace")


def run_speculative(ctx: JobContext) -> JobResult:
    """``poe_speculative``: self-speculative vs plain cached greedy decoding on held-out prompts.

    With ``model: "hf:PATH"`` or ``heads`` it runs on a Hugging Face decoder's stages
    (:func:`docketml.runners.jobs.hf_poe.speculative_hf_stages`)."""
    if is_hf_ref(ctx.params.get("model")) or ctx.params.get("heads") is not None:
        from .hf_poe import speculative_hf_stages

        return speculative_hf_stages(ctx)
    ctx.knobs.set_defaults(DEFAULTS["poe_speculative"])
    model, step = _load(ctx, _checkpoint_path(ctx))
    summary, observations, texts = _speculative(ctx, model)
    metrics = [MetricValue(name, value) for name, value in summary.items()]
    extra = {
        "step": step,
        "d0": model.cfg.depth_fraction(1),
        "timing": "batch 1, torch.inference_mode, decode_threads intra-op threads, perf_counter "
        "(wall) and process_time (cpu) around each whole decode (prefill included), plain and "
        "speculative alternate first per prompt, one untimed warm-up",
    }
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)


def _routing(ctx: JobContext, d0: float, stats: PositionStats) -> RoutingResult:
    """:func:`routing_at_cap` of ``stats`` with the job's ``routing_signal`` and ``cap``;
    ``d0`` is stage 0's depth fraction."""
    knobs = ctx.knobs
    signal = knobs.get("routing_signal")
    if signal not in ("max_prob", "margin"):
        raise ValueError(f"routing_signal must be 'max_prob' or 'margin', got {signal!r}")
    knobs.fire("routing_signal")
    confidence = stats.conf0_max_prob if signal == "max_prob" else stats.conf0_margin
    cap = float(knobs.get("cap"))
    knobs.fire("cap")
    return routing_at_cap(
        confidence,
        stats.correct_stage[0],
        stats.correct_prefix[-1],
        cap,
        d0,
    )


def run_routing(ctx: JobContext) -> JobResult:
    """``poe_routing``: largest fraction routed to stage 0 within accuracy loss ``cap``.

    With ``model: "hf:PATH"`` or ``heads`` it runs on a Hugging Face decoder's stages
    (:func:`docketml.runners.jobs.hf_trajectory.routing_hf`)."""
    if is_hf_ref(ctx.params.get("model")) or ctx.params.get("heads") is not None:
        from .hf_trajectory import routing_hf

        return routing_hf(ctx)
    ctx.knobs.set_defaults(DEFAULTS["poe_routing"])
    model, step = _load(ctx, _checkpoint_path(ctx))
    res = _routing(ctx, model.cfg.depth_fraction(1), _eval_stats(ctx, model))
    metrics = [
        MetricValue("routed_fraction", res.routed_fraction),
        MetricValue("routing_projected_speedup", res.projected_speedup),
        MetricValue("acc_full", res.acc_full),
        MetricValue("acc_stage0", res.acc_stage0),
        MetricValue("acc_mixed", res.acc_mixed),
    ]
    extra = {
        "step": step,
        "d0": model.cfg.depth_fraction(1),
        "cost_model": "routed position costs d0 (stage-0 depth fraction), others 1; "
        "speedup = 1 / (f*d0 + (1-f))",
    }
    return JobResult(metrics=metrics, extra=extra)


def list_checkpoints(final_checkpoint: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-XXXXX.pt`` in the ``checkpoints/`` directory beside the
    final checkpoint of a ``poe_train`` run, sorted by step."""
    ckpt_dir = Path(final_checkpoint).parent / "checkpoints"
    found = sorted((int(p.stem.split("-")[1]), p) for p in ckpt_dir.glob("step-*.pt"))
    if not found:
        raise ValueError(f"no step-XXXXX.pt checkpoints in {ckpt_dir}")
    return found


def trajectory_values(
    stats: PositionStats, spec: dict[str, Any], route: Any, n_bytes: int | None = None
) -> dict[str, float]:
    """One checkpoint's ``poe_trajectory`` metrics (built-in and hf alike): BPB and top-1 of the
    full PoE and of stage 0 (``n_bytes``: the evaluated text's UTF-8 bytes; default one byte per
    token), the speculative run's alpha / speedups / identity, and routing at the cap."""
    return {
        "bpb_full": bits_per_byte(stats.nll_prefix[-1], n_bytes),
        "bpb_stage0": bits_per_byte(stats.nll_stage[0], n_bytes),
        "acc_full": float(stats.correct_prefix[-1].double().mean()),
        "acc_stage0": float(stats.correct_stage[0].double().mean()),
        "alpha": spec["alpha"],
        "speedup": spec["speedup_total"],
        "cpu_speedup": spec["cpu_speedup_total"],
        "projected_speedup": spec["projected_speedup"],
        "identical_rate": spec["identical_rate"],
        "routed_fraction": route.routed_fraction,
        "routing_projected_speedup": route.projected_speedup,
    }


def run_trajectory(ctx: JobContext) -> JobResult:
    """``poe_trajectory``: probes on every checkpoint of the training dependency, one row per
    checkpoint and metric (bpb_full, bpb_stage0, acc_full, alpha, speedup, routed_fraction, ...),
    plus KV-cache identity and concept tracking per checkpoint
    (:func:`docketml.runners.jobs.poe_concepts.checkpoint_probes`).

    With ``model: "hf:DIR"`` (a directory of checkpoints) it runs on Hugging Face decoders
    (:func:`docketml.runners.jobs.hf_trajectory.trajectory_hf`)."""
    if is_hf_ref(ctx.params.get("model")):
        from .hf_trajectory import trajectory_hf

        return trajectory_hf(ctx)
    _builtin_only(ctx)
    from .poe_concepts import TRAJECTORY_DEFAULTS, builtin_target, checkpoint_probes

    ctx.knobs.set_defaults({**DEFAULTS["poe_trajectory"], **TRAJECTORY_DEFAULTS})
    checkpoints = list_checkpoints(_checkpoint_path(ctx))
    metrics: list[MetricValue] = []
    observations: list[Observation] = []
    texts: dict[str, str] = {}
    for done, (step, path) in enumerate(checkpoints):
        model, _ = _load(ctx, path)
        stats = _eval_stats(ctx, model)
        spec, _, _ = _speculative(ctx, model, report_progress=False)
        route = _routing(ctx, model.cfg.depth_fraction(1), stats)
        values = trajectory_values(stats, spec, route)
        metrics.extend(MetricValue(name, value, step=step) for name, value in values.items())
        more, obs, more_texts = checkpoint_probes(ctx, builtin_target(model), step)
        metrics.extend(more)
        observations.extend(obs)
        texts.update(more_texts)
        ctx.progress(done + 1, len(checkpoints), "poe_trajectory")
    extra = {"checkpoints": [{"step": s, "path": str(p)} for s, p in checkpoints]}
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)


def run_train_heads(ctx: JobContext) -> JobResult:
    """``poe_train_heads``: additive stage heads on a frozen ``hf:`` decoder
    (:func:`docketml.runners.jobs.hf_poe.train_heads`)."""
    from .hf_poe import train_heads

    return train_heads(ctx)


JOBS: dict[str, JobFn] = {
    "poe_train": run_train,
    "poe_probe": run_probe,
    "poe_speculative": run_speculative,
    "poe_routing": run_routing,
    "poe_trajectory": run_trajectory,
    "poe_train_heads": run_train_heads,
}
