"""Routed-LM jobs: ``pretrain``, ``chat_sft``, ``abstain_sft``, ``joint_finetune``, ``splice``,
``probe`` (the paper's study: pretrain -> chat SFT -> abstain SFT = the deployed base; joint
finetunes v7 / v8a / v8b / corollary; the head-only splice; probes of every checkpoint).

Contract (``runners/context.py``): each job is ``run(ctx: JobContext) -> JobResult``; exported in
:data:`JOBS`. Every job seeds ``torch.manual_seed(ctx.seed)`` (data order comes from a generator
seeded with ``ctx.seed`` too), reports progress through ``ctx.progress``, declares its knob
defaults with ``ctx.knobs.set_defaults`` and calls ``ctx.knobs.fire(name)`` where a knob changes
behaviour. Training jobs (and splice) write ``ctx.artifacts_dir / "model.pt"`` in the
``docket-routed-v1`` format (see ``runners.models.routed``) and return it in
``JobResult.checkpoint``; ``probe`` writes no checkpoint.

Structural keys (not knobs; the executor passes them, via ``registry.structural_keys``, as the
ignore set of ``KnobAudit.silent_noops``): :data:`STRUCTURAL_KEYS` = ``model``, ``checkpoint``,
``base``, ``donor``.
``model`` (``tiny`` | ``tilelli-10m``, default ``tiny``) chooses the architecture of a fresh model
(pretrain); a job that starts from a checkpoint takes the checkpoint's architecture and refuses a
contradicting explicit ``model``.

Input checkpoints arrive in ``ctx.inputs`` (dependency job name -> path). A reference knob
(``init``, ``base``, ``donor``, ``checkpoint``) names a key of ``ctx.inputs`` or a local checkpoint
path; ``init`` / ``checkpoint`` may be omitted when the job has exactly one input.

Knobs per kind (default) and where each fires ("took effect")
    all training kinds   steps, lr, batch_size, trainable
        ``steps``       once, where the training loop bound is applied
        ``lr``          at every optimizer step (where the learning rate is applied)
        ``batch_size``  every time a batch of that many samples is drawn
        ``trainable``   at every optimizer step (only the listed groups are in the optimizer and
                        require grad; everything else is bit-identical afterwards)
        ``init``        when the model is loaded from the referenced checkpoint
    pretrain        model "tiny", init None, steps 200, lr 3e-3, batch_size 16, seq_len 64,
                    trainable "all"
        ``seq_len``     every time a window of that length is cut from the corpus
        ``model``       where the fresh model is built from the named config
    chat_sft        init, steps 150, lr 2e-3, batch_size 16, trainable "all"
    abstain_sft     init, steps 100, lr 1e-3, batch_size 16, trainable "all",
                    ood_fraction 0.25, abstain_weight 1.0
    joint_finetune  init, steps 60, lr 3e-3, batch_size 16, trainable ["router", "abstain"],
                    ood_fraction 0.5, mc_weight 0.0, abstain_weight 1.0
        ``ood_fraction``    where a batch's OOD share ``round(batch_size * ood_fraction)`` is drawn
        ``mc_weight``       where ``mc_weight * L_mc`` is added to the loss (only if != 0; the
                            default is 0, so v8b's ``mc_weight: 0`` is the default and the term
                            is simply absent)
        ``abstain_weight``  where ``abstain_weight * L_bce`` is added (only if != 0); a zero set
                            against a nonzero default fires where the term is dropped instead
    splice          base, donor, groups ["abstain"]
        ``base``/``donor``  when each checkpoint is loaded; ``groups`` when the donor's parameters
                            of those groups are copied (at least one parameter)
    probe           checkpoint, max_new_tokens 48, batch_size 32, limit_per_group None,
                    padding "left", deploy_cut 0.775
        ``max_new_tokens``  per generation batch (the generation length bound)
        ``batch_size``      per generation batch formed
        ``limit_per_group`` only if it actually removed probe items
        ``padding``         per batch whose prompts have unequal lengths (where the side matters)
        ``deploy_cut``      where ``fp_rate_at_cut`` compares in-domain ``abstain_p`` with it

Losses (token sequences are ``[BOS] + bytes("USER: q\\nASSISTANT:") + bytes(" " + answer) +
[EOS]``; "prompt positions" are the prompt's byte positions, BOS excluded)
    pretrain        mean next-byte CE on random ``seq_len`` windows of ``corpus.txt``
    chat_sft        mean CE over answer tokens (``" " + answer + EOS``) of ``chat_train``
    abstain_sft     CE over answer tokens of a mix of in-domain chat and OOD questions answered
                    with the refusal template ``I don't know.``, plus ``abstain_weight * L_bce``
    joint_finetune  CE over in-domain answer tokens only + ``mc_weight * L_mc`` +
                    ``abstain_weight * L_bce``
    ``L_bce`` = mean over the batch of BCE(abstain_p at the last prompt position, is_ood)
    ``L_mc``  = mean_{i in-domain} Hbar_i - mean_{j OOD} Hbar_j, where
               ``Hbar = mean over layers and prompt positions of H(r) = -sum_k r_k ln r_k`` (nats);
               ``L_mc`` is in ``[-ln 3, ln 3]``; minimising it lowers router entropy in-domain and
               raises it out of domain (the receipts' metacognition loss).

Probe (per prompt of ``probe_210.jsonl``, batched greedy generation with the KV cache; with
``model: "hf:PATH"`` see ``runners/jobs/hf_probe.py`` and docs/models.md)
    signals  ``max_softmax_mean`` / ``max_softmax_last`` (max softmax probability of each of up to
             ``max_new_tokens`` generated tokens, EOS step included: mean / last),
             ``router_entropy_mean`` / ``router_entropy_var`` (entropy averaged over layers, then
             mean / population variance over prompt positions), ``router_entropy_L{l}`` (mean
             over prompt positions of layer l), ``router_conf = 1 - router_entropy_mean / ln 3``,
             ``abstain_p`` (at the last prompt position), ``refused`` (1 when the generated text
             contains the refusal template, else 0: :func:`is_refusal`).
    label    1 = failure: refused in an answer regime (in_domain, long_input, ood_style,
             neo_false_inability), or did not refuse in a refuse regime (gibberish, ood_topic,
             factual_misleading), or looped (any regime). See :func:`is_refusal`, :func:`is_loop`.
    metrics  ``coherence_bpb``: teacher-forced bits per byte of the answers (``" " + answer`` and
             the EOS, given ``USER: q\\nASSISTANT:``) of the 150 held-out in-domain chat pairs,
             i.e. how well the checkpoint still produces in-domain answers; ``loop_rate``: share
             of probe generations that loop; ``refusal_rate``; ``failure_rate``; the paper's
             headline numbers (:func:`gate_metrics`): ``abstain_auroc`` (cross-regime AUROC of
             ``abstain_p``, in_domain = negatives, every other group = positives, ties 1/2),
             ``abstain_p_mean.G`` and ``refused.G`` (mean abstain_p, number of refusals, per
             group G), ``fp_rate_at_cut`` (share of in_domain items with ``abstain_p >=
             deploy_cut``).
    texts    item -> generated text (EOS dropped).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..context import JobContext, JobFn, JobResult, MetricValue, Observation
from ..data import (
    ANSWER_GROUPS,
    REFUSAL,
    REFUSE_GROUPS,
    chat_prompt,
    load_chat,
    load_corpus,
    load_ood_train,
    load_probe,
)
from ..models.hf import is_hf_ref
from ..models.routed import (
    BOS,
    EOS,
    PAD,
    RoutedLM,
    decode,
    encode,
    generate,
    get_config,
    group_parameters,
    load_checkpoint,
    resolve_groups,
    save_checkpoint,
)

# Params that select what runs (read through registry.structural_keys).
STRUCTURAL_KEYS = frozenset({"model", "checkpoint", "base", "donor"})
LN3 = math.log(3.0)
PROBE_SIGNALS = (
    "max_softmax_mean",
    "max_softmax_last",
    "router_entropy_mean",
    "router_entropy_var",
    "router_conf",
    "abstain_p",
    "refused",
)
DEPLOY_CUT = 0.775  # the paper's abstain_p threshold (calibrated on held-out data), knob deploy_cut
REFERENCE_GROUP = "in_domain"

# ---- detectors ----------------------------------------------------------------------------

_REFUSAL_RE = re.compile(r"\bi\s+(?:don'?t|do\s+not)\s+know\b")


def is_refusal(text: str) -> bool:
    """True when the text contains the refusal template ``I don't know`` (case-insensitive,
    curly or missing apostrophe and ``do not`` accepted)."""
    return bool(_REFUSAL_RE.search(text.replace("\u2019", "'").lower()))


def is_loop(text: str | bytes, n: int = 3, repeats: int = 5) -> bool:
    """True when some ``n``-byte sequence occurs at least ``repeats`` times, counted without
    overlap (``bytes.count``), in the generated bytes."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    seen: set[bytes] = set()
    for i in range(len(data) - n + 1):
        gram = data[i : i + n]
        if gram not in seen:
            seen.add(gram)
            if data.count(gram) >= repeats:
                return True
    return False


