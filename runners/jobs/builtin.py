"""Small model-free job kinds, useful for smoke tests and for wiring checks.

- ``sleep``: sleeps ``seconds`` (knob), reports progress; emits nothing.
- ``fail``: raises ``RuntimeError(message)`` after ``seconds``.
- ``synthetic``: per-sample observations drawn from a seeded normal model of a metacognition
  study: for each group and signal, positives get ``effect`` standard deviations of separation in
  the signal's declared direction (knobs ``groups``, ``signals`` {name: positive|negative},
  ``n_per_class``, ``effect``, ``label_source``). Used by the distributed and lifecycle tests.
"""

from __future__ import annotations

import time

import numpy as np

from ..context import JobContext, JobResult, MetricValue, Observation


def sleep_job(ctx: JobContext) -> JobResult:
    ctx.knobs.set_defaults({"seconds": 1.0})
    seconds = float(ctx.knobs.get("seconds"))
    ctx.knobs.fire("seconds")
    steps = max(1, int(seconds * 10))
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(i + 1, steps, f"{ctx.job}: sleeping")
    return JobResult(metrics=[MetricValue("slept_s", seconds)])


def fail_job(ctx: JobContext) -> JobResult:
    ctx.knobs.set_defaults({"seconds": 0.0, "message": "deliberate failure"})
    time.sleep(float(ctx.knobs.get("seconds")))
    ctx.knobs.fire("seconds")
    ctx.knobs.fire("message")
    raise RuntimeError(str(ctx.knobs.get("message")))


def synthetic_job(ctx: JobContext) -> JobResult:
    ctx.knobs.set_defaults(
        {
            "groups": ["g1"],
            "signals": {"s": "positive"},
            "n_per_class": 30,
            "effect": 1.0,
            "seconds": 0.0,
        }
    )
    rng = np.random.default_rng(ctx.seed)
    groups = list(ctx.knobs.get("groups"))
    signals = dict(ctx.knobs.get("signals"))
    n = int(ctx.knobs.get("n_per_class"))
    effect = float(ctx.knobs.get("effect"))
    for knob in ("groups", "signals", "n_per_class", "effect"):
        ctx.knobs.fire(knob)
    seconds = float(ctx.knobs.get("seconds"))
    if seconds > 0:
        ctx.knobs.fire("seconds")
        time.sleep(seconds)
    observations = []
    for g in groups:
        for label in (0, 1):
            for i in range(n):
                item = f"{g}-{label}-{i}"
                for name, polarity in signals.items():
                    shift = effect * label * (1 if polarity == "positive" else -1)
                    observations.append(
                        Observation(g, item, name, float(rng.normal(shift, 1.0)), label)
                    )
    return JobResult(
        observations=observations, metrics=[MetricValue("n_observations", len(observations))]
    )


JOBS = {"sleep": sleep_job, "fail": fail_job, "synthetic": synthetic_job}
