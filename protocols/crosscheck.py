"""Checks that need more than one section of a protocol: names that must refer to something.

Each problem is ``(path, message)``; the loader turns paths into lines.

Besides references, a protocol that could never run or never decide is refused here (before it
is frozen): duplicate entries in ``after``/``candidates``/``baselines``/``of``, verdict conditions
no outcome can meet (``min_wins`` above the number of compared groups, ``min_wins > max_wins``),
a decision rule no hypothesis uses, and, when the caller passes them (the CLI does), job kinds
and hardware names the runners do not know.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from .errors import did_you_mean
from .schema import (
    SIGNAL_FAMILIES,
    CombinationRule,
    NonInferiorityRule,
    Protocol,
    RegimeWinsRule,
    ThresholdRule,
)

Problem = tuple[tuple[str | int, ...], str]

BINARY_STATISTICS = ("rate", "count", "fpr_at", "tpr_at")
"""Threshold statistics of 0/1 outcomes; their CI is always Clopper-Pearson."""
PROPORTIONS = ("rate", "fpr_at", "tpr_at")


def _check_rule_menu(
    protocol: Protocol, base: tuple[str | int, ...], rule: Any, new: bool
) -> list[Problem]:
    """``groups:``, ``cut:``, the CI method and the bound of a threshold / non-inferiority
    rule (see docs/protocol.md, "Decision rules")."""
    problems: list[Problem] = []
    groups = set(protocol.groups)
    for j, g in enumerate(rule.groups or []):
        if g not in groups:
            problems.append((base + ("groups", j), "unknown group: " + _one_of(g, groups)))
    if new and rule.groups:
        problems += _duplicates(base + ("groups",), rule.groups)
    statistic = rule.statistic
    if statistic == "metric" and rule.groups:
        problems.append(
            (
                base + ("groups",),
                "statistic metric reads a recorded number; groups: selects samples",
            )
        )
    binary = isinstance(rule, ThresholdRule) and statistic in BINARY_STATISTICS
    explicit_method = "method" in rule.ci.model_fields_set
    if binary and explicit_method and rule.ci.method != "clopper_pearson":
        problems.append(
            (
                base + ("ci", "method"),
                f"statistic {statistic} uses the exact Clopper-Pearson interval; expected "
                f"method: clopper_pearson (or no method), found {rule.ci.method!r}",
            )
        )
    if not binary and rule.ci.method == "clopper_pearson":
        problems.append(
            (
                base + ("ci", "method"),
                "method clopper_pearson is the interval of the 0/1 statistics "
                f"({', '.join(BINARY_STATISTICS)}); statistic {statistic} expects "
                "paired_bootstrap or delong",
            )
        )
    if isinstance(rule, ThresholdRule):
        if rule.decide == "observed" and not binary:
            problems.append(
                (
                    base + ("decide",),
                    "decide: observed is for the 0/1 statistics "
                    f"({', '.join(BINARY_STATISTICS)}), whose observed value is an exact count of "
                    f"the counted samples; statistic {statistic} is an estimate, decided on its CI",
                )
            )
        if statistic in ("fpr_at", "tpr_at"):
            if rule.cut is None:
                problems.append((base + ("cut",), f"statistic {statistic} needs a cut: value"))
            if protocol.labels is None:
                problems.append((base, f"statistic {statistic} needs a top-level labels: section"))
            elif protocol.labels.source == "regime" and rule.groups:
                ref = protocol.labels.reference
                chosen = set(rule.groups)
                if statistic == "fpr_at" and ref not in chosen:
                    problems.append(
                        (
                            base + ("groups",),
                            f"fpr_at counts label-0 samples, which under regime labels are the "
                            f"reference group {ref!r}; list it in groups:",
                        )
                    )
                if statistic == "tpr_at" and not (chosen - {ref}):
                    problems.append(
                        (
                            base + ("groups",),
                            "tpr_at counts label-1 samples, which under regime labels are the "
                            f"groups other than the reference {ref!r}; list one in groups:",
                        )
                    )
        elif rule.cut is not None:
            problems.append(
                (base + ("cut",), f"cut: is for statistics fpr_at and tpr_at, not {statistic}")
            )
        if new and statistic in PROPORTIONS and not 0.0 <= rule.bound <= 1.0:
            problems.append(
                (base + ("bound",), f"a {statistic} is in [0, 1]; found bound {rule.bound:g}")
            )
        if new and statistic == "count" and rule.bound < 0:
            problems.append((base + ("bound",), f"a count is >= 0; found bound {rule.bound:g}"))
        if new and statistic in BINARY_STATISTICS:
            top = 1.0 if statistic in PROPORTIONS else None
            vacuous = (rule.op == ">=" and rule.bound <= 0) or (
                top is not None and rule.op == "<=" and rule.bound >= top
            )
            never = (rule.op == "<" and rule.bound <= 0) or (
                top is not None and rule.op == ">" and rule.bound >= top
            )
            if vacuous or never:
                problems.append(
                    (
                        base + ("op",),
                        f"{statistic} {rule.op} {rule.bound:g} "
                        + ("holds for any data" if vacuous else "can never hold")
                        + "; state a bound the data can pass or fail",
                    )
                )
    return problems


def _check_correction(protocol: Protocol) -> list[Problem]:
    """``correction.family``: existing, distinct hypotheses whose rules are CI-decided
    (``threshold`` on a statistic the engine computes and not ``decide: observed``, or
    ``non_inferiority``), on distinct rules, with one CI level."""
    corr = protocol.correction
    if corr is None:
        return []
    problems: list[Problem] = []
    hyps = {h.id: h for h in protocol.hypotheses}
    problems += _duplicates(("correction", "family"), corr.family)
    levels: dict[float, str] = {}
    rules_seen: dict[str, str] = {}
    for j, hid in enumerate(corr.family):
        where = ("correction", "family", j)
        if hid not in hyps:
            problems.append((where, "unknown hypothesis: " + _one_of(hid, set(hyps))))
            continue
        rule = protocol.decision_rules.get(hyps[hid].rule)
        if rule is None:
            continue
        if isinstance(rule, ThresholdRule) and rule.decision() == "observed":
            implied = "" if rule.decide else " (the default of statistic count)"
            problems.append(
                (
                    where,
                    f"hypothesis {hid!r} is decided by rule {hyps[hid].rule!r} on the observed "
                    f"value (decide: observed{implied}); a correction adjusts CI levels, so "
                    "expected a rule decided on its CI (decide: ci)",
                )
            )
            continue
        ok = isinstance(rule, NonInferiorityRule) or (
            isinstance(rule, ThresholdRule) and rule.statistic != "metric"
        )
        if not ok:
            what = rule.kind + (" on a recorded metric" if isinstance(rule, ThresholdRule) else "")
            problems.append(
                (
                    where,
                    f"hypothesis {hid!r} is decided by a {what} rule; a correction adjusts CI "
                    "levels, so expected a threshold (not statistic metric) or "
                    "non_inferiority rule",
                )
            )
            continue
        other = rules_seen.get(hyps[hid].rule)
        if other is not None and other != hid:
            problems.append(
                (
                    where,
                    f"hypotheses {other!r} and {hid!r} share rule {hyps[hid].rule!r}; a family "
                    "counts distinct tests",
                )
            )
        rules_seen[hyps[hid].rule] = hid
        levels.setdefault(rule.ci.level, hid)  # type: ignore[union-attr]
    if len(levels) > 1:
        shown = ", ".join(f"{h} {lv:g}" for lv, h in levels.items())
        problems.append(
            (
                ("correction", "family"),
                f"the family's rules declare different ci.level ({shown}); a family-wise "
                "correction needs one alpha",
            )
        )
    return problems


def _one_of(name: str, allowed: list[str] | set[str]) -> str:
    shown = ", ".join(sorted(allowed)) if allowed else "(none declared)"
    return f"expected one of: {shown}; found {name!r}{did_you_mean(name, allowed)}"


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _check_user_job(i: int, job: Any) -> list[Problem]:
    """``python`` jobs need ``entry``, ``command`` jobs need ``command`` (and every ``{name}`` in
    it must be a param of the job); neither field is allowed on another kind."""
    problems: list[Problem] = []
    for kind, key in (("python", "entry"), ("command", "command")):
        value = getattr(job, key)
        if job.kind == kind and value is None:
            problems.append((("jobs", i, "kind"), f"a {kind!r} job needs {key!r}"))
        elif job.kind != kind and value is not None:
            problems.append((("jobs", i, key), f"{key!r} is only for kind {kind!r} jobs"))
    for j, arg in enumerate(job.command or []):
        for name in _PLACEHOLDER.findall(arg):
            if name not in job.params:
                problems.append(
                    (("jobs", i, "command", j), "unknown param: " + _one_of(name, set(job.params)))
                )
    return problems


def _check_replicates(protocol: Protocol) -> list[Problem]:
    """``select: all | median_of`` needs ``replicates``; ``seed`` and ``replicates`` exclude each
    other (the replicates are the seeds); ``median_of`` needs a ``threshold`` or ``regime_wins``
    rule with ``job:`` naming the job (its point estimate is the headline statistic)."""
    problems: list[Problem] = []
    for i, job in enumerate(protocol.jobs):
        if job.select in ("all", "median_of") and job.replicates is None:
            problems.append(
                (
                    ("jobs", i, "select"),
                    f"select: {job.select} needs replicates: {{seeds: [...]}} on the job",
                )
            )
        if job.seed is not None and job.replicates is not None:
            problems.append(
                (
                    ("jobs", i, "seed"),
                    "give either seed or replicates (the replicates are the job's seeds)",
                )
            )
        if job.select == "median_of" and not any(
            isinstance(rule, ThresholdRule | RegimeWinsRule) and rule.job == job.name
            for rule in protocol.decision_rules.values()
        ):
            problems.append(
                (
                    ("jobs", i, "select"),
                    "select: median_of needs a threshold or regime_wins rule with "
                    f"job: {job.name} (its point estimate is the headline statistic)",
                )
            )
    return problems


def _duplicates(base: tuple[str | int, ...], names: Sequence[str]) -> list[Problem]:
    """One problem per repeated entry of a list that must hold each name once."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for j, name in enumerate(names):
        if name in first:
            problems.append(
                (base + (j,), f"duplicate entry {name!r} (also [{first[name]}]); list each once")
            )
        first.setdefault(name, j)
    return problems


