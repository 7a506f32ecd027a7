"""The canonical form and sha256 of a protocol: presentation does not change the hash, any value
does.

Stability: key order, comments, quoting, flow vs block style, omitted defaults, number spelling.
Sensitivity: every leaf of the shipped protocol is mutated in turn (programmatically) and, where
the result is still a valid protocol, its hash must differ from the original's.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from docketml.protocols import schema
from docketml.protocols.canonical import canonical_json, protocol_sha256
from docketml.protocols.crosscheck import cross_check
from docketml.protocols.loader import load_protocol_file, load_protocol_text
from docketml.protocols.schema import Protocol

SHIPPED = (
    Path(__file__).resolve().parents[1] / "protocols" / "library" / "router_entropy_metacog.yaml"
)
TEXT = SHIPPED.read_text(encoding="utf-8")


def sha(text: str) -> str:
    return load_protocol_text(text, "test.yaml").sha256


def sub(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def original() -> str:
    return load_protocol_file(SHIPPED).sha256


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return yaml.safe_load(TEXT)


def dump(data: Any, **style: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000, **style)


def reverse_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: reverse_keys(node[k]) for k in reversed(list(node))}
    if isinstance(node, list):
        return [reverse_keys(v) for v in node]
    return node


# --- the canonical form itself --------------------------------------------------------------


def test_canonical_json_is_sorted_compact_and_complete(original: str) -> None:
    loaded = load_protocol_file(SHIPPED)
    text = loaded.canonical
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    parsed = json.loads(text)
    # defaults are written out: a job without `hardware` gets the default, a signal its role
    assert parsed["jobs"][0]["hardware"] == "cpu"
    assert parsed["signals"]["router_entropy_mean"]["role"] == "candidate"
    assert parsed["budget"]["usd"] == "5"  # Decimal, normalised, as a string
    assert loaded.sha256 == original == protocol_sha256(loaded.protocol)
    assert canonical_json(loaded.protocol) == text


def test_hash_is_stable_across_processes_and_runs(original: str) -> None:
    assert sha(TEXT) == original
    assert len(original) == 64 and int(original, 16) >= 0


# --- stability --------------------------------------------------------------------------------


def test_reordered_keys_same_hash(original: str, data: dict[str, Any]) -> None:
    assert sha(dump(reverse_keys(data))) == original
    assert sha(dump(dict(sorted(data.items())))) == original


def test_comments_do_not_count(original: str) -> None:
    without = "\n".join(
        line for line in TEXT.splitlines() if not line.lstrip().startswith("#")
    ).replace("  # ", "  #")
    assert without != TEXT
    assert sha(without) == original
    more = "# a new header comment\n" + sub(TEXT, "seed: 1234\n", "seed: 1234  # the seed\n")
    assert sha(more) == original


def test_flow_block_and_quoting_style_do_not_count(original: str, data: dict[str, Any]) -> None:
    assert sha(dump(data, default_flow_style=False)) == original
    assert sha(dump(data, default_flow_style=True)) == original
    assert sha(json.dumps(data)) == original  # JSON is YAML too
    quoted = sub(TEXT, "id: router-entropy-metacog", 'id: "router-entropy-metacog"')
    quoted = sub(quoted, "    kind: regime_wins", "    kind: 'regime_wins'")
    quoted = sub(quoted, 'op: ">="\n    bound: 0.75', "op: '>='\n    bound: 0.75")
    assert sha(quoted) == original
    # the folded block scalar of `description` as one double-quoted string with the same text
    start = TEXT.index("description: >\n")
    end = TEXT.index("authors:", start)
    inline = TEXT[:start] + "description: " + json.dumps(data["description"]) + "\n" + TEXT[end:]
    assert sha(inline) == original
    # `>-` strips the final newline of the folded text: that is a different value
    assert sha(sub(TEXT, "description: >\n", "description: >-\n")) != original


def test_expression_spacing_does_not_count(original: str) -> None:
    for spelling in (
        "bpb_after-bpb_before",
        "(bpb_after - bpb_before)",
        " bpb_after  -  bpb_before",
    ):
        assert sha(sub(TEXT, "expr: bpb_after - bpb_before", f"expr: '{spelling}'")) == original
    assert sha(sub(TEXT, "expr: bpb_after - bpb_before", "expr: -(bpb_before - bpb_after)")) != (
        original
    )


def test_omitted_default_equals_written_default(original: str) -> None:
    written = sub(
        TEXT,
        "  router_entropy_mean: {higher_means: positive,",
        "  router_entropy_mean: {higher_means: positive, role: candidate,",
    )
    written = sub(
        written,
        "  - {name: pretrain, kind: pretrain, params: {model: tiny},",
        "  - {name: pretrain, kind: pretrain, after: [], hardware: cpu, num_cpus: 1, num_gpus: 0,"
        " params: {model: tiny},",
    )
    assert sha(written) == original
    # and the other way round: drop defaults the shipped file writes out
    omitted = sub(TEXT, "    metric: auroc\n", "")
    omitted = sub(omitted, "    best_baseline: fixed\n", "")
    assert sha(omitted) == original
    # an explicit null for an optional field is the same as leaving it out
    nulls = sub(
        TEXT, "{name: pretrain, kind: pretrain,", "{name: pretrain, kind: pretrain, seed: null,"
    )
    assert sha(nulls + "correction: null\n") == original


def test_number_spelling_does_not_count(original: str) -> None:
    assert sha(sub(TEXT, "    margin: 0.02\n", "    margin: 0.020\n")) == original
    assert sha(sub(TEXT, "    margin: 0.02\n", "    margin: 2.0e-2\n")) == original
    assert sha(sub(TEXT, "    margin: 0.02\n", "    margin: 2e-2\n")) == original
    assert sha(sub(TEXT, "    bound: 0.75\n", "    bound: 0.750\n")) == original
    assert sha(sub(TEXT, "budget: {usd: 5.00}", "budget: {usd: 5}")) == original
    assert sha(sub(TEXT, "budget: {usd: 5.00}", "budget: {usd: 5.0}")) == original
    assert sha(sub(TEXT, "budget: {usd: 5.00}", 'budget: {usd: "5.000"}')) == original
    # 5 vs 5.0 in a float field
    five = sub(TEXT, "    bound: 0.75\n", "    bound: 5\n")
    assert sha(five) == sha(sub(TEXT, "    bound: 0.75\n", "    bound: 5.0\n"))
    jobs = "  - {name: pretrain, kind: pretrain, params: {model: tiny},"
    one = sub(TEXT, jobs, jobs.replace("kind: pretrain,", "kind: pretrain, num_cpus: 1,"))
    assert sha(one) == sha(one.replace("num_cpus: 1,", "num_cpus: 1.0,")) == original
    # inside free-form params an integral float and the integer are the same number
    v7 = "params: {mc_weight: 20.0, abstain_weight: 1.0,"
    assert sha(sub(TEXT, v7, "params: {mc_weight: 20, abstain_weight: 1,")) == original
    # a YAML 1.2 exponent without a dot is a number, not the string "1e-3"
    lr = sub(TEXT, "params: {model: tiny}", "params: {model: tiny, lr: 1e-3}")
    assert sha(lr) == sha(sub(TEXT, "params: {model: tiny}", "params: {model: tiny, lr: 0.001}"))
    assert load_protocol_text(lr).protocol.jobs[0].params["lr"] == 0.001


def test_same_value_different_type_in_params_is_a_change(original: str) -> None:
    number = sub(TEXT, "params: {model: tiny}", "params: {model: tiny, layers: 4}")
    text = sub(TEXT, "params: {model: tiny}", 'params: {model: tiny, layers: "4"}')
    assert sha(number) != sha(text)
    assert original not in (sha(number), sha(text))


def test_close_floats_hash_differently(original: str) -> None:
    a = sha(sub(TEXT, "    margin: 0.02\n", "    margin: 0.30000000000000004\n"))
    b = sha(sub(TEXT, "    margin: 0.02\n", "    margin: 0.3\n"))
    assert a != b


# --- sensitivity: every leaf ------------------------------------------------------------------


def _literal_groups() -> list[tuple[Any, ...]]:
    """Every Literal[...] used by the schema, so a leaf can be set to another allowed value."""
    groups: list[tuple[Any, ...]] = []

    def collect(annotation: Any) -> None:
        origin = typing.get_origin(annotation)
        if origin is typing.Literal:
            groups.append(typing.get_args(annotation))
        for arg in typing.get_args(annotation):
            collect(arg)

    for obj in vars(schema).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            for field in obj.model_fields.values():
                collect(field.annotation)
    return groups


LITERALS = _literal_groups()


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, path + (i,))
    else:
        yield path, node


def set_at(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def rename_everywhere(node: Any, old: str, new: str, path: tuple[Any, ...] = ()) -> Any:
    """Rename an identifier in every key and value (except rule kinds), keeping references
    consistent."""
    if isinstance(node, dict):
        return {
            (new if k == old else k): rename_everywhere(v, old, new, path + (k,))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rename_everywhere(v, old, new, path + (i,)) for i, v in enumerate(node)]
    if node == old and not (path and path[-1] == "kind"):
        return new
    return node


def mutations(data: Any, path: tuple[Any, ...], value: Any) -> Iterator[Any]:
    """Documents that differ from ``data`` in the value at ``path`` (and references to it)."""
    if isinstance(value, bool):
        yield set_at(data, path, not value)
    elif isinstance(value, int):
        yield set_at(data, path, value + 1)
        yield set_at(data, path, value - 1)
    elif isinstance(value, float):
        for new in (value + 0.01, value - 0.01, value / 2, value * 2):
            yield set_at(data, path, new)
    elif isinstance(value, str):
        for group in LITERALS:
            if value in group:
                for other in group:
                    if other != value:
                        yield set_at(data, path, other)
        yield set_at(data, path, value + "x")
        if path[-1] != "kind":  # renaming skips kinds, it would not change this leaf
            yield rename_everywhere(data, value, value + "x")
        yield set_at(data, path, f"2 * ({value})")  # still an expression if it was one


def validated_sha256(data: Any) -> str | None:
    """The loader's pipeline after YAML parsing (schema, cross-checks, hash); None if invalid.
    (Parsing YAML ~1000 times would make this test slow; the YAML path is covered above.)"""
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError:
        return None
    if cross_check(protocol):
        return None
    return protocol_sha256(protocol)


def test_every_leaf_of_the_shipped_protocol_changes_the_hash(
    original: str, data: dict[str, Any]
) -> None:
    all_leaves = list(leaves(data))
    assert len(all_leaves) > 100
    unchanged: list[tuple[Any, ...]] = []
    for path, value in all_leaves:
        for mutated in mutations(data, path, value):
            if mutated == data:
                continue
            digest = validated_sha256(mutated)
            if digest is None:
                continue  # not a valid protocol any more: nothing to hash
            assert digest != original, f"changing {path} = {value!r} kept the hash"
            break
        else:
            unchanged.append(path)
    # only fields with a single allowed value cannot be changed into another valid protocol
    fixed = {
        ("docket",),
        ("decision_rules", "regime_wins", "kind"),
        ("decision_rules", "regime_wins", "metric"),
        ("labels", "source"),  # with a reference group, only "regime" is valid (judged refuses it)
        # the gates' statistics: a count's bound 9 is no proportion, a cut: is only for fpr_at /
        # tpr_at, decide: observed only for the 0/1 statistics, and under regime labels tpr_at
        # cannot read the reference group: no other statistic keeps these rules valid
        ("decision_rules", "gate_heldout_refusals", "statistic"),
        ("decision_rules", "gate_in_domain_fp", "statistic"),
    }
    fixed |= {("decision_rules", name, "kind") for name in data["decision_rules"]}
    assert set(unchanged) <= fixed, sorted(set(unchanged) - fixed)


def test_structural_changes_change_the_hash(original: str, data: dict[str, Any]) -> None:
    changed = copy.deepcopy(data)
    changed["groups"] = [g for g in changed["groups"] if g != "long_input"]
    assert sha(json.dumps(changed)) != original
    changed = copy.deepcopy(data)
    changed["decision_rules"]["regime_wins"]["candidates"].reverse()  # order is part of the value
    assert sha(json.dumps(changed)) != original
    changed = copy.deepcopy(data)
    changed["jobs"][0]["params"]["extra"] = None
    assert sha(json.dumps(changed)) != original
    changed = copy.deepcopy(data)
    changed["jobs"][0]["params"] = {"modl": "tiny"}  # a key is a value too
    assert sha(json.dumps(changed)) != original
