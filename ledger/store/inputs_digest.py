"""A verdict's ``inputs_sha256``: the SHA-256 of its canonical inputs, in a recorded format.

The canonical inputs of a verdict are, per source key, its run ids, its effective metrics and
its effective observations (which rows count and how runs merge:
:mod:`docketml.ledger.store.results`). Two formats exist; a recorded verdict names its own in
``details_json["inputs_format"]`` (absent = 1), so a verdict hashed in format 1 is re-derived
in format 1 forever. Which format a new verdict uses is decided in one place,
:func:`docketml.ledger.verdicts.inputs_format`.

**Format 1** (:func:`canonical_inputs`, :class:`JsonInputsHasher`): per source key (sorted) its
run ids, its effective observations ``[group, item, signal, label, repr(value)]`` sorted, and
its effective metrics ``[name, repr(value), repr(ci_low), repr(ci_high)]`` sorted, as compact
JSON with sorted keys; the digest is the SHA-256 of its UTF-8 bytes. Writing ``repr`` of every
float is most of a large verdict's hashing time (5 s of 13 s at 10^7 observations).

**Format 2** (:class:`BinaryInputsHasher`, the default for new verdicts): SHA-256 over

* ``b"docket-inputs/2\n"``, then per source key in sorted (code-point) order:
* the line ``J(["source", key, run_ids, metrics]) + b"\n"``, ``metrics`` being ``[[name,
  value, ci_low, ci_high], ...]`` sorted by name (floats as JSON numbers, ``null`` for None);
* per group with observations, in code-point order of the group name, its ``n`` effective
  observations in canonical ``(item, signal)`` order as

  - the line ``J(["group", group, n, signals]) + b"\n"``, ``signals`` the group's distinct
    signal names sorted;
  - ``n`` item lengths (code points) as uint32, then the items' UTF-8 bytes concatenated;
  - ``n`` signal codes (the index of the row's signal in ``signals``) as uint32;
  - ``n`` label flags as uint8 (1: a label, 0: none), then ``n`` labels as int64 (0 where none);
  - ``n`` values as IEEE 754 doubles, every NaN written as ``0x7FF8000000000000``.

  Every integer and double is little-endian.

``J(x)`` is ``json.dumps(x, separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8
(Python's float ``repr`` for metric floats, ``NaN``/``Infinity`` as Python's ``json`` writes
them). The framing is unambiguous: a line starts with ``["source"`` or ``["group"`` and ends at
its first raw newline (JSON escapes newlines inside strings), ``n`` fixes every column's length
and the item lengths delimit the items. Values hashed as bytes instead of ``repr`` text tell
apart every double ``repr`` tells apart (``-0.0`` from ``0.0`` included), and no column costs
Python code per row (in py-spy profiles of a 10^7-observation verdict the hashing took 13-20 s
in format 1 and 2-5 s in format 2).

Both hashers take the same calls: per source key in sorted order :meth:`begin` (its metrics and
run ids), :meth:`rows` once per group with its effective observations in canonical ``(item,
signal)`` order, groups in order, then :meth:`end`; finally :meth:`hexdigest`.
:func:`inputs_sha256` feeds them from dict-held payloads, :func:`docketml.ledger.verdicts.
read_sources` from the ordered stream of :mod:`docketml.ledger.store.stream`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .stream import payload_blocks

if TYPE_CHECKING:
    from .results import SourcePayload

__all__ = [
    "INPUTS_FORMATS",
    "LATEST_INPUTS_FORMAT",
    "BinaryInputsHasher",
    "InputsHasher",
    "JsonInputsHasher",
    "canonical_inputs",
    "inputs_hasher",
    "inputs_sha256",
]

INPUTS_FORMATS = (1, 2)
LATEST_INPUTS_FORMAT = 2

Metrics = dict[str, tuple[float, float | None, float | None]]


class InputsHasher(Protocol):
    """What :func:`docketml.ledger.verdicts.read_sources` feeds (module docstring)."""

    def begin(self, key: str, metrics: Metrics, run_ids: Sequence[int]) -> None: ...

    def rows(self, group: str, items: Any, signals: Any, labels: Any, values: Any) -> None: ...

    def end(self) -> None: ...

    def hexdigest(self) -> str: ...


def _listed(x: Any) -> list[Any]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


class _KeyOrder:
    """Refuses a key fed twice or out of sorted order."""

    def __init__(self, what: str = "source") -> None:
        self.what = what
        self.last: str | None = None

    def next(self, key: str) -> bool:
        """Whether ``key`` is the first key; raises if it does not sort after the last one."""
        if self.last is not None and key <= self.last:
            raise ValueError(
                f"{self.what} {key!r} fed after {self.last!r}: each once, in sorted order"
            )
        first = self.last is None
        self.last = key
        return first


# ---------------------------------------------------------------------------- format 1


def _r(x: float | None) -> str | None:
    return None if x is None else repr(float(x))


def canonical_inputs(payloads: dict[str, SourcePayload]) -> str:
    """The canonical JSON of a verdict's inputs in format 1 (module docstring)."""
    doc = {
        key: {
            "runs": list(p.run_ids),
            "observations": sorted(
                [g, i, s, lab, repr(v)] for (g, i, s), (lab, v) in p.observations.items()
            ),
            "metrics": sorted([n, repr(v), _r(lo), _r(hi)] for n, (v, lo, hi) in p.metrics.items()),
        }
        for key, p in sorted(payloads.items())
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class JsonInputsHasher:
    """Format 1, incrementally: the bytes of :func:`canonical_inputs` fed to SHA-256 in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256(b"{")
        self._order = _KeyOrder()
        self._rows = 0
        self._run_ids: list[int] = []

    def _feed(self, text: str) -> None:
        self._sha.update(text.encode("utf-8"))

    def begin(self, key: str, metrics: Metrics, run_ids: Sequence[int]) -> None:
        lead = "" if self._order.next(key) else ","
        self._rows = 0
        self._run_ids = [int(r) for r in run_ids]
        mets = sorted([n, repr(v), _r(lo), _r(hi)] for n, (v, lo, hi) in metrics.items())
        self._feed(f'{lead}{_dumps(key)}:{{"metrics":{_dumps(mets)},"observations":[')

    def rows(self, group: str, items: Any, signals: Any, labels: Any, values: Any) -> None:
        """One block: aligned sequences (numpy arrays or lists) of one group's effective
        observations; ``values`` float. Each row is written as ``json.dumps`` writes
        ``[group, item, signal, label, repr(value)]`` (``encode_basestring`` is the encoder's
        own string function), assembled by slice assignment (per row: item, signal, label,
        value, separator) so no per-row Python code runs."""
        n = len(values)
        if not n:
            return
        sig_list, lab_list = _listed(signals), _listed(labels)
        sig_piece = {sig: f",{encode_basestring(sig)}," for sig in set(sig_list)}
        lab_piece = {lab: f'{_dumps(lab)},"' for lab in set(lab_list)}
        head = f"[{encode_basestring(group)},"
        sep = '"],' + head  # closes a row and opens the next
        pieces: list[str | None] = [None] * (5 * n)
        pieces[0::5] = map(encode_basestring, _listed(items))
        pieces[1::5] = map(sig_piece.__getitem__, sig_list)
        pieces[2::5] = map(lab_piece.__getitem__, lab_list)
        pieces[3::5] = map(repr, _listed(values))
        pieces[4::5] = [sep] * n
        text = head + "".join(pieces)[: 2 - len(sep)]  # type: ignore[arg-type]
        self._feed(text if not self._rows else "," + text)
        self._rows += n

    def end(self) -> None:
        self._feed(f'],"runs":{_dumps(self._run_ids)}}}')

    def hexdigest(self) -> str:
        sha = self._sha.copy()
        sha.update(b"}")
        return sha.hexdigest()


# ---------------------------------------------------------------------------- format 2

_MAGIC = b"docket-inputs/2\n"
_NAN = np.frombuffer(b"\x00\x00\x00\x00\x00\x00\xf8\x7f", dtype="<f8")[0]


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class BinaryInputsHasher:
    """Format 2 (module docstring): a JSON line per source and per group, then its columns."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256(_MAGIC)
        self._order = _KeyOrder()
        self._groups = _KeyOrder("group")

    def begin(self, key: str, metrics: Metrics, run_ids: Sequence[int]) -> None:
        self._order.next(key)
        self._groups = _KeyOrder("group")
        mets = [
            [name, float(v), None if lo is None else float(lo), None if hi is None else float(hi)]
            for name, (v, lo, hi) in sorted(metrics.items())
        ]
        self._sha.update(_line(["source", key, [int(r) for r in run_ids], mets]))

    def rows(self, group: str, items: Any, signals: Any, labels: Any, values: Any) -> None:
        """All of one group's effective observations (aligned sequences, ``values`` float,
        ``labels`` int or None); ``ValueError`` if the group does not sort after the source's
        previous one (a group sent in two blocks would hash differently, so it is refused)."""
        values = np.asarray(values, dtype="<f8")
        n = len(values)
        if not n:
            return
        self._groups.next(group)
        item_list, sig_list = _listed(items), _listed(signals)
        names = sorted(set(sig_list))
        code = {name: k for k, name in enumerate(names)}
        labels = np.asarray(labels, dtype=object)
        has = np.not_equal(labels, None)
        update = self._sha.update
        update(_line(["group", group, n, names]))
        update(np.fromiter(map(len, item_list), dtype="<u4", count=n).tobytes())
        update("".join(item_list).encode("utf-8"))
        update(np.fromiter(map(code.__getitem__, sig_list), dtype="<u4", count=n).tobytes())
        update(has.astype(np.uint8).tobytes())
        update(np.where(has, labels, 0).astype("<i8").tobytes())
        update(np.where(np.isnan(values), _NAN, values).astype("<f8").tobytes())

    def end(self) -> None:
        """Nothing closes a source in format 2: the next line names what follows."""

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def inputs_hasher(inputs_format: int) -> JsonInputsHasher | BinaryInputsHasher:
    """A fresh hasher of ``inputs_format`` (one of :data:`INPUTS_FORMATS`)."""
    if inputs_format == 1:
        return JsonInputsHasher()
    if inputs_format == 2:
        return BinaryInputsHasher()
    raise ValueError(f"inputs format {inputs_format!r}; known formats: {INPUTS_FORMATS}")


def inputs_sha256(payloads: dict[str, SourcePayload], inputs_format: int = 1) -> str:
    """``inputs_sha256`` of dict-held payloads (source key -> :class:`SourcePayload`): format 1
    is the SHA-256 of :func:`canonical_inputs`; format 2 feeds :class:`BinaryInputsHasher` the
    payload's :func:`docketml.ledger.store.stream.payload_blocks`."""
    if inputs_format == 1:
        return hashlib.sha256(canonical_inputs(payloads).encode("utf-8")).hexdigest()
    hasher = inputs_hasher(inputs_format)
    for key, payload in sorted(payloads.items()):
        hasher.begin(key, payload.metrics, payload.run_ids)
        for block in payload_blocks(payload):
            hasher.rows(block.group, block.items, block.signals, block.labels, block.values)
        hasher.end()
    return hasher.hexdigest()
