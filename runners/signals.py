"""Registry of the signals the runners produce and what a high value of each means.

``higher_means`` is stated relative to the positive class of a metacognition protocol (the
model is failing / the input is out of domain): a confidence is ``negative`` (high = fine), an
entropy or an abstain probability is ``positive``. The sign-check compares a protocol's declared
polarity with this registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignalInfo:
    higher_means: str  # "positive" or "negative"
    description: str


SIGNALS: dict[str, SignalInfo] = {
    "max_softmax_mean": SignalInfo(
        "negative", "mean max-softmax probability over generated tokens (a confidence)"
    ),
    "max_softmax_last": SignalInfo(
        "negative", "max-softmax probability of the last generated token (a confidence)"
    ),
    "router_entropy_mean": SignalInfo(
        "positive", "mean router-gate entropy in nats over prompt positions"
    ),
    "router_entropy_var": SignalInfo(
        "positive", "variance of router-gate entropy over prompt positions"
    ),
    "router_entropy_per_layer": SignalInfo(
        "positive",
        "family: router_entropy_L{l}, layer l's router-gate entropy in nats averaged over prompt "
        "positions (one observation per layer; the protocols' SIGNAL_FAMILIES pattern)",
    ),
    "router_conf": SignalInfo(
        "negative",
        "1 - router_entropy_mean / log(n_experts) (log 3 for the built-in model; a confidence)",
    ),
    "abstain_p": SignalInfo("positive", "sigmoid of the abstain head on the final hidden state"),
    "refused": SignalInfo(
        "positive", "1 when the generation contains the refusal template, else 0"
    ),
}
