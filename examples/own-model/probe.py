"""Probe the trained model; run by docket as a `python` job (`entry: "probe:run_probe"`).

docket calls `run_probe(run)` with a `docketml.Run`; `run.inputs["train"]` is the checkpoint the
`train` job recorded. Every value goes through `run.observe_many` (validated, then written with
the run when the job ends).
"""

from __future__ import annotations

import torch
from model import MLP, blobs, boundary


def run_probe(run) -> None:  # noqa: ANN001 - a docketml.Run
    torch.set_num_threads(1)
    saved = torch.load(run.inputs["train"], weights_only=True)
    model = MLP(saved["hidden"])
    model.load_state_dict(saved["state"])
    n = run.knob("n_per_group", default=100)
    run.fire("n_per_group")
    x_in, _ = blobs(n // 2, seed=run.seed + 1)
    groups = {"in_domain": x_in, "boundary": boundary(n, seed=run.seed + 2)}
    with torch.no_grad():
        for group, x in groups.items():
            p = model(x).softmax(-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
            run.observe_many(
                row
                for i in range(len(x))
                for row in (
                    {"group": group, "item": f"{group}-{i}", "signal": "entropy",
                     "value": float(entropy[i])},
                    {"group": group, "item": f"{group}-{i}", "signal": "max_prob",
                     "value": float(p[i].max())},
                )
            )  # fmt: skip