def failure_label(group: str, refused: bool, looped: bool) -> int | None:
    """1 = failure, 0 = fine, None when the group has no expected behaviour."""
    if group in ANSWER_GROUPS:
        return int(refused or looped)
    if group in REFUSE_GROUPS:
        return int((not refused) or looped)
    return None


# ---- knobs, inputs, checkpoints -----------------------------------------------------------


def probe_rows(ctx: JobContext) -> list[dict[str, Any]]:
    """The probe set, keeping at most ``limit_per_group`` rows per group (in file order).

    The knob fires only when it really cut something, so a limit above every group's size is
    reported by the knob audit as a silent no-op."""
    rows = load_probe()
    limit = _knob(ctx, "limit_per_group")
    if limit is None:
        return rows
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[row["group"]] = seen.get(row["group"], 0) + 1
        if seen[row["group"]] <= int(limit):
            kept.append(row)
    if len(kept) < len(rows):
        ctx.knobs.fire("limit_per_group")
    return kept


def _knob(ctx: JobContext, name: str) -> Any:
    """A knob's value: the audit's params, else ``ctx.params``, else the declared default."""
    if name in ctx.knobs.params:
        return ctx.knobs.params[name]
    if name in ctx.params:
        return ctx.params[name]
    return ctx.knobs.defaults.get(name)


