"""The protocol schema (pydantic v2). Every field is documented in docs/protocol.md.

Unknown keys are errors everywhere (``extra="forbid"``): a typo must never pass silently.
Cross-references between sections (a rule naming a signal, a job naming its dependencies, ...) are
checked by :func:`protocols.crosscheck.cross_check`, which reports paths so errors carry lines.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Identifier = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$", min_length=1, max_length=100)
]
ProtocolId = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-_.]*$", min_length=1, max_length=100)
]
EntryPoint = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
VerdictName = Literal["PROVEN", "PARTIAL", "DISPROVEN"]
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
# A seed every backend can store (BIGINT) and numpy/torch accept: 0 <= seed < 2**63.
Seed = Annotated[int, Field(ge=0, lt=2**63)]


SIGNAL_FAMILIES: dict[str, str] = {"router_entropy_per_layer": r"router_entropy_L(?:0|[1-9][0-9]*)"}
"""Signal families: a name that, declared under ``signals:``, stands for every signal whose name
fully matches its pattern (``router_entropy_per_layer`` = the per-layer router entropies
``router_entropy_L0``, ``router_entropy_L1``, ...). A member declared by its own name keeps its
own spec; the family name itself is never an observation (rules name the members)."""


def signal_family(name: str) -> str | None:
    """The family whose pattern ``name`` fully matches (:data:`SIGNAL_FAMILIES`), else None."""
    for family, pattern in SIGNAL_FAMILIES.items():
        if re.fullmatch(pattern, name):
            return family
    return None


class StrictModel(BaseModel):
    """Base of every section. ``strict``: a number field takes only a YAML number (``true``,
    ``"0.5"`` and ``"inf"`` are refused, not coerced); ``allow_inf_nan=False``: floats are finite.
    """

    model_config = ConfigDict(
        extra="forbid", populate_by_name=False, strict=True, allow_inf_nan=False
    )


class Hypothesis(StrictModel):
    """A claim, decided by one named decision rule."""

    id: Identifier
    statement: str = Field(min_length=1)
    rule: Identifier


class SignalSpec(StrictModel):
    """A per-sample signal and what a HIGH value of it means.

    ``higher_means: positive`` = a high value points to the label's positive class (failure / OOD);
    ``negative`` = a high value points away from it (a confidence). AUROCs are computed on the
    oriented score (the value, or minus the value for ``negative``); never auto-flipped.
    """

    higher_means: Literal["positive", "negative"]
    role: Literal["candidate", "baseline", "diagnostic"] = "candidate"
    description: str | None = None
    polarity_override_reason: str | None = None


class LabelSpec(StrictModel):
    """Where the binary label of a sample comes from.

    ``judged``: each sample carries its own 0/1 label (e.g. the judged failure of a generation).
    ``regime``: the group decides; samples of ``reference`` are the negatives, and each other group
    is compared with the reference (its samples are the positives).
    """

    source: Literal["judged", "regime"]
    positive: str = "positive"
    negative: str | None = None
    reference: str | None = None


class CISpec(StrictModel):
    """How a confidence interval is computed. ``seed`` makes every resample reproducible.
    ``clopper_pearson`` (the exact binomial interval) is the interval of the 0/1 statistics
    ``rate``, ``count``, ``fpr_at`` and ``tpr_at``, which always use it."""

    method: Literal["paired_bootstrap", "delong", "clopper_pearson"] = "paired_bootstrap"
    level: Probability = 0.95
    resamples: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    seed: Seed = 0


class VerdictThreshold(StrictModel):
    """Win-count conditions for one verdict of a ``regime_wins`` rule (all stated must hold)."""

    min_wins: Annotated[int, Field(ge=0)] | None = None
    max_wins: Annotated[int, Field(ge=0)] | None = None
    require_any_of: list[Identifier] = Field(default_factory=list)


class RegimeWinsRule(StrictModel):
    """Per group: each candidate vs the best baseline; a win needs delta >= margin and a CI of the
    delta that excludes 0. A group is won if any candidate (the family) wins there. Verdicts are
    tried in the order PROVEN, PARTIAL, DISPROVEN; the first whose conditions hold is returned."""

    kind: Literal["regime_wins"]
    metric: Literal["auroc"] = "auroc"
    candidates: list[Identifier] = Field(min_length=1)
    baselines: list[Identifier] | None = None
    margin: float = Field(ge=0.0, le=1.0)
    ci: CISpec = Field(default_factory=CISpec)
    best_baseline: Literal["fixed", "per_resample"] = "fixed"
    job: Identifier | None = None
    verdicts: dict[VerdictName, VerdictThreshold]


class ThresholdRule(StrictModel):
    """A scalar statistic with a CI against a bound: the CI's far side past the bound -> PROVEN,
    only the point estimate past it -> PARTIAL, else DISPROVEN.

    ``statistic: mean`` = mean of ``signal`` over samples (bootstrap CI over samples);
    ``auroc`` = pooled AUROC of ``signal`` (stratified bootstrap CI);
    ``metric`` = a scalar metric a job recorded (its recorded CI if any, else point only);
    ``rate`` = fraction of a 0/1 ``signal`` equal to 1; ``count`` = number of 1s (the bound is a
    count); ``fpr_at`` / ``tpr_at`` = fraction of label-0 / label-1 samples flagged at ``cut``
    (Clopper-Pearson CI for these four). ``groups``: only these groups' samples count (default:
    every protocol group).

    ``decide`` (0/1 statistics only; :meth:`decision`): ``ci`` = the CI's far side past the
    bound -> PROVEN, as above; ``observed`` = the observed value past the bound -> PROVEN, else
    DISPROVEN (an exact statement about the counted samples, no inference beyond them; the CI
    is still reported). Unset: ``observed`` for ``count``, ``ci`` for every other statistic.
    ``groups``, ``cut`` and ``decide`` are omitted from the canonical JSON when unset
    (:data:`OPTIONAL_RULE_FIELDS`)."""

    kind: Literal["threshold"]
    statistic: Literal["mean", "auroc", "metric", "rate", "count", "fpr_at", "tpr_at"]
    signal: Identifier | None = None
    metric: Identifier | None = None
    job: Identifier | None = None
    op: Literal[">=", ">", "<=", "<"] = ">="
    bound: float
    ci: CISpec = Field(default_factory=CISpec)
    groups: list[Identifier] | None = Field(default=None, min_length=1)
    cut: float | None = None
    decide: Literal["observed", "ci"] | None = None

    def decision(self, engine: int = 2) -> str:
        """How the rule is decided: ``decide`` if stated, else ``observed`` for ``count`` and
        ``ci`` for every other statistic (docs/protocol.md, "Observed or CI"). ``engine``: the
        verdict engine version of the protocol's freeze (``ledger.verdict.stats``); engine 1
        (protocols frozen before engine versions) decided ``count`` on its CI too, and its
        recorded verdicts must re-derive unchanged, so under engine 1 the default stays ``ci``."""
        if self.decide is not None:
            return self.decide
        return "observed" if self.statistic == "count" and engine >= 2 else "ci"


class NonInferiorityRule(StrictModel):
    """Candidate job's statistic is no worse than the reference job's by more than ``margin``:
    CI of (candidate - reference), oriented so higher is better, entirely above -margin -> PROVEN;
    point estimate only -> PARTIAL; else DISPROVEN. ``groups``: only these groups' samples count
    in both jobs (default: every protocol group; omitted from the canonical JSON when unset)."""

    kind: Literal["non_inferiority"]
    statistic: Literal["mean", "auroc"]
    signal: Identifier
    candidate_job: Identifier
    reference_job: Identifier
    margin: float = Field(ge=0.0)
    higher_is_better: bool = True
    ci: CISpec = Field(default_factory=CISpec)
    groups: list[Identifier] | None = Field(default=None, min_length=1)


class CombinationRule(StrictModel):
    """``all_of``: PROVEN iff every listed hypothesis is PROVEN, DISPROVEN if any is DISPROVEN.
    ``any_of``: PROVEN if any is PROVEN, DISPROVEN iff all are DISPROVEN. Otherwise INCONCLUSIVE
    when a listed hypothesis is INCONCLUSIVE, else PARTIAL."""

    kind: Literal["all_of", "any_of"]
    of: list[Identifier] = Field(min_length=1)


DecisionRule = Annotated[
    RegimeWinsRule | ThresholdRule | NonInferiorityRule | CombinationRule,
    Field(discriminator="kind"),
]


OPTIONAL_RULE_FIELDS = ("groups", "cut", "decide")
"""Decision-rule fields added after protocols were first hashed: omitted from the canonical JSON
when unset (None), so every protocol written before them keeps its sha256."""


class Correction(StrictModel):
    """A family-wise error correction over named hypotheses (``docs/protocol.md``, "Multiple
    hypotheses"). ``bonferroni``: each member's rule is decided with CI level ``1 - alpha / m``
    (``alpha = 1 - ci.level``, ``m`` = family size). ``holm``: the step-down sequence of levels
    ``1 - alpha / m, 1 - alpha / (m - r), ...`` (r = members PROVEN so far), which equals Holm's
    procedure on the p-values ``p_i = inf{a : rule i is PROVEN with CI level 1 - a}``."""

    method: Literal["holm", "bonferroni"]
    family: list[Identifier] = Field(min_length=2)


class SignCheckExample(StrictModel):
    """Raw inputs for which ``better`` must score better than ``worse`` under the direction."""

    better: dict[Identifier, float]
    worse: dict[Identifier, float]


class DerivedMetric(StrictModel):
    """A scalar metric derived from raw quantities by a safe arithmetic expression."""

    expr: str = Field(min_length=1)
    direction: Literal["higher_is_better", "lower_is_better"]
    sign_check: list[SignCheckExample] = Field(default_factory=list)


class Replicates(StrictModel):
    """The seeds a job is run with, declared before any run: ``docket run`` runs the job once per
    seed (the seed is the run's ``seed``), and ``docket ingest --seed S`` records one of them."""

    seeds: list[Seed] = Field(min_length=1, max_length=1000)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"duplicate seed(s) {repeated}; list each seed once")
        return value


SelectPolicy = Literal["first", "all", "median_of"]
"""Which runs of a job feed the verdict (docs/protocol.md "Replicates and run selection"):
``first`` (the default) the earliest succeeded run, later reruns never replace it; ``all`` every
declared seed's first succeeded run, observations averaged per item; ``median_of`` the declared
seed whose headline statistic is the (lower) median."""


class JobSpec(StrictModel):
    """A job the runners execute: its kind, dependencies, knobs and resources."""

    name: Identifier
    kind: Identifier
    after: list[Identifier] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    hardware: Identifier = "cpu"
    num_cpus: Annotated[float, Field(gt=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = 0.0
    estimate_seconds: Annotated[float, Field(gt=0)] | None = None
    seed: Seed | None = None
    description: str | None = None
    # kind ``python``: "package.module:function", called with a docketml Run
    entry: EntryPoint | None = None
    # kind ``command``: argv; "{param}" in an element is replaced by the job's param of that name
    command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None, min_length=1
    )
    # replicate seeds and how the verdict combines them; unset = one run, ``select: first``
    replicates: Replicates | None = None
    select: SelectPolicy | None = None

    def selection(self) -> str:
        """The job's selection policy: ``select`` if declared, else ``first``."""
        return self.select or "first"

    def declared_seeds(self) -> list[int] | None:
        """The declared replicate seeds, or None for a job without ``replicates``."""
        return list(self.replicates.seeds) if self.replicates is not None else None


OPTIONAL_JOB_FIELDS = ("entry", "command", "replicates", "select")
"""JobSpec fields added after protocols were first hashed: omitted from the canonical JSON when
unset, so every protocol written before them keeps its sha256 (protocols/canonical.py)."""

OPTIONAL_PROTOCOL_FIELDS = ("correction",)
"""Top-level protocol fields added after protocols were first hashed: omitted from the canonical
JSON when unset (None)."""


class Budget(StrictModel):
    """Spending cap in US dollars, enforced before each job starts."""

    model_config = ConfigDict(strict=False)  # money may be written "5.00" (exact) or 5.00

    usd: Decimal = Field(ge=0, max_digits=12, decimal_places=6)

    @field_validator("usd", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected an amount of US dollars, found a boolean")
        # YAML gives 5.00 as a float; str() of it is exact for any amount a human writes.
        return Decimal(str(value)) if isinstance(value, float) else value


class Claim(StrictModel):
    """A headline number bound to a job's metric; ``docket reproduce`` re-derives it."""

    job: Identifier
    metric: Identifier
    expected: float
    tolerance: float = Field(ge=0.0)
    description: str | None = None


class Protocol(StrictModel):
    """A pre-registered experiment (see docs/protocol.md for every field)."""

    docket: Literal[1]
    id: ProtocolId
    title: str = Field(min_length=1, pattern=r"\S")  # not blank
    description: str | None = None
    authors: list[str] = Field(default_factory=list)
    seed: Seed = 0
    hypotheses: list[Hypothesis] = Field(min_length=1)
    primary: Identifier | None = None
    signals: dict[Identifier, SignalSpec] = Field(default_factory=dict)
    labels: LabelSpec | None = None
    groups: list[Identifier] = Field(default_factory=list)
    decision_rules: dict[Identifier, DecisionRule] = Field(min_length=1)
    metrics: dict[Identifier, DerivedMetric] = Field(default_factory=dict)
    jobs: list[JobSpec] = Field(default_factory=list)
    budget: Budget | None = None
    claims: dict[Identifier, Claim] = Field(default_factory=dict)
    correction: Correction | None = None

    @field_validator("docket", mode="before")
    @classmethod
    def _format_version(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1 in Python; the format version is the number 1
            raise ValueError(f"expected the format version 1, found {value!r}")
        return value

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def signal_spec(self, name: str) -> SignalSpec | None:
        """The spec of signal ``name``: its own entry under ``signals:``, else its family's
        (:data:`SIGNAL_FAMILIES`) when the family is declared, else None."""
        spec = self.signals.get(name)
        if spec is not None:
            return spec
        family = signal_family(name)
        return None if family is None else self.signals.get(family)

    def declares_signal(self, name: str) -> bool:
        """True when observations of ``name`` belong to this protocol: declared by name or by
        family, and not a family name itself."""
        return name not in SIGNAL_FAMILIES and self.signal_spec(name) is not None

    def primary_hypothesis(self) -> str:
        return self.primary or self.hypotheses[0].id

    def baselines_for(self, rule: RegimeWinsRule) -> list[str]:
        if rule.baselines is not None:
            return list(rule.baselines)
        return [name for name, spec in self.signals.items() if spec.role == "baseline"]