def _check_runnable(
    protocol: Protocol, job_kinds: Collection[str] | None, hardware: Collection[str] | None
) -> list[Problem]:
    problems: list[Problem] = []
    for i, job in enumerate(protocol.jobs):
        if job_kinds is not None and job.kind not in job_kinds:
            problems.append(
                (("jobs", i, "kind"), "unknown job kind: " + _one_of(job.kind, set(job_kinds)))
            )
        known_hw = {h.lower() for h in hardware} if hardware is not None else None
        if known_hw is not None and job.hardware.strip().lower() not in known_hw:
            problems.append(
                (("jobs", i, "hardware"), "unknown hardware: " + _one_of(job.hardware, known_hw))
            )
    return problems


def _check_jobs(protocol: Protocol, admission: bool = True) -> list[Problem]:
    problems: list[Problem] = []
    for i, job in enumerate(protocol.jobs):
        if admission:
            problems += _duplicates(("jobs", i, "after"), job.after)
    names: dict[str, int] = {}
    for i, job in enumerate(protocol.jobs):
        if job.name in names:
            problems.append(
                (
                    ("jobs", i, "name"),
                    f"duplicate job name {job.name!r} (also jobs[{names[job.name]}])",
                )
            )
        names.setdefault(job.name, i)
    for i, job in enumerate(protocol.jobs):
        problems += _check_user_job(i, job)
        for j, dep in enumerate(job.after):
            if dep not in names:
                problems.append(
                    (("jobs", i, "after", j), "unknown job: " + _one_of(dep, set(names)))
                )
            elif dep == job.name:
                problems.append((("jobs", i, "after", j), "a job cannot run after itself"))
    if problems:
        return problems
    # cycle detection (depth-first, colouring)
    graph = {job.name: job.after for job in protocol.jobs}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                return trail + [node, dep]
            if state.get(dep) is None:
                found = visit(dep, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for name in graph:
        if state.get(name) is None:
            cycle = visit(name, [])
            if cycle:
                problems.append(
                    (("jobs", names[name], "after"), "dependency cycle: " + " -> ".join(cycle))
                )
                break
    return problems


def _declared(protocol: Protocol, name: str) -> bool:
    """A rule may read ``name``: declared by name or by family, and not a family name."""
    return protocol.declares_signal(name)


def _unknown_signal(name: str, signals: set[str]) -> str:
    if name in SIGNAL_FAMILIES:
        return (
            f"{name} is a signal family (pattern {SIGNAL_FAMILIES[name]}); a rule names its "
            "members, e.g. router_entropy_L0"
        )
    return "unknown signal: " + _one_of(name, signals)


def cross_check(
    protocol: Protocol,
    *,
    job_kinds: Collection[str] | None = None,
    hardware: Collection[str] | None = None,
    admission: bool = True,
) -> list[Problem]:
    """Every cross-reference problem of a schema-valid protocol (empty list = consistent).

    ``job_kinds`` / ``hardware``: the names the runners know; ``None`` skips that check (a stored
    protocol is re-read without them). ``admission=False`` (re-reading a protocol the ledger
    already holds) skips the could-never-run-or-decide checks, so a protocol registered by an
    earlier docket still reads; references are always checked."""
    problems: list[Problem] = []
    new = admission
    signals = set(protocol.signals)
    for name in sorted(signals & set(SIGNAL_FAMILIES)):
        spec = protocol.signals[name]
        if spec.role == "baseline":
            problems.append(
                (
                    ("signals", name, "role"),
                    f"{name} is a signal family; name its members as baselines instead",
                )
            )
    groups = set(protocol.groups)
    jobs = {job.name for job in protocol.jobs}
    hyp_ids = [h.id for h in protocol.hypotheses]
    rules = set(protocol.decision_rules)

    seen: set[str] = set()
    for i, hyp in enumerate(protocol.hypotheses):
        if hyp.id in seen:
            problems.append((("hypotheses", i, "id"), f"duplicate hypothesis id {hyp.id!r}"))
        seen.add(hyp.id)
        if hyp.rule not in rules:
            problems.append(
                (("hypotheses", i, "rule"), "unknown decision rule: " + _one_of(hyp.rule, rules))
            )
    used = {h.rule for h in protocol.hypotheses}
    for name in protocol.decision_rules:
        if (
            new and name not in used and used <= rules
        ):  # after a misspelt rule name, that is the news
            problems.append(
                (
                    ("decision_rules", name),
                    f"rule {name!r} is not used by any hypothesis; use it or remove it",
                )
            )
    if protocol.primary is not None and protocol.primary not in seen:
        problems.append((("primary",), "unknown hypothesis: " + _one_of(protocol.primary, seen)))
    if len(set(protocol.groups)) != len(protocol.groups):
        problems.append((("groups",), "groups must be unique"))

    if new and protocol.labels is not None and protocol.labels.source == "judged":
        if protocol.labels.reference is not None:
            problems.append(
                (
                    ("labels", "reference"),
                    "source: judged labels each item itself; a reference group is only for "
                    "source: regime",
                )
            )
    if protocol.labels is not None and protocol.labels.source == "regime":
        ref = protocol.labels.reference
        if ref is None:
            problems.append((("labels", "reference"), "source: regime needs a reference group"))
        elif ref not in groups:
            problems.append((("labels", "reference"), "unknown group: " + _one_of(ref, groups)))

    for name, rule in protocol.decision_rules.items():
        base = ("decision_rules", name)
        if rule.kind != "all_of" and rule.kind != "any_of" and getattr(rule, "job", None):
            if rule.job not in jobs:  # type: ignore[union-attr]
                problems.append((base + ("job",), "unknown job: " + _one_of(rule.job, jobs)))  # type: ignore[union-attr]
        if isinstance(rule, RegimeWinsRule):
            if protocol.labels is None:
                problems.append((base, "a regime_wins rule needs a top-level labels: section"))
            if not protocol.groups:
                problems.append((base, "a regime_wins rule needs the protocol's groups"))
            for j, cand in enumerate(rule.candidates):
                if not _declared(protocol, cand):
                    problems.append((base + ("candidates", j), _unknown_signal(cand, signals)))
            if new:
                problems += _duplicates(base + ("candidates",), rule.candidates)
                problems += _duplicates(base + ("baselines",), rule.baselines or [])
            compared = len(groups - {protocol.labels.reference} if protocol.labels else groups)
            baselines = protocol.baselines_for(rule)
            if not baselines:
                problems.append(
                    (
                        base + ("baselines",),
                        "no baseline: list baselines or mark a signal role: baseline",
                    )
                )
            for j, b in enumerate(rule.baselines or []):
                if not _declared(protocol, b):
                    problems.append((base + ("baselines", j), _unknown_signal(b, signals)))
                if b in rule.candidates:
                    problems.append(
                        (base + ("baselines", j), f"{b!r} is both candidate and baseline")
                    )
            if "PROVEN" not in rule.verdicts or "DISPROVEN" not in rule.verdicts:
                problems.append(
                    (base + ("verdicts",), "verdicts must define at least PROVEN and DISPROVEN")
                )
            for verdict, cond in rule.verdicts.items():
                if cond.min_wins is None and cond.max_wins is None and not cond.require_any_of:
                    problems.append(
                        (base + ("verdicts", verdict), "state min_wins, max_wins or require_any_of")
                    )
                where = base + ("verdicts", verdict)
                if new and cond.min_wins is not None and cond.min_wins > compared:
                    problems.append(
                        (
                            where + ("min_wins",),
                            f"min_wins {cond.min_wins} can never be met: {compared} group(s) are "
                            "compared",
                        )
                    )
                if (
                    new
                    and cond.min_wins is not None
                    and cond.max_wins is not None
                    and cond.min_wins > cond.max_wins
                ):
                    problems.append(
                        (
                            where + ("min_wins",),
                            f"min_wins {cond.min_wins} > max_wins {cond.max_wins}: no outcome "
                            "meets both",
                        )
                    )
                if new:
                    problems += _duplicates(where + ("require_any_of",), cond.require_any_of)
                for j, g in enumerate(cond.require_any_of):
                    if g not in groups:
                        problems.append(
                            (
                                base + ("verdicts", verdict, "require_any_of", j),
                                "unknown group: " + _one_of(g, groups),
                            )
                        )
        if isinstance(rule, ThresholdRule | NonInferiorityRule):
            problems += _check_rule_menu(protocol, base, rule, new)
        if isinstance(rule, ThresholdRule):
            if rule.statistic in ("mean", "auroc", *BINARY_STATISTICS):
                if rule.signal is None:
                    problems.append(
                        (base + ("signal",), f"statistic {rule.statistic} needs a signal")
                    )
                elif not _declared(protocol, rule.signal):
                    problems.append((base + ("signal",), _unknown_signal(rule.signal, signals)))
                if rule.statistic == "auroc" and protocol.labels is None:
                    problems.append((base, "statistic auroc needs a top-level labels: section"))
            if rule.statistic == "metric" and rule.metric is None:
                problems.append((base + ("metric",), "statistic metric needs a metric name"))
        elif isinstance(rule, NonInferiorityRule):
            if not _declared(protocol, rule.signal):
                problems.append((base + ("signal",), _unknown_signal(rule.signal, signals)))
            for key in ("candidate_job", "reference_job"):
                value = getattr(rule, key)
                if value not in jobs:
                    problems.append((base + (key,), "unknown job: " + _one_of(value, jobs)))
            if rule.statistic == "auroc" and protocol.labels is None:
                problems.append((base, "statistic auroc needs a top-level labels: section"))
        elif isinstance(rule, CombinationRule):
            if new:
                problems += _duplicates(base + ("of",), rule.of)
            for j, h in enumerate(rule.of):
                if h not in hyp_ids:
                    problems.append(
                        (base + ("of", j), "unknown hypothesis: " + _one_of(h, set(hyp_ids)))
                    )

    problems += _check_correction(protocol)

    # combination rules must not refer to themselves through their hypotheses
    rule_of_hyp = {h.id: h.rule for h in protocol.hypotheses}
    for i, hyp in enumerate(protocol.hypotheses):
        stack, seen_h = [hyp.id], set()
        while stack:
            current = stack.pop()
            rule = protocol.decision_rules.get(rule_of_hyp.get(current, ""))
            if isinstance(rule, CombinationRule):
                for h in rule.of:
                    if h == hyp.id:
                        problems.append(
                            (("hypotheses", i, "rule"), f"hypothesis {hyp.id!r} depends on itself")
                        )
                        stack = []
                        break
                    if h not in seen_h:
                        seen_h.add(h)
                        stack.append(h)

    for name, metric in protocol.metrics.items():
        from .expr import ExprError, parse_expr

        try:
            parsed = parse_expr(metric.expr)
        except ExprError as exc:
            problems.append((("metrics", name, "expr"), str(exc)))
            continue
        for k, example in enumerate(metric.sign_check):
            for side in ("better", "worse"):
                missing = parsed.names - set(getattr(example, side))
                if missing:
                    problems.append(
                        (
                            ("metrics", name, "sign_check", k, side),
                            f"missing values for {', '.join(sorted(missing))} used by expr",
                        )
                    )

    for name, claim in protocol.claims.items():
        if claim.job not in jobs:
            problems.append((("claims", name, "job"), "unknown job: " + _one_of(claim.job, jobs)))
    problems.extend(_check_jobs(protocol, admission))
    problems.extend(_check_replicates(protocol))
    problems.extend(_check_runnable(protocol, job_kinds, hardware))
    return problems
