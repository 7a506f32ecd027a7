"""Canonical JSON of a validated protocol and its sha256.

Canonical form: the validated model dumped in JSON mode with every default filled in, numbers
normalised (a float with an integral value is written as an integer, ``-0.0`` as ``0``; other
floats in Python's shortest round-trip repr; Decimals as strings of their normalised value), keys
sorted, no whitespace, UTF-8. Derived-metric expressions are written in one spelling
(``ast.unparse``: ``a-b``, ``a - b`` and ``(a - b)`` are the same expression). Comments, key order,
quoting style, omitted defaults and expression spacing therefore do not change the hash; any change
of a value does. Fields added later are left out when unset: job ``entry``, ``command``,
``replicates``, ``select`` (``OPTIONAL_JOB_FIELDS``), rule ``groups``, ``cut``, ``decide``
(``OPTIONAL_RULE_FIELDS``) and the top-level ``correction`` (``OPTIONAL_PROTOCOL_FIELDS``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from decimal import Decimal
from typing import Any

from .schema import OPTIONAL_JOB_FIELDS, OPTIONAL_PROTOCOL_FIELDS, OPTIONAL_RULE_FIELDS, Protocol


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} cannot be part of a protocol")
        if value == int(value) and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _expression(source: str) -> str:
    try:
        return ast.unparse(ast.parse(source.strip(), mode="eval"))
    except (SyntaxError, RecursionError, MemoryError):
        # the loader refuses these (protocols.expr bounds depth); keep the text if called on an
        # unchecked model
        return source


def canonical_json(protocol: Protocol) -> str:
    """The canonical JSON text (see module docstring)."""
    data = protocol.model_dump(mode="python")
    for metric in data.get("metrics", {}).values():
        metric["expr"] = _expression(metric["expr"])
    for job in data.get("jobs", []):
        for key in OPTIONAL_JOB_FIELDS:  # unset -> absent: older protocols keep their sha256
            if job.get(key) is None:
                job.pop(key, None)
    for rule in data.get("decision_rules", {}).values():
        for key in OPTIONAL_RULE_FIELDS:
            if rule.get(key, 0) is None:
                rule.pop(key)
    for key in OPTIONAL_PROTOCOL_FIELDS:
        if data.get(key, 0) is None:
            data.pop(key)
    return json.dumps(
        _normalise(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def protocol_sha256(protocol: Protocol) -> str:
    """Hex sha256 of the UTF-8 canonical JSON."""
    return hashlib.sha256(canonical_json(protocol).encode("utf-8")).hexdigest()