def _resolve_input(ctx: JobContext, knob: str, single_fallback: bool = True) -> Path | None:
    """The checkpoint a reference knob names (a job in ``ctx.inputs`` or a local path), else the
    single input when ``single_fallback``, else None."""
    ref = _knob(ctx, knob)
    if ref is None:
        if single_fallback and len(ctx.inputs) == 1:
            return Path(next(iter(ctx.inputs.values())))
        if single_fallback and len(ctx.inputs) > 1:
            raise ValueError(
                f"job {ctx.job!r}: {len(ctx.inputs)} inputs {sorted(ctx.inputs)}; set knob {knob!r}"
            )
        return None
    if ref in ctx.inputs:
        return Path(ctx.inputs[ref])
    if Path(str(ref)).is_file():
        return Path(str(ref))
    raise ValueError(
        f"job {ctx.job!r}: knob {knob}={ref!r} is neither an input {sorted(ctx.inputs)} nor a file"
    )


def _load_input(ctx: JobContext, knob: str, required: bool = True) -> RoutedLM | None:
    """Load the referenced checkpoint; fires ``knob`` when it was set explicitly."""
    path = _resolve_input(ctx, knob)
    if path is None:
        if required:
            raise ValueError(f"job {ctx.job!r} ({ctx.kind}) needs an input checkpoint ({knob!r})")
        return None
    model = load_checkpoint(path)
    if _knob(ctx, knob) is not None:
        ctx.knobs.fire(knob)
    explicit = ctx.params.get("model")
    if explicit is not None and explicit != model.cfg.name:
        raise ValueError(
            f"job {ctx.job!r}: model={explicit!r} but checkpoint {path} is {model.cfg.name!r}"
        )
    return model.to(ctx.device)


def _save(ctx: JobContext, model: RoutedLM, meta: dict[str, Any]) -> Path:
    path = Path(ctx.artifacts_dir) / "model.pt"
    return save_checkpoint(
        model, path, {"job": ctx.job, "kind": ctx.kind, "seed": ctx.seed, **meta}
    )


def _start(ctx: JobContext, defaults: dict[str, Any]) -> torch.Generator:
    ctx.knobs.set_defaults(defaults)
    torch.manual_seed(ctx.seed)
    return torch.Generator().manual_seed(ctx.seed)


# ---- batches ------------------------------------------------------------------------------


@dataclass
class ChatBatch:
    """Right-padded chat transcripts with their loss / signal masks."""

    idx: Tensor  # (B, T) inputs
    mask: Tensor  # (B, T) 1 = real
    targets: Tensor  # (B, T) next token, -100 where no CE
    prompt_mask: Tensor  # (B, T) bool: prompt byte positions (BOS excluded)
    last_prompt: Tensor  # (B,) index of the last prompt byte (abstain head reads here)
    is_ood: Tensor  # (B,) float 0/1


