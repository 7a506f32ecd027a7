"""The recorded formats of a verdict's inputs_sha256 (ledger.store.inputs_digest).

Format 2 is checked against a reference written here from the module docstring's text (the
values packed one by one with ``struct``, NaN tested with ``math.isnan``, the rows sorted from
the dict payloads), not against the hasher's own code. Format 1 is pinned to the digest the code
gave before format 2 existed, on the same payloads, so old verdicts keep reproducing.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

import numpy as np
import pytest

from docketml.ledger.store.inputs_digest import (
    BinaryInputsHasher,
    JsonInputsHasher,
    canonical_inputs,
    inputs_hasher,
    inputs_sha256,
)
from docketml.ledger.store.results import SourcePayload

ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]  # a NaN, other payload


def _payloads() -> dict[str, SourcePayload]:
    return {
        "job:probe": SourcePayload(
            [3, 1],
            {
                ("G", "b", "cand"): (1, 0.1),
                ("G", "a", "cand"): (0, -0.0),
                ("G", "a", "base"): (0, 1e-310),
                ("é", "😀", "cand"): (None, math.inf),
                ("a\n", 'q"u', "base"): (1, ODD_NAN),
            },
            {"acc": (0.7, 0.6, None), "auc": (0.5, None, None)},
        ),
        "*": SourcePayload([2], {("Z", "x", "s"): (1, 2.5)}, {}),
    }


def _j(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _double(x: float) -> bytes:
    return struct.pack("<Q", 0x7FF8000000000000) if math.isnan(x) else struct.pack("<d", x)


def reference_format2(payloads: dict[str, SourcePayload]) -> str:
    """Format 2 exactly as the module docstring words it."""
    out = bytearray(b"docket-inputs/2\n")
    for key in sorted(payloads):
        p = payloads[key]
        metrics = [[n, v, lo, hi] for n, (v, lo, hi) in sorted(p.metrics.items())]
        out += _j(["source", key, list(p.run_ids), metrics]) + b"\n"
        for group in sorted({g for g, _, _ in p.observations}):
            keys = sorted(k for k in p.observations if k[0] == group)
            names = sorted({sig for _, _, sig in keys})
            out += _j(["group", group, len(keys), names]) + b"\n"
            for _, item, _ in keys:
                out += struct.pack("<I", len(item))
            for _, item, _ in keys:
                out += item.encode("utf-8")
            for _, _, sig in keys:
                out += struct.pack("<I", names.index(sig))
            labels = [p.observations[k][0] for k in keys]
            for lab in labels:
                out += b"\x00" if lab is None else b"\x01"
            for lab in labels:
                out += struct.pack("<q", 0 if lab is None else lab)
            for k in keys:
                out += _double(p.observations[k][1])
    return hashlib.sha256(bytes(out)).hexdigest()


def test_format2_equals_the_documented_bytes() -> None:
    payloads = _payloads()
    assert inputs_sha256(payloads, 2) == reference_format2(payloads)


def test_format1_is_the_digest_from_before_format2() -> None:
    payloads = _payloads()
    pinned = "8b8888da8940f1e9114d49b1feefceb61d994e0c0729272838ecf30811d0da9d"
    assert inputs_sha256(payloads, 1) == pinned
    assert hashlib.sha256(canonical_inputs(payloads).encode()).hexdigest() == pinned
    assert inputs_sha256(payloads) == pinned  # the default stays format 1 for dict payloads
    assert inputs_sha256(payloads, 2) != pinned


def _one(value: float) -> dict[str, SourcePayload]:
    return {"*": SourcePayload([1], {("g", "i", "s"): (1, value)}, {})}


def test_format2_tells_apart_what_repr_tells_apart() -> None:
    digests = [inputs_sha256(_one(v), 2) for v in (0.0, -0.0, 0.1, math.nextafter(0.1, 1))]
    assert len(set(digests)) == 4
    # every NaN is one value, as repr writes every NaN as 'nan'
    assert inputs_sha256(_one(ODD_NAN), 2) == inputs_sha256(_one(math.nan), 2)
    assert inputs_sha256(_one(ODD_NAN), 1) == inputs_sha256(_one(math.nan), 1)


def test_format2_covers_labels_runs_metrics_and_names() -> None:
    base = inputs_sha256(_payloads(), 2)
    changed = []
    for edit in ("label", "run", "metric", "ci", "item", "group", "signal", "key"):
        p = _payloads()
        probe = p["job:probe"]
        if edit == "label":
            probe.observations[("G", "b", "cand")] = (0, 0.1)
        elif edit == "run":
            probe.run_ids = [1, 3]
        elif edit == "metric":
            probe.metrics["acc"] = (0.7000000000000001, 0.6, None)
        elif edit == "ci":
            probe.metrics["acc"] = (0.7, 0.6, 0.8)
        elif edit == "item":
            probe.observations[("G", "c", "cand")] = probe.observations.pop(("G", "b", "cand"))
        elif edit == "group":
            probe.observations[("H", "b", "cand")] = probe.observations.pop(("G", "b", "cand"))
        elif edit == "signal":
            probe.observations[("G", "b", "cbnd")] = probe.observations.pop(("G", "b", "cand"))
        else:
            p["job:probf"] = p.pop("job:probe")
        changed.append(inputs_sha256(p, 2))
    assert base not in changed and len(set(changed)) == len(changed)


@pytest.mark.parametrize("fmt", [1, 2])
def test_sources_out_of_order_are_refused(fmt: int) -> None:
    hasher = inputs_hasher(fmt)
    hasher.begin("job:b", {}, [1])
    hasher.end()
    with pytest.raises(ValueError, match="sorted order"):
        hasher.begin("job:a", {}, [2])


def test_format2_refuses_a_group_sent_twice() -> None:
    hasher = BinaryInputsHasher()
    hasher.begin("*", {}, [1])
    hasher.rows("g", ["i"], ["s"], [1], np.array([0.5]))
    with pytest.raises(ValueError, match="group 'g'"):
        hasher.rows("g", ["j"], ["s"], [1], np.array([0.5]))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="known formats"):
        inputs_hasher(3)
    assert isinstance(inputs_hasher(1), JsonInputsHasher)


def test_format2_framing_separates_what_concatenation_would_merge() -> None:
    """Items 'ab','c' against 'a','bc' (same concatenated bytes), a missing label against 0."""

    def two(items: tuple[str, str], labels: tuple[int | None, int | None]) -> str:
        obs = {("g", it, "s"): (lab, 0.5) for it, lab in zip(items, labels, strict=True)}
        return inputs_sha256({"*": SourcePayload([1], obs, {})}, 2)

    assert two(("ab", "c"), (1, 1)) != two(("a", "bc"), (1, 1))
    assert two(("a", "b"), (None, 1)) != two(("a", "b"), (0, 1))
