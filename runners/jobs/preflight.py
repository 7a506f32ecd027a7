"""What can be known about a job before it runs: its model checkpoint (``model: "hf:PATH"``).

``model_checks(job)`` returns ``[(subject, problem_or_None)]`` for every checkable input of the
job (today: an ``hf:`` checkpoint), without loading weights:

* the directory exists locally, holds ``config.json`` of a causal LM and weight files, and needs
  no remote code unless the job's params set ``trust_remote_code: true``
  (:func:`docketml.runners.models.hf.check_hf`);
* a job whose kind reads router signals (``probe``) gets a mixture-of-experts config: one whose
  config declares ``output_router_logits`` (Mixtral, Qwen-MoE, OLMoE and the like);
* a job declaring stage ``boundaries`` gets boundaries that fit the config's
  ``num_hidden_layers`` (:func:`docketml.runners.models.hf.check_boundaries`).

The sign-check calls it for every job (so ``docket protocol signcheck``/``freeze`` refuse a
protocol whose checkpoint is missing or lacks router logits, naming the path), and the executor
calls it again when a job starts (the checkpoint may have changed since)."""

from __future__ import annotations

from docketml.protocols.schema import JobSpec

from ..models.hf import HFModelError, check_boundaries, check_hf, hf_path, is_hf_ref

ROUTER_SIGNAL_KINDS = frozenset({"probe"})
"""Job kinds that read router signals from the model."""


def model_checks(job: JobSpec) -> list[tuple[str, str | None]]:
    """``[(subject, problem)]`` for the job's checkpoint; empty when it declares none."""
    ref = job.params.get("model")
    if not is_hf_ref(ref):
        return []
    subject = str(ref)
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