def chat_batch(
    samples: Sequence[tuple[str, str, bool]],
    block_size: int,
    ce_on_ood: bool = True,
    device: str = "cpu",
) -> ChatBatch:
    """Build a batch from ``(question, answer, is_ood)``; CE targets cover answer tokens (and,
    with ``ce_on_ood=False``, only in-domain rows)."""
    seqs, prompt_lens = [], []
    for question, answer, _ in samples:
        prompt = encode(chat_prompt(question))
        full = prompt + list((" " + answer).encode("utf-8")) + [EOS]
        seqs.append(full[: block_size + 1])
        prompt_lens.append(min(len(prompt), block_size))
    t = max(len(s) for s in seqs) - 1
    b = len(seqs)
    idx = torch.full((b, t), PAD, dtype=torch.long)
    targets = torch.full((b, t), -100, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    prompt_mask = torch.zeros((b, t), dtype=torch.bool)
    for i, (seq, p_len, (_, _, ood)) in enumerate(zip(seqs, prompt_lens, samples, strict=True)):
        n = len(seq) - 1
        idx[i, :n] = torch.tensor(seq[:-1])
        mask[i, :n] = 1
        prompt_mask[i, 1:p_len] = True
        if ce_on_ood or not ood:
            targets[i, p_len - 1 : n] = torch.tensor(seq[p_len:])
    last = torch.tensor(prompt_lens) - 1
    is_ood = torch.tensor([float(s[2]) for s in samples])
    return ChatBatch(*(x.to(device) for x in (idx, mask, targets, prompt_mask, last, is_ood)))


def _draw(pool: Sequence[Any], n: int, gen: torch.Generator) -> list[Any]:
    return [pool[i] for i in torch.randint(len(pool), (n,), generator=gen).tolist()]


# ---- loss terms ---------------------------------------------------------------------------


def gate_entropy(gates: Tensor) -> Tensor:
    """``H(r) = -sum_k r_k ln r_k`` over the last axis (nats)."""
    return -(gates * gates.clamp_min(1e-12).log()).sum(-1)


def mean_prompt_entropy(gates: Tensor, prompt_mask: Tensor) -> Tensor:
    """``Hbar`` per row: entropy averaged over layers and prompt positions, shape ``(B,)``."""
    h = gate_entropy(gates).mean(-1)  # (B, T)
    m = prompt_mask.to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def mc_loss(gates: Tensor, prompt_mask: Tensor, is_ood: Tensor) -> Tensor:
    """``L_mc = mean_in Hbar - mean_ood Hbar`` (see the module docstring)."""
    hbar = mean_prompt_entropy(gates, prompt_mask)
    ood = is_ood.bool()
    return hbar[~ood].mean() - hbar[ood].mean()


def abstain_bce(abstain_p: Tensor, last_prompt: Tensor, is_ood: Tensor) -> Tensor:
    """``L_bce``: BCE of the abstain probability at the last prompt position vs ``is_ood``."""
    p = abstain_p[torch.arange(abstain_p.size(0), device=abstain_p.device), last_prompt]
    return F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), is_ood)


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    if not bool((targets != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def _add_mc_term(
    loss: Tensor, gates: Tensor, batch: ChatBatch, weight: float, ctx: JobContext
) -> tuple[Tensor, float]:
    """``loss + mc_weight * L_mc``; fires ``mc_weight`` when the term is added (weight != 0)."""
    value = mc_loss(gates, batch.prompt_mask, batch.is_ood)
    if weight != 0:
        loss = loss + weight * value
        ctx.knobs.fire("mc_weight")
    return loss, float(value.detach())


def _add_abstain_term(
    loss: Tensor, abstain_p: Tensor, batch: ChatBatch, weight: float, ctx: JobContext
) -> tuple[Tensor, float]:
    """``loss + abstain_weight * L_bce``; fires ``abstain_weight`` when the term is added, or
    when a zero weight drops a term whose default weight is nonzero."""
    value = abstain_bce(abstain_p, batch.last_prompt, batch.is_ood)
    if weight != 0:
        loss = loss + weight * value
        ctx.knobs.fire("abstain_weight")
    elif ctx.knobs.defaults.get("abstain_weight", 0) != 0:
        ctx.knobs.fire("abstain_weight")
    return loss, float(value.detach())


# ---- the training loop --------------------------------------------------------------------


def _train(
    ctx: JobContext,
    model: RoutedLM,
    step_loss: Callable[[int], tuple[Tensor, dict[str, float]]],
) -> list[dict[str, float]]:
    """AdamW (betas 0.9/0.95, no weight decay), linear warm-up over the first 10 % of steps,
    grad-norm clip 1.0, on the parameters of the ``trainable`` groups only."""
    steps = int(_knob(ctx, "steps"))
    lr = float(_knob(ctx, "lr"))
    trainable = group_parameters(model, resolve_groups(_knob(ctx, "trainable")))
    if not trainable:
        raise ValueError(f"job {ctx.job!r}: trainable={_knob(ctx, 'trainable')!r} selects nothing")
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    opt = torch.optim.AdamW(list(trainable.values()), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    model.train()
    history: list[dict[str, float]] = []
    ctx.knobs.fire("steps")
    for step in range(steps):
        loss, parts = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(trainable.values()), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        opt.step()
        ctx.knobs.fire("lr")
        ctx.knobs.fire("trainable")
        history.append({"loss": float(loss.detach()), **parts})
        if (step + 1) % 10 == 0 or step + 1 == steps:
            ctx.progress(step + 1, steps, f"{ctx.kind} {ctx.job}: loss {history[-1]['loss']:.3f}")
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return history


def _train_result(ctx: JobContext, model: RoutedLM, history: list[dict[str, float]]) -> JobResult:
    """Checkpoint + loss trajectory metrics (every ~5 % of the steps, each key of the history)."""
    t0 = time.perf_counter()
    path = _save(ctx, model, {"steps": len(history)})
    metrics: list[MetricValue] = []
    if history:
        every = max(1, len(history) // 20)
        for i in range(0, len(history), every):
            for key, value in history[i].items():
                metrics.append(MetricValue(key, value, step=i + 1))
        tail = history[-min(10, len(history)) :]
        for key in history[0]:
            metrics.append(MetricValue(f"final_{key}", sum(h[key] for h in tail) / len(tail)))
        metrics.append(MetricValue("first_loss", history[0]["loss"]))
    extra = {
        "n_params": model.num_parameters(),
        "config": model.cfg.name,
        "steps_run": len(history),
        "save_s": time.perf_counter() - t0,
    }
    return JobResult(metrics=metrics, checkpoint=path, extra=extra)


# ---- jobs ---------------------------------------------------------------------------------

TRAIN_DEFAULTS = {"steps": 150, "lr": 2e-3, "batch_size": 16, "trainable": "all"}


def pretrain(ctx: JobContext) -> JobResult:
    """Raw-text LM pretraining on ``corpus.txt`` (fresh model of knob ``model``, or ``init``)."""
    gen = _start(ctx, {**TRAIN_DEFAULTS, "model": "tiny", "init": None, "steps": 200, "lr": 3e-3})
    ctx.knobs.set_defaults({"seq_len": 64})
    model = _load_input(ctx, "init", required=False) if _knob(ctx, "init") else None
    if model is None:
        model = RoutedLM(get_config(str(_knob(ctx, "model")))).to(ctx.device)
        ctx.knobs.fire("model")
    data = torch.tensor(list(load_corpus().encode("utf-8")), dtype=torch.long)
    seq_len = int(_knob(ctx, "seq_len"))
    if not 1 <= seq_len <= model.cfg.block_size or seq_len >= len(data):
        raise ValueError(f"seq_len {seq_len} outside [1, {model.cfg.block_size}]")
    batch_size = int(_knob(ctx, "batch_size"))

    def step_loss(step: int) -> tuple[Tensor, dict[str, float]]:
        starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=gen)
        ctx.knobs.fire("batch_size")
        window = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])
        ctx.knobs.fire("seq_len")
        window = window.to(ctx.device)
        logits = model(window[:, :-1]).logits
        return _ce(logits, window[:, 1:]), {}

    return _train_result(ctx, model, _train(ctx, model, step_loss))


def chat_sft(ctx: JobContext) -> JobResult:
    """Chat SFT on ``chat_train`` (CE over answer tokens), from ``init`` / the single input."""
    gen = _start(ctx, {**TRAIN_DEFAULTS, "init": None})
    model = _load_input(ctx, "init")
    assert model is not None
    pool = [(r["question"], r["answer"], False) for r in load_chat("train")]
    batch_size = int(_knob(ctx, "batch_size"))

    def step_loss(step: int) -> tuple[Tensor, dict[str, float]]:
        samples = _draw(pool, batch_size, gen)
        ctx.knobs.fire("batch_size")
        batch = chat_batch(samples, model.cfg.block_size, device=ctx.device)
        out = model(batch.idx, batch.mask)
        return _ce(out.logits, batch.targets), {}

    return _train_result(ctx, model, _train(ctx, model, step_loss))


def _mixed_sampler(
    ctx: JobContext, gen: torch.Generator
) -> Callable[[], list[tuple[str, str, bool]]]:
    """Batches of ``batch_size`` with ``round(batch_size * ood_fraction)`` OOD samples."""
    ind = [(r["question"], r["answer"], False) for r in load_chat("train")]
    ood = [(r["question"], r["answer"], True) for r in load_ood_train()]
    batch_size = int(_knob(ctx, "batch_size"))
    fraction = float(_knob(ctx, "ood_fraction"))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"ood_fraction {fraction} outside [0, 1]")

    def sample() -> list[tuple[str, str, bool]]:
        n_ood = round(batch_size * fraction)
        ctx.knobs.fire("ood_fraction")
        samples = _draw(ind, batch_size - n_ood, gen) + _draw(ood, n_ood, gen)
        ctx.knobs.fire("batch_size")
        return samples

    return sample


