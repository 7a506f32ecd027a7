"""What can be known about a job before it runs: its model checkpoint (``model: "hf:PATH"``).

``model_checks(job)`` returns ``[(subject, problem_or_None)]`` for every checkable input of the
job (today: an ``hf:`` checkpoint), without loading weights:

* the directory exists locally, holds ``config.json`` of a causal LM and weight files, and needs
  no remote code unless the job's params set ``trust_remote_code: true``
  (:func:`docketml.runners.models.hf.check_hf`);
* a job whose kind reads router signals (``probe``) gets a mixture-of-experts config: one whose
  config declares ``output_router_logits`` (Mixtral, Qwen-MoE, OLMoE and the like);
* a job declaring stage ``boundaries`` gets boundaries that fit the config's
  ``num_hidden_layers`` (:func:`docketml.runners.models.hf.check_boundaries`);
* a ``poe_card`` or ``poe_trajectory`` job may name a directory of ``step-N`` /
  ``checkpoint-N`` checkpoints (:func:`docketml.runners.jobs.poe_card_params.hf_checkpoint_dirs`):
  each is checked;
* a declared ``concepts`` prompt set (``poe_concepts``, ``poe_trajectory``) and ``prompts``
  list (``poe_kv_identity``, ``poe_trajectory``) have the shape
  :mod:`docketml.runners.models.greedy_checks` requires (subjects ``concepts``, ``prompts``).

The sign-check calls it for every job (so ``docket protocol signcheck``/``freeze`` refuse a
protocol whose checkpoint is missing or lacks router logits, naming the path), and the executor
calls it again when a job starts (the checkpoint may have changed since).

``param_checks(job, jobs)`` returns one message per bad param of a job whose kind declares its
param rules here (today ``poe_card``:
:func:`docketml.runners.jobs.poe_card_params.card_problems`), each naming the job and the field;
the number of stages is taken from what the protocol declares (the job's ``boundaries``, its
``heads`` dependency's, or the ``layout``/``model`` of the ``poe_train`` job it reads). The CLI's
sign-check turns any such message into a usage error (exit 2) before checking anything else."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docketml.protocols.schema import JobSpec

from ..models.concepts import parse_concepts, parse_prompts
from ..models.hf import HFModelError, check_boundaries, check_hf, hf_path, is_hf_ref

ROUTER_SIGNAL_KINDS = frozenset({"probe"})
"""Job kinds that read router signals from the model."""
CHECKPOINT_DIR_KINDS = frozenset({"poe_card", "poe_trajectory"})
"""Job kinds whose ``hf:`` model may be a directory of checkpoints."""
CONCEPT_KINDS = frozenset({"poe_concepts", "poe_trajectory"})
"""Job kinds that read a ``concepts`` prompt set."""
PROMPT_KINDS = frozenset({"poe_kv_identity", "poe_trajectory"})
"""Job kinds that read a declared ``prompts`` list."""


def _checkpoint_dirs(job: JobSpec, root: Path) -> list[Path]:
    """The checkpoint directories an ``hf:`` job reads: ``root``, or for a
    :data:`CHECKPOINT_DIR_KINDS` job every ``step-N`` / ``checkpoint-N`` directory under a
    ``root`` without ``config.json``."""
    if job.kind in CHECKPOINT_DIR_KINDS and root.is_dir() and not (root / "config.json").is_file():
        from .poe_card_params import hf_checkpoint_dirs

        return [path for _, path in hf_checkpoint_dirs(root)]
    return [root]


def declared_checks(job: JobSpec) -> list[tuple[str, str | None]]:
    """``[(field, problem)]`` for a declared ``concepts`` / ``prompts`` param (module doc)."""
    out: list[tuple[str, str | None]] = []
    declared = (
        ("concepts", CONCEPT_KINDS, parse_concepts),
        ("prompts", PROMPT_KINDS, parse_prompts),
    )
    for field, kinds, parse in declared:
        if job.kind in kinds and job.params.get(field) is not None:
            try:
                parse(job.params[field], f"job {job.name!r}")
                out.append((field, None))
            except ValueError as exc:
                out.append((field, str(exc)))
    return out


def model_checks(job: JobSpec) -> list[tuple[str, str | None]]:
    """``[(subject, problem)]`` for the job's checkpoint and declared inputs; empty when it
    declares none."""
    return declared_checks(job) + _hf_checks(job)


def _hf_checks(job: JobSpec) -> list[tuple[str, str | None]]:
    """``[(subject, problem)]`` for the job's ``hf:`` checkpoint(s) (module doc)."""
    ref = job.params.get("model")
    if not is_hf_ref(ref):
        return []
    subject = str(ref)
    try:
        for path in _checkpoint_dirs(job, hf_path(subject)):
            config = check_hf(path, bool(job.params.get("trust_remote_code", False)))
            if job.params.get("boundaries") is not None:
                layers = getattr(config, "num_hidden_layers", None)
                if layers is not None:
                    check_boundaries(job.params["boundaries"], int(layers), subject)
    except HFModelError as exc:
        return [(subject, str(exc))]
    if job.kind in ROUTER_SIGNAL_KINDS and not hasattr(config, "output_router_logits"):
        return [
            (
                subject,
                f"{subject}: model_type {config.model_type!r} has no router logits; the "
                f"{job.kind!r} job's router signals need a mixture-of-experts causal LM "
                "(Mixtral, Qwen-MoE, OLMoE and the like)",
            )
        ]
    return [(subject, None)]


def _layout_stages(params: dict[str, Any], kind: str) -> int | None:
    """Stages of a built-in PoE model declared by ``layout`` or a named ``model`` config."""
    layout = params.get("layout")
    if isinstance(layout, list | tuple):
        return len(layout)
    name = params.get("model")
    if name is None and kind == "poe_train":
        name = "tiny"  # poe_train's default model
    if not isinstance(name, str) or is_hf_ref(name):
        return None
    try:
        from ..models.poe import CONFIGS  # torch: only when a named config must be resolved
    except ImportError:
        return None
    cfg = CONFIGS.get(name)
    return cfg.n_stages if cfg is not None else None


def _declared_stages(job: JobSpec, by_name: dict[str, JobSpec], is_hf: bool) -> int | None:
    """The number of stages the protocol declares for ``job``'s model (module doc), or None."""
    params = job.params
    if is_hf:
        bounds = params.get("boundaries")
        if bounds is None and params.get("heads") in by_name:
            bounds = by_name[params["heads"]].params.get("boundaries")
        return len(bounds) if isinstance(bounds, list) else None
    if params.get("checkpoint") is not None:
        return None
    dep_name = params.get("input") or (job.after[0] if len(job.after) == 1 else None)
    dep = by_name.get(dep_name) if isinstance(dep_name, str) else None
    return _layout_stages(dep.params, dep.kind) if dep is not None else None


def param_checks(job: JobSpec, jobs: Sequence[JobSpec]) -> list[str]:
    """Messages for the bad params of ``job`` (module doc); empty when they are fine."""
    if job.kind != "poe_card":
        return []
    from .poe_card_params import card_problems

    params = job.params
    is_hf = is_hf_ref(params.get("model")) or params.get("heads") is not None
    has_heads = not is_hf or params.get("heads") is not None
    n_stages = _declared_stages(job, {j.name: j for j in jobs}, is_hf)
    return [f"job {job.name!r}: {p}" for p in card_problems(params, n_stages, has_heads)]
