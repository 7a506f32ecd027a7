"""The byte format of ``run_columns.body``: one group's effective observations of one run.

A finished run's observations never change (its Merkle leaf covers them), so
:mod:`.run_columns` stores them once, at completion, in the canonical ``(item, signal)`` order the
verdict reads (:class:`.blocks.GroupBlock`), and a verdict decodes a few large byte strings
instead of building a Python tuple per observation row.

Format ``docket-columns/1`` (all integers little-endian), for a chunk of ``n`` rows holding ``m``
runs of equal items (consecutive rows with the same item), ``b`` UTF-8 bytes of those items and
the sorted distinct signal names ``names``:

1. one line of compact JSON: ``["docket-columns/1", group, n, m, b, names]`` and ``\\n``;
2. ``uint32[m]``: the length of each item run's item in code points;
3. ``b`` bytes: those items in UTF-8, concatenated;
4. ``uint32[m]``: the number of rows of each item run (they sum to ``n``);
5. ``uint32[n]``: each row's signal as an index into ``names``;
6. ``uint8[n]``: 1 where the row has a label, 0 where it is NULL;
7. ``int64[n]``: the label (0 where NULL);
8. ``float64[n]``: the value, its exact bits (NaN payloads kept).

A group of more than :data:`CHUNK_ROWS` rows is split into consecutive chunks (each in this
format); the decoded chunks concatenated give the group. :func:`decode` refuses a body whose
parts do not add up to its length, so a truncated or padded body is an error, not a short group.
"""

from __future__ import annotations

import json

import numpy as np

from .blocks import GroupBlock

FORMAT = "docket-columns/1"
CHUNK_ROWS = 1_000_000  # 21 bytes a row plus the items: well under SQLite's 1 GB blob limit


def _line(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def encode(block: GroupBlock) -> bytes:
    """``block`` (rows in canonical order, at most :data:`CHUNK_ROWS` of them) as one body."""
    n = len(block)
    items = block.items
    starts = np.ones(n, dtype=bool)
    starts[1:] = items[1:] != items[:-1]
    first = np.flatnonzero(starts)
    distinct = items[first].tolist()
    counts = np.diff(np.append(first, n)).astype("<u4")
    signals = block.signals.tolist()
    names = sorted(set(signals))
    code = {name: k for k, name in enumerate(names)}
    labels = np.asarray(block.labels, dtype=object)
    has = np.not_equal(labels, None)
    text = "".join(distinct).encode("utf-8")
    parts = [
        _line([FORMAT, block.group, n, len(distinct), len(text), names]),
        np.fromiter(map(len, distinct), dtype="<u4", count=len(distinct)).tobytes(),
        text,
        counts.tobytes(),
        np.fromiter(map(code.__getitem__, signals), dtype="<u4", count=n).tobytes(),
        has.astype(np.uint8).tobytes(),
        np.where(has, labels, 0).astype("<i8").tobytes(),
        np.asarray(block.values, dtype="<f8").tobytes(),
    ]
    return b"".join(parts)


def chunks(block: GroupBlock) -> list[tuple[int, bytes]]:
    """``block`` as ``(rows, body)`` chunks of at most :data:`CHUNK_ROWS` rows, in order."""
    out = []
    for lo in range(0, max(len(block), 1), CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, len(block))
        part = GroupBlock(
            block.group,
            block.items[lo:hi],
            block.signals[lo:hi],
            block.labels[lo:hi],
            block.values[lo:hi],
        )
        out.append((hi - lo, encode(part)))
    return out


def decode(body: bytes) -> GroupBlock:
    """The rows of one body (module docstring); ``ValueError`` naming what is wrong when the
    bytes are not such a body."""
    cut = body.find(b"\n")
    try:
        tag, group, n, m, b, names = json.loads(body[:cut]) if cut > 0 else [None] * 6
    except ValueError:
        tag = None
    if tag != FORMAT:
        raise ValueError(f"not a {FORMAT} body (its first line is not the header)")
    size = cut + 1 + 8 * m + b + n * (4 + 1 + 8 + 8)
    if len(body) != size:
        raise ValueError(f"a {FORMAT} body of {n} rows must be {size} bytes, found {len(body)}")
    view = memoryview(body)
    off = cut + 1

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal off
        out = np.frombuffer(view, dtype=dtype, count=count, offset=off)
        off += out.nbytes
        return out

    lengths = take("<u4", m)
    text = bytes(view[off : off + b]).decode("utf-8")
    off += b
    counts = take("<u4", m)
    codes = take("<u4", n)
    has = take("u1", n).astype(bool)
    label_values = take("<i8", n)
    values = take("<f8", n).astype(np.float64)
    if int(counts.sum()) != n or (m and int(codes.max(initial=0)) >= len(names)):
        raise ValueError(f"a {FORMAT} body whose item runs or signal codes do not match its rows")
    ends = np.cumsum(lengths, dtype=np.int64)
    if (ends[-1] if m else 0) != len(text):
        raise ValueError(f"a {FORMAT} body whose item lengths do not match its text")
    distinct = np.empty(m, dtype=object)
    starts = (ends - lengths).tolist()
    distinct[:] = [text[lo:hi] for lo, hi in zip(starts, ends.tolist(), strict=True)]
    name_array = np.empty(len(names), dtype=object)
    name_array[:] = names
    labels = label_values.astype(object)
    labels[~has] = None
    return GroupBlock(
        str(group),
        np.repeat(distinct, counts.astype(np.int64)),
        name_array[codes] if n else np.empty(0, dtype=object),
        labels,
        values,
    )


def concatenate(parts: list[GroupBlock]) -> GroupBlock:
    """The chunks of one group (in chunk order) as one block."""
    if len(parts) == 1:
        return parts[0]
    return GroupBlock(
        parts[0].group,
        np.concatenate([p.items for p in parts]),
        np.concatenate([p.signals for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.values for p in parts]),
    )