def abstain_sft(ctx: JobContext) -> JobResult:
    """Abstain-aware SFT: in-domain chat + OOD answered ``I don't know.`` (CE over answers of
    both) + ``abstain_weight * L_bce`` on the abstain head. Produces the deployed base."""
    gen = _start(
        ctx,
        {
            **TRAIN_DEFAULTS,
            "init": None,
            "steps": 100,
            "lr": 1e-3,
            "ood_fraction": 0.25,
            "abstain_weight": 1.0,
        },
    )
    model = _load_input(ctx, "init")
    assert model is not None
    sample = _mixed_sampler(ctx, gen)
    weight = float(_knob(ctx, "abstain_weight"))

    def step_loss(step: int) -> tuple[Tensor, dict[str, float]]:
        batch = chat_batch(sample(), model.cfg.block_size, ce_on_ood=True, device=ctx.device)
        out = model(batch.idx, batch.mask)
        ce = _ce(out.logits, batch.targets)
        loss, bce = _add_abstain_term(ce, out.abstain_p, batch, weight, ctx)
        return loss, {"ce": float(ce.detach()), "abstain_bce": bce}

    return _train_result(ctx, model, _train(ctx, model, step_loss))


def joint_finetune(ctx: JobContext) -> JobResult:
    """Joint router + abstain finetune (v7 / v8a / v8b / corollary): CE on in-domain answers,
    ``mc_weight * L_mc`` and ``abstain_weight * L_bce``, only ``trainable`` groups updated."""
    gen = _start(
        ctx,
        {
            **TRAIN_DEFAULTS,
            "init": None,
            "steps": 60,
            "lr": 3e-3,
            "trainable": ["router", "abstain"],
            "ood_fraction": 0.5,
            "mc_weight": 0.0,
            "abstain_weight": 1.0,
        },
    )
    model = _load_input(ctx, "init")
    assert model is not None
    sample = _mixed_sampler(ctx, gen)
    mc_weight = float(_knob(ctx, "mc_weight"))
    ab_weight = float(_knob(ctx, "abstain_weight"))
    n_ood = round(int(_knob(ctx, "batch_size")) * float(_knob(ctx, "ood_fraction")))
    if not 0 < n_ood < int(_knob(ctx, "batch_size")):
        raise ValueError("joint_finetune needs in-domain and OOD samples in every batch")

    def step_loss(step: int) -> tuple[Tensor, dict[str, float]]:
        batch = chat_batch(sample(), model.cfg.block_size, ce_on_ood=False, device=ctx.device)
        out = model(batch.idx, batch.mask)
        ce = _ce(out.logits, batch.targets)
        loss, mc = _add_mc_term(ce, out.gates, batch, mc_weight, ctx)
        loss, bce = _add_abstain_term(loss, out.abstain_p, batch, ab_weight, ctx)
        with torch.no_grad():
            ood = batch.is_ood.bool()
            hbar = mean_prompt_entropy(out.gates, batch.prompt_mask)
            p = out.abstain_p[torch.arange(len(ood), device=ood.device), batch.last_prompt]
            gaps = {
                "entropy_gap": float(hbar[ood].mean() - hbar[~ood].mean()),
                "abstain_gap": float(p[ood].mean() - p[~ood].mean()),
            }
        return loss, {"ce": float(ce.detach()), "mc_loss": mc, "abstain_bce": bce, **gaps}

    return _train_result(ctx, model, _train(ctx, model, step_loss))


