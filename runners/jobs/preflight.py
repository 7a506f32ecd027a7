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
* ``poe_trajectory`` with ``model: "hf:DIR"``: ``DIR`` is a directory of checkpoints
  (:func:`docketml.runners.jobs.hf_trajectory.list_hf_checkpoints`), each checked as above;
* a declared ``concepts`` prompt set (``poe_concepts``, ``poe_trajectory``) and ``prompts``
  list (``poe_kv_identity``, ``poe_trajectory``) have the shape
  :mod:`docketml.runners.models.greedy_checks` requires (subjects ``concepts``, ``prompts``).

The sign-check calls it for every job (so ``docket protocol signcheck``/``freeze`` refuse a
protocol whose checkpoint is missing or lacks router logits, naming the path), and the executor
calls it again when a job starts (the checkpoint may have changed since)."""

from __future__ import annotations

from docketml.protocols.schema import JobSpec

from ..models.greedy_checks import parse_concepts, parse_prompts
from ..models.hf import HFModelError, check_boundaries, check_hf, hf_path, is_hf_ref

ROUTER_SIGNAL_KINDS = frozenset({"probe"})
"""Job kinds that read router signals from the model."""


CONCEPT_KINDS = frozenset({"poe_concepts", "poe_trajectory"})
"""Job kinds that read a ``concepts`` prompt set."""
PROMPT_KINDS = frozenset({"poe_kv_identity", "poe_trajectory"})
"""Job kinds that read a declared ``prompts`` list."""


def model_checks(job: JobSpec) -> list[tuple[str, str | None]]:
    """``[(subject, problem)]`` for the job's checkpoint and declared inputs; empty when it
    declares none."""
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
    ref = job.params.get("model")
    if not is_hf_ref(ref):
        return out
    if job.kind == "poe_trajectory":
        from .hf_trajectory import list_hf_checkpoints

        try:
            paths = [path for _, path in list_hf_checkpoints(hf_path(str(ref)))]
        except HFModelError as exc:
            return [*out, (str(ref), str(exc))]
        return out + [item for path in paths for item in _checkpoint_check(job, f"hf:{path}")]
    return out + _checkpoint_check(job, str(ref))


def _checkpoint_check(job: JobSpec, subject: str) -> list[tuple[str, str | None]]:
    """One ``hf:`` checkpoint directory against what ``job`` needs (module doc)."""
    try:
        config = check_hf(hf_path(subject), bool(job.params.get("trust_remote_code", False)))
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