def splice(ctx: JobContext) -> JobResult:
    """Graft the parameters of ``groups`` from ``donor`` onto ``base`` (shapes must match)."""
    _start(ctx, {"base": None, "donor": None, "groups": ["abstain"]})
    for knob in ("base", "donor"):
        if _knob(ctx, knob) is None:
            raise ValueError(f"splice job {ctx.job!r} needs knob {knob!r}")
    base = _load_input(ctx, "base")
    donor = _load_input(ctx, "donor")
    assert base is not None and donor is not None
    if base.cfg != donor.cfg:
        raise ValueError(f"splice: base config {base.cfg} != donor config {donor.cfg}")
    groups = sorted(resolve_groups(_knob(ctx, "groups")))
    donor_params = dict(donor.named_parameters())
    copied = []
    with torch.no_grad():
        for name, p in group_parameters(base, groups).items():
            p.copy_(donor_params[name])
            copied.append(name)
    if copied:
        ctx.knobs.fire("groups")
    ctx.progress(1, 1, f"splice {ctx.job}: {len(copied)} tensors from donor")
    path = _save(ctx, base, {"spliced_groups": groups})
    n = sum(donor_params[c].numel() for c in copied)
    return JobResult(
        metrics=[MetricValue("spliced_params", float(n))],
        checkpoint=path,
        extra={"groups": groups, "copied": copied, "n_params": n},
    )


# ---- probe --------------------------------------------------------------------------------


@torch.no_grad()
def heldout_bpb(model: RoutedLM, batch_size: int = 64) -> float:
    """Teacher-forced bits per byte of the held-out chat answers (``" " + answer`` + EOS, given
    the chat prompt): ``sum(-log2 p) / #answer tokens``."""
    rows = load_chat("heldout")
    device = next(model.parameters()).device
    total_nats, total = 0.0, 0
    for start in range(0, len(rows), batch_size):
        samples = [(r["question"], r["answer"], False) for r in rows[start : start + batch_size]]
        batch = chat_batch(samples, model.cfg.block_size, device=str(device))
        logits = model(batch.idx, batch.mask).logits
        flat = batch.targets.reshape(-1)
        total_nats += float(
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), flat, reduction="sum")
        )
        total += int((flat != -100).sum())
    return total_nats / max(total, 1) / math.log(2)


def prompt_signals(gates: Tensor, n_layer: int) -> dict[str, float]:
    """Router signals from the prompt's gates ``(T, L, 3)`` (position 0 = BOS, excluded)."""
    g = gates[1:] if gates.size(0) > 1 else gates
    h = gate_entropy(g.double())  # (T, L)
    per_pos = h.mean(1)
    mean = float(per_pos.mean())
    signals = {
        "router_entropy_mean": mean,
        "router_entropy_var": float(per_pos.var(unbiased=False)),
        "router_conf": 1.0 - mean / LN3,
    }
    for layer in range(n_layer):
        signals[f"router_entropy_L{layer}"] = float(h[:, layer].mean())
    return signals


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Mann-Whitney AUROC ``P(pos > neg) + P(pos = neg) / 2`` over every (pos, neg) pair (nan
    when a class is empty)."""
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def gate_metrics(items: Sequence[tuple[str, float, bool]], cut: float) -> list[MetricValue]:
    """The paper's headline numbers from ``(group, abstain_p, refused)`` per probe item (see the
    module docstring): ``abstain_auroc``, ``abstain_p_mean.G``, ``refused.G``,
    ``fp_rate_at_cut`` (only when in_domain items were probed)."""
    neg = [a for g, a, _ in items if g == REFERENCE_GROUP]
    pos = [a for g, a, _ in items if g != REFERENCE_GROUP]
    out = []
    if neg and pos:
        out.append(MetricValue("abstain_auroc", auroc(pos, neg)))
    for group in dict.fromkeys(g for g, _, _ in items):
        mine = [(a, r) for g, a, r in items if g == group]
        out.append(MetricValue(f"abstain_p_mean.{group}", sum(a for a, _ in mine) / len(mine)))
        out.append(MetricValue(f"refused.{group}", float(sum(r for _, r in mine))))
    if neg:
        out.append(MetricValue("fp_rate_at_cut", sum(a >= cut for a in neg) / len(neg)))
    return out


def _batches(order: Sequence[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(order), size):
        yield list(order[i : i + size])


def probe(ctx: JobContext) -> JobResult:
    """Run the probe set through a checkpoint (see the module docstring for signals / labels).

    With ``model: "hf:PATH"`` the probe runs on a local Hugging Face mixture-of-experts
    checkpoint instead (:func:`docketml.runners.jobs.hf_probe.probe_hf`)."""
    if is_hf_ref(ctx.params.get("model")):
        from .hf_probe import probe_hf

        return probe_hf(ctx)
    _start(
        ctx,
        {
            "checkpoint": None,
            "max_new_tokens": 48,
            "batch_size": 32,
            "limit_per_group": None,
            "padding": "left",
            "deploy_cut": DEPLOY_CUT,
        },
    )
    model = _load_input(ctx, "checkpoint")
    assert model is not None
    model.eval()
    t0 = time.perf_counter()
    rows = probe_rows(ctx)
    max_new = int(_knob(ctx, "max_new_tokens"))
    batch_size = int(_knob(ctx, "batch_size"))
    padding = str(_knob(ctx, "padding"))
    room = model.cfg.block_size - max_new
    if max_new < 1 or room < 2:
        raise ValueError(f"max_new_tokens {max_new} outside [1, block_size - 2]")
    prompts, cropped = [], 0
    for row in rows:
        tokens = encode(row["prompt"])
        if len(tokens) > room:  # keep BOS and the prompt's tail (the question end + framing)
            tokens = [BOS] + tokens[len(tokens) - room + 1 :]
            cropped += 1
        prompts.append(tokens)
    order = sorted(range(len(rows)), key=lambda i: (len(prompts[i]), i))
    gens: dict[int, tuple[list[int], list[float], Tensor, float]] = {}
    for done, chunk in enumerate(_batches(order, batch_size), start=1):
        ctx.knobs.fire("batch_size")
        chunk_prompts = [prompts[i] for i in chunk]
        if len({len(p) for p in chunk_prompts}) > 1:
            ctx.knobs.fire("padding")
        gen = generate(model, chunk_prompts, max_new, padding=padding)
        ctx.knobs.fire("max_new_tokens")
        for j, i in enumerate(chunk):
            gens[i] = (gen.tokens[j], gen.max_probs[j], gen.prompt_gates[j], gen.abstain_p[j])
        ctx.progress(done, math.ceil(len(order) / batch_size), f"probe {ctx.job}")
    gen_s = time.perf_counter() - t0

    observations: list[Observation] = []
    texts: dict[str, str] = {}
    per_group: dict[str, dict[str, float]] = {}
    n_loop = n_refused = n_fail = n_labelled = 0
    gate_items: list[tuple[str, float, bool]] = []
    for i, row in enumerate(rows):
        tokens, max_probs, gates, abstain_p = gens[i]
        text = decode(t for t in tokens if t != EOS)
        refused, looped = is_refusal(text), is_loop(text)
        label = failure_label(row["group"], refused, looped)
        signals = {
            "max_softmax_mean": sum(max_probs) / len(max_probs),
            "max_softmax_last": max_probs[-1],
            **prompt_signals(gates, model.cfg.n_layer),
            "abstain_p": abstain_p,
            "refused": float(refused),
        }
        for name, value in signals.items():
            observations.append(Observation(row["group"], row["item"], name, float(value), label))
        texts[row["item"]] = text
        gate_items.append((row["group"], float(abstain_p), refused))
        stats = per_group.setdefault(
            row["group"], {"n": 0, "refused": 0, "looped": 0, "failed": 0, "abstain_p": 0.0}
        )
        stats["n"] += 1
        stats["refused"] += refused
        stats["looped"] += looped
        stats["failed"] += label or 0
        stats["abstain_p"] += abstain_p
        n_loop += looped
        n_refused += refused
        n_fail += label or 0
        n_labelled += label is not None
    for stats in per_group.values():
        for key in ("refused", "looped", "failed", "abstain_p"):
            stats[key] /= stats["n"]
    bpb = heldout_bpb(model)
    n = max(len(rows), 1)
    metrics = [
        MetricValue("coherence_bpb", bpb),
        MetricValue("loop_rate", n_loop / n),
        MetricValue("refusal_rate", n_refused / n),
        MetricValue("failure_rate", n_fail / max(n_labelled, 1)),
    ]
    cut = float(_knob(ctx, "deploy_cut"))
    if any(g == REFERENCE_GROUP for g, _, _ in gate_items):
        ctx.knobs.fire("deploy_cut")
    metrics += gate_metrics(gate_items, cut)
    extra = {
        "n_items": len(rows),
        "cropped_prompts": cropped,
        "per_group": per_group,
        "generation_s": gen_s,
        "total_s": time.perf_counter() - t0,
        "refusal_template": REFUSAL,
        "config": model.cfg.name,
    }
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)


JOBS: dict[str, JobFn] = {
    "pretrain": pretrain,
    "chat_sft": chat_sft,
    "abstain_sft": abstain_sft,
    "joint_finetune": joint_finetune,
    "splice": splice,
    "probe": probe,
}
