"""``docket ingest``: per-sample results produced anywhere, recorded as a run of a frozen protocol.

Formats
-------
* JSONL (``.jsonl``, ``.ndjson``, ``.json``, or content starting with ``{``): one object per
  line, ``{"group": str, "item": str|int, "label": 0|1|"<class name>", "signals": {name:
  number}}``; blank lines are skipped; any other key is an error.
* CSV (``.csv`` or anything else): a header ``group,item,label,<signal>,...`` then one row per
  item; an empty cell is a missing value.

Labels: ``1``/``0`` (also ``"1"``/``"0"``, ``true``/``false``), the protocol's positive class name
(-> 1) or its negative class name (-> 0). With ``labels.source: judged`` a label is required.
With ``source: regime`` the group decides (the reference group is 0, every other group 1): the
label may be left empty, and a label that contradicts the group is an error. Without a
``labels:`` section a label is optional.

Signals: every row must carry the signals the rules fed by this job read (for ``--job X``: rules
with ``job: X``, rules without ``job:`` and ``non_inferiority`` rules naming X), plus every
signal that appears anywhere in the file (a file is rectangular). Values must be finite numbers.

Strictness: a JSONL signal value must be a JSON number (``"0.5"`` and ``"1_000"`` are refused); a
CSV cell must be a plain decimal number (``0.5``, ``-1e-3``; no ``_``; never ``inf``/``nan``). An
integer too large for a float, a number of more than ``MAX_NUMBER_DIGITS`` digits, JSON nested
deeper than Python can parse and a key repeated within one JSON object are problems of their line.
``group`` is at most ``MAX_GROUP_CHARS`` and ``item`` at most ``MAX_ITEM_CHARS`` characters (the
ledger's columns) and neither may contain NUL, so SQLite and PostgreSQL accept the same files. The
file must be a regular file of at most ``MAX_INGEST_BYTES`` bytes.

Optional companion files (JSONL, one object per line, blank lines skipped, any other key an
error; the same strict numbers as the results file):

* ``--metrics FILE``: per-step scalar metrics, ``{"name": str, "value": number, "step": int}``;
  ``step`` is optional (``null`` or absent: a final value), else an integer >= 0. ``name`` is at
  most ``MAX_METRIC_NAME_CHARS`` characters; a ``(name, step)`` pair may appear once. Which row
  counts is the ledger's one rule (``store.results.effective_metrics``).
* ``--texts FILE``: generated texts, ``{"item": str|int, "text": str}``; an item at most
  ``MAX_ITEM_CHARS`` characters and once per file; no NUL in either.

Provenance: the caller passes the record of ``runners.execute.provenance.provenance`` (the one
used by the executors and the API: git commit, dirty flag and diff sha256 of the working
directory, Python/torch/CUDA versions, host, device); it is stored as ``config.provenance`` and
``git_sha`` exactly as for an executed run.

Cost (:class:`IngestCost`): ``hardware`` from the catalog with ``seconds`` (metered exactly as a
built-in job, ``billing.hardware.cost_micros``) and/or ``usd_micros`` (recorded as given); one
cost row attached to the run (``billing.bill.add_manual_cost``), ``runs.cost_micros`` equal to it.

Validation is complete before anything is written: every problem of every file is reported as
``FILE:LINE: message`` (all at once, the first ``MAX_PROBLEMS_SHOWN`` in line order and the
count; exit 2) and the ledger is left untouched. The results file is streamed: read, parsed and
validated one line at a time, its rows spooled to a temporary file (``TMPDIR``; a full disk there
is exit 4) from which the whole-file checks (duplicate items, signals present on other rows) and
the write read them back, so memory does not grow with the file (8 bytes per row remain, the
hashes of the duplicate check). A valid file is
recorded in ONE short transaction (parsing happens before it, outside any transaction, so a long
file never holds the ledger's write lock) as a ``succeeded`` run (source ``ingest``, job
``ingest`` or ``--job``) bound to the latest frozen version, with the file's sha256 as
``input_sha256``. Ingesting into a protocol that was never frozen is refused (exit 1).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import pickle
import re
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.protocols.reading import FileRefused, iter_lines, open_bounded, read_bounded
from docketml.protocols.schema import NonInferiorityRule, Protocol, RegimeWinsRule, ThresholdRule

from .billing.bill import add_manual_cost, user_catalog
from .billing.hardware import UnknownHardwareError
from .errors import EnvironmentRefused, UserError
from .store import protocols as store
from .store.db import Ledger
from .store.models import ProtocolRow, RunRow
from .store.runs import complete_run, create_run, reap_abandoned, start_run
from .verdict.rules import rule_sources

DEFAULT_JOB = "ingest"
MAX_PROBLEMS_SHOWN = 200
MAX_REVALIDATIONS = 3  # a version frozen between validation and write: validate again
JSONL_KEYS = ("group", "item", "label", "signals")
MAX_INGEST_BYTES = 4 << 30
MAX_GROUP_CHARS = 100  # observations.grp
MAX_ITEM_CHARS = 200  # observations.item
MAX_METRIC_NAME_CHARS = 100  # metrics.name
METRIC_KEYS = ("name", "value", "step")
TEXT_KEYS = ("item", "text")
MAX_NUMBER_DIGITS = 400  # below Python's 4300-digit int limit; past any float anyway
# a plain decimal numeral; nan/inf spellings pass here so they are named "not finite" below
_DECIMAL = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))$")


class _Huge(str):
    """A JSON integer literal of more than ``MAX_NUMBER_DIGITS`` digits (kept as text)."""

    def __repr__(self) -> str:
        return f"an integer of {len(self.lstrip('-'))} digits"


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_int(text: str) -> int | _Huge:
    return _Huge(text) if len(text) > MAX_NUMBER_DIGITS else int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _Problems:
    """The problems of one file, bounded: every problem is counted, the first
    ``MAX_PROBLEMS_SHOWN`` in (line, check order) are kept. ``stage`` orders the checks of one
    line as the whole-file validation did: 0 the row's own fields, 1 its duplicate, 2 its
    label and values, 3 the missing-signal check."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, int, int, str]] = []
        self.total = 0

    def add(self, line: int, message: str, stage: int = 0) -> None:
        self.total += 1
        self.kept.append((line, stage, self.total, message))
        if len(self.kept) > 8 * MAX_PROBLEMS_SHOWN:
            self.kept.sort()
            del self.kept[MAX_PROBLEMS_SHOWN:]

    def first(self) -> list[tuple[int, str]]:
        self.kept.sort()
        return [(line, msg) for line, _, _, msg in self.kept[:MAX_PROBLEMS_SHOWN]]


def _spool_refused(exc: OSError) -> EnvironmentRefused:
    return EnvironmentRefused(
        f"cannot write ingest's temporary file in {tempfile.gettempdir()} ({exc.strerror}); "
        "free space there or point TMPDIR elsewhere"
    )


class _Spool:
    """Validated rows on disk (a temporary file, pickled batches), so a file of any size is
    held in memory one batch at a time."""

    BATCH = 10_000

    def __init__(self) -> None:
        try:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise _spool_refused(exc) from None
        self.batch: list[tuple[Any, ...]] = []

    def add(self, row: tuple[Any, ...]) -> None:
        self.batch.append(row)
        if len(self.batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            try:
                pickle.dump(self.batch, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            except OSError as exc:
                raise _spool_refused(exc) from None
            self.batch = []

    def rows(self) -> Iterator[tuple[Any, ...]]:
        self.flush()
        self.file.seek(0)
        while True:
            try:
                batch = pickle.load(self.file)
            except EOFError:
                return
            yield from batch

    def close(self) -> None:
        self.file.close()


@dataclass
class Parsed:
    """The validated content of a results file: counts, the first problems (``problems``, at
    most ``MAX_PROBLEMS_SHOWN``, line order; ``problem_count`` of them in all), the file's
    sha256 and its observations, read back from disk by :meth:`observation_rows`."""

    format: str
    items: int = 0
    signals: list[str] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    problem_count: int = 0
    observations: int = 0
    sha256: str = ""
    spool: _Spool | None = None

    def observation_rows(self) -> Iterator[dict[str, Any]]:
        """The observations in file order (per row, the signals in ``signals`` order)."""
        assert self.spool is not None
        for _line, group, item, lab, values, _failed, _keyed in self.spool.rows():
            for name in self.signals:
                yield {"group": group, "item": item, "label": lab, "signal": name,
                       "value": values[name]}  # fmt: skip

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def required_signals(protocol: Protocol, job: str) -> list[str]:
    """Signals read by the rules that data recorded under ``job`` feeds."""
    out: list[str] = []
    for rule in protocol.decision_rules.values():
        sources = rule_sources(rule)
        if job not in sources and None not in sources:
            continue
        if isinstance(rule, RegimeWinsRule):
            names = list(rule.candidates) + protocol.baselines_for(rule)
        elif isinstance(rule, ThresholdRule | NonInferiorityRule):
            names = [rule.signal] if rule.signal and rule.statistic != "metric" else []
        else:
            names = []
        out += [n for n in names if n not in out]
    return out


class _Labeler:
    def __init__(self, protocol: Protocol) -> None:
        self.spec = protocol.labels

    def parse(self, raw: Any, group: str) -> tuple[int | None, str | None]:
        """(label, problem): the stored label of a row, or a sentence saying what is wrong."""
        spec = self.spec
        empty = raw is None or (isinstance(raw, str) and raw.strip() == "")
        value: int | None = None
        if not empty:
            if isinstance(raw, bool):
                value = int(raw)
            elif isinstance(raw, int | float) and raw in (0, 1):
                value = int(raw)
            elif isinstance(raw, str) and raw.strip() in ("0", "1"):
                value = int(raw.strip())
            elif spec is not None and isinstance(raw, str) and raw.strip() == spec.positive:
                value = 1
            elif (
                spec is not None
                and spec.negative
                and isinstance(raw, str)
                and (raw.strip() == spec.negative)
            ):
                value = 0
            else:
                names = ["0", "1"]
                if spec is not None:
                    names.append(repr(spec.positive))
                    if spec.negative:
                        names.append(repr(spec.negative))
                return None, f"bad label {raw!r}: expected one of {', '.join(names)}"
        if spec is None:
            return value, None
        if spec.source == "judged":
            if value is None:
                return None, "missing label: this protocol's labels are judged per item (0 or 1)"
            return value, None
        expected = 0 if group == spec.reference else 1
        if value is not None and value != expected:
            role = (
                f"the reference group ({spec.negative or 'negative'}, label 0)"
                if expected == 0
                else f"an out-of-reference group ({spec.positive}, label 1)"
            )
            return None, (
                f"label {raw!r} contradicts the regime: group {group!r} is {role}; leave the label "
                "empty or make it match"
            )
        return expected, None


def _number(raw: Any, text_ok: bool) -> tuple[float | None, str | None]:
    """(value, problem) of one signal value: a JSON number, or (``text_ok``: CSV) a plain
    decimal numeral."""
    if isinstance(raw, _Huge):
        return None, f"{raw!r} is too large for a result value"
    if isinstance(raw, bool) or raw is None:
        return None, f"non-numeric value {raw!r}"
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            return None, f"integer {_short(raw)} is too large for a result value"
    elif isinstance(raw, str) and text_ok:
        text = raw.strip()
        if len(text) > MAX_NUMBER_DIGITS + 20:
            return None, f"value of {len(text)} characters is too long for a number"
        if not _DECIMAL.match(text):
            return None, f"non-numeric value {_short(raw)} (expected a plain decimal number)"
        value = float(text)
    elif isinstance(raw, str):
        return None, f"non-numeric value {_short(raw)} (a string; expected a JSON number)"
    else:
        return None, f"non-numeric value {_short(raw)}"
    if not math.isfinite(value):
        return None, f"value {raw!r} is not finite (NaN/inf are not results)"
    return value, None


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**60 else "(huge)"
    return text if len(text) <= 60 else text[:57] + "..."


def _text_problem(what: str, value: str, limit: int) -> str | None:
    """Why ``value`` cannot be stored in a ``limit``-character column, or ``None``."""
    if "\x00" in value:
        return f"{what} contains a NUL character"
    if len(value) > limit:
        return f"{what} is {len(value)} characters long; at most {limit} are allowed"
    return None


class _Validator:
    """Row-level checks shared by the JSONL and CSV readers, streamed: each row is checked
    when read and spooled to disk; what needs the whole file (duplicates, signals present on
    other rows) is checked by :meth:`finish` reading the spool back. Memory: one batch, the
    kept problems and 8 bytes per row (the hashes of its (group, item) for the duplicate
    check)."""

    def __init__(self, protocol: Protocol, job: str, text_numbers: bool) -> None:
        self.text_numbers = text_numbers
        self.protocol = protocol
        self.groups = set(protocol.groups)
        self.known = set(protocol.signals)
        self.required = required_signals(protocol, job)
        self.labeler = _Labeler(protocol)
        self.problems = _Problems()
        self.spool = _Spool()
        self.hashes = array("q")
        self.count = 0

    def problem(self, line: int, message: str, stage: int = 0) -> None:
        self.problems.add(line, message, stage)

    def row(self, line: int, group: Any, item: Any, label: Any, signals: dict[str, Any]) -> None:
        """Check one row (every problem is recorded) and spool it for :meth:`finish`."""
        keyed = True
        if not isinstance(group, str) or not group.strip():
            self.problem(line, f"group must be a non-empty string, found {_short(group)}")
            keyed = False
        elif why := _text_problem("group", group, MAX_GROUP_CHARS):
            self.problem(line, why)
            keyed = False
        elif self.groups and group not in self.groups:
            self.problem(
                line,
                f"unknown group {group!r}; expected one of: {', '.join(self.protocol.groups)}",
            )
            keyed = False
        if (
            isinstance(item, bool | _Huge)
            or not isinstance(item, str | int)
            or str(item).strip() == ""
        ):
            self.problem(line, f"item must be a non-empty string or integer, found {_short(item)}")
            keyed = False
        elif why := _text_problem("item", str(item), MAX_ITEM_CHARS):
            self.problem(line, why)
            keyed = False
        if keyed:
            self.hashes.append(hash((group, str(item))))
        lab, why = self.labeler.parse(label, group if isinstance(group, str) else "")
        if why:
            self.problem(line, why, 2)
        values: dict[str, float] = {}
        failed: list[str] = []
        for name, raw in signals.items():
            if not self.protocol.declares_signal(name):
                known = ", ".join(sorted(self.known)) or "(none declared)"
                self.problem(line, f"unknown signal {name!r}; the protocol declares: {known}", 2)
                continue
            value, why = _number(raw, self.text_numbers)
            if why:
                self.problem(line, f"signal {name!r}: {why}", 2)
                failed.append(name)
            else:
                assert value is not None
                values[name] = value
        self.spool.add((line, str(group), str(item), lab, values, failed, keyed))
        self.count += 1

    def finish(self, present_everywhere: set[str], parsed: Parsed) -> None:
        """Duplicate items and missing signals (both need the whole file), read back from the
        spool; fills ``parsed``."""
        wanted = list(self.required) + sorted(present_everywhere - set(self.required))
        wanted = [w for w in wanted if self.protocol.declares_signal(w)]
        hashes = np.frombuffer(self.hashes, dtype=np.int64) if self.hashes else np.empty(0)
        ordered = np.sort(hashes)
        twice = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        seen: dict[tuple[str, str], int] = {}  # only rows whose hash occurs twice
        observations = 0
        for line, group, item, _lab, values, failed, keyed in self.spool.rows():
            if keyed and twice and hash((group, item)) in twice:
                key = (group, item)
                if key in seen:
                    self.problem(
                        line,
                        f"duplicate item {item!r} in group {group!r} (first on line {seen[key]})",
                        1,
                    )
                else:
                    seen[key] = line
            absent = [w for w in wanted if w not in values and w not in failed]
            if absent:
                why = (
                    "read by this protocol's rules"
                    if set(absent) & set(self.required)
                    else "present on other rows"
                )
                self.problem(line, f"missing signal(s) {', '.join(absent)} ({why})", 3)
                continue
            observations += len(wanted)
        parsed.items = self.count
        parsed.signals = wanted
        parsed.observations = observations
        parsed.spool = self.spool


def _detect(path: Path, first: str) -> str:
    """The format of ``path``: by its suffix, else by ``first`` (its first non-blank text)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if first.lstrip().startswith("{") else "csv"


class _NotUtf8(Exception):
    def __init__(self, line: int, offset: int) -> None:
        super().__init__(line, offset)
        self.line, self.offset = line, offset


class _Lines:
    """The decoded physical lines of a results file (each with its ``\\n``), its sha256 and
    the first non-blank text (for :func:`_detect`), read once, in order; raises
    :class:`_NotUtf8` at the first line that is not UTF-8 (a UTF-8 BOM is skipped)."""

    def __init__(self, raw: Iterator[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.ahead: list[str] = []
        self.line = 0
        self.offset = 0  # bytes before the current line, BOM excluded

    def _decode(self, data: bytes) -> str:
        self.sha.update(data)
        if self.line == 0 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        self.line += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _NotUtf8(self.line, self.offset + exc.start) from None
        self.offset += len(data)
        return text

    def first_text(self) -> str:
        """The first line with non-whitespace text ('' if none), kept for :meth:`__iter__`."""
        for data in self.raw:
            text = self._decode(data)
            self.ahead.append(text)
            if text.strip():
                return text
        return ""

    def __iter__(self) -> Iterator[str]:
        yield from self.ahead
        self.ahead = []
        for data in self.raw:
            yield self._decode(data)

    def hexdigest(self) -> str:
        """The file's sha256, after reading (and checking the UTF-8 of) what a reader that
        stopped early left: a bad byte anywhere is the file's one problem."""
        for data in self.raw:
            self._decode(data)
        return self.sha.hexdigest()


def _parse_jsonl(lines: Iterable[str], v: _Validator) -> set[str]:
    present: set[str] = set()
    # physical lines: only "\n" ends a line (str.splitlines also breaks at U+2028, \x0c, ...)
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, parse_int=_parse_int, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            v.problem(n, f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        except _DuplicateKey as exc:
            v.problem(n, f"duplicate JSON key {exc.key!r}: each key may appear once per object")
            continue
        except RecursionError:
            v.problem(n, "JSON nested too deeply; expected a flat object")
            continue
        if not isinstance(obj, dict):
            v.problem(n, f"expected a JSON object, found {type(obj).__name__}")
            continue
        extra = sorted(set(obj) - set(JSONL_KEYS))
        if extra:
            v.problem(n, f"unknown key(s) {', '.join(extra)}; expected {', '.join(JSONL_KEYS)}")
        absent = [k for k in ("group", "item", "signals") if k not in obj]
        if absent:
            v.problem(n, f"missing key(s) {', '.join(absent)}")
            continue
        signals = obj["signals"]
        if not isinstance(signals, dict):
            v.problem(n, f"signals must be an object of name -> number, found {signals!r}")
            continue
        present |= set(signals)
        v.row(n, obj["group"], obj["item"], obj.get("label"), signals)
    return present


def _parse_csv(lines: Iterable[str], v: _Validator) -> set[str]:
    # the lines are physical "\n" lines: the reader's line_num counts them
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        return set()
    except csv.Error as exc:
        v.problem(1, f"malformed CSV header: {exc}")
        return set()
    header = [h.strip() for h in header]
    if header[:3] != ["group", "item", "label"]:
        v.problem(1, f"the header must start with group,item,label; found {','.join(header[:3])}")
        return set()
    signals = header[3:]
    ok_cols = []
    for name in signals:
        if name not in v.known:
            known = ", ".join(sorted(v.known)) or "(none declared)"
            v.problem(1, f"unknown signal column {name!r}; the protocol declares: {known}")
        elif name in ok_cols:
            v.problem(1, f"duplicate signal column {name!r}")
        else:
            ok_cols.append(name)
    if len(ok_cols) != len(signals):
        return set()
    line = 1
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            v.problem(start, f"malformed CSV: {exc}")
            break
        line = start
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            v.problem(line, f"expected {len(header)} fields, found {len(cells)}")
            continue
        values = {name: cells[3 + k] for k, name in enumerate(signals) if cells[3 + k].strip()}
        v.row(line, cells[0].strip(), cells[1].strip(), cells[2].strip() or None, values)
    return set(signals)


def parse_results(protocol: Protocol, path: Path, job: str) -> Parsed:
    """Validate the results file ``path`` completely, streaming it (see :class:`_Validator`);
    ``Parsed.problems`` lists the first (line, message) problems. The caller closes it."""
    try:
        with open_bounded(path, MAX_INGEST_BYTES, "JSONL or CSV file") as handle:
            lines = _Lines(iter_lines(handle, MAX_INGEST_BYTES, "JSONL or CSV file"))
            v: _Validator | None = None
            try:
                fmt = _detect(path, lines.first_text())
                v = _Validator(protocol, job, text_numbers=fmt == "csv")
                present = _parse_jsonl(lines, v) if fmt == "jsonl" else _parse_csv(lines, v)
                digest = lines.hexdigest()
            except _NotUtf8 as exc:
                if v is not None:
                    v.spool.close()
                parsed = Parsed("unknown")
                parsed.problems = [(exc.line, f"not valid UTF-8 at byte {exc.offset}")]
                parsed.problem_count = 1
                return parsed
    except FileRefused as exc:
        raise UserError(f"{path}: {exc}") from None
    parsed = Parsed(fmt, sha256=digest)
    if not v.count and not v.problems.total:
        v.spool.close()
        parsed.problems, parsed.problem_count = [(1, "no result rows in the file")], 1
        return parsed
    v.finish(present, parsed)
    parsed.problems, parsed.problem_count = v.problems.first(), v.problems.total
    return parsed


def _jsonl_objects(data: bytes, keys: tuple[str, ...], required: tuple[str, ...]):  # noqa: ANN202
    """(line, object, problems) of every non-blank line of a companion JSONL file; an object is
    None when its line cannot be used at all."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield data[: exc.start].count(b"\n") + 1, None, [f"not valid UTF-8 at byte {exc.start}"]
        return
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, parse_int=_parse_int, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            yield n, None, [f"malformed JSON: {exc.msg} at column {exc.colno}"]
            continue
        except _DuplicateKey as exc:
            yield n, None, [f"duplicate JSON key {exc.key!r}: each key may appear once per object"]
            continue
        except RecursionError:
            yield n, None, ["JSON nested too deeply; expected a flat object"]
            continue
        if not isinstance(obj, dict):
            yield n, None, [f"expected a JSON object, found {type(obj).__name__}"]
            continue
        problems = []
        extra = sorted(set(obj) - set(keys))
        if extra:
            problems.append(f"unknown key(s) {', '.join(extra)}; expected {', '.join(keys)}")
        absent = [k for k in required if k not in obj]
        if absent:
            problems.append(f"missing key(s) {', '.join(absent)}")
            obj = None
        yield n, obj, problems


def parse_metrics(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """(metric rows, problems) of a ``--metrics`` file (module docstring)."""
    rows: list[dict[str, Any]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[tuple[str, int | None], int] = {}
    for n, obj, found in _jsonl_objects(data, METRIC_KEYS, ("name", "value")):
        problems += [(n, p) for p in found]
        if obj is None:
            continue
        ok = not found
        name, step = obj["name"], obj.get("step")
        if not isinstance(name, str) or not name.strip():
            problems.append((n, f"name must be a non-empty string, found {_short(name)}"))
            ok = False
        elif why := _text_problem("name", name, MAX_METRIC_NAME_CHARS):
            problems.append((n, why))
            ok = False
        value, why = _number(obj["value"], text_ok=False)
        if why:
            problems.append((n, f"value: {why}"))
            ok = False
        if step is not None and (
            isinstance(step, bool | _Huge) or not isinstance(step, int) or step < 0 or step >= 2**63
        ):
            problems.append((n, f"step must be an integer >= 0 or null, found {_short(step)}"))
            ok = False
        if ok:
            key = (name, step)
            if key in seen:
                at = "without a step" if step is None else f"at step {step}"
                problems.append((n, f"duplicate metric {name!r} {at} (first on line {seen[key]})"))
                continue
            seen[key] = n
            rows.append({"name": name, "value": value, "step": step})
    return rows, problems


def parse_texts(data: bytes) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """(item -> text, problems) of a ``--texts`` file (module docstring)."""
    texts: dict[str, str] = {}
    problems: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for n, obj, found in _jsonl_objects(data, TEXT_KEYS, TEXT_KEYS):
        problems += [(n, p) for p in found]
        if obj is None:
            continue
        ok = not found
        item, text = obj["item"], obj["text"]
        if (
            isinstance(item, bool | _Huge)
            or not isinstance(item, str | int)
            or str(item).strip() == ""
        ):
            problems.append(
                (n, f"item must be a non-empty string or integer, found {_short(item)}")
            )
            ok = False
        elif why := _text_problem("item", str(item), MAX_ITEM_CHARS):
            problems.append((n, why))
            ok = False
        if not isinstance(text, str):
            problems.append((n, f"text must be a string, found {_short(text)}"))
            ok = False
        elif "\x00" in text:
            problems.append((n, "text contains a NUL character"))
            ok = False
        if ok:
            key = str(item)
            if key in first:
                problems.append((n, f"duplicate item {key!r} (first on line {first[key]})"))
                continue
            first[key] = n
            texts[key] = text
    return texts, problems


@dataclass(frozen=True)
class IngestCost:
    """The cost of an ingested run: catalog ``hardware`` with ``seconds`` (metered) and/or
    ``usd_micros`` (recorded as given); at least one of the two."""

    hardware: str
    seconds: Decimal | None = None
    usd_micros: int | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        return read_bounded(path, MAX_INGEST_BYTES, what)
    except FileRefused as exc:
        raise UserError(f"{path}: {exc}") from None


def ingest_file(
    ledger: Ledger,
    protocol_id: str,
    path: Path,
    job: str | None = None,
    *,
    metrics: Path | None = None,
    texts: Path | None = None,
    cost: IngestCost | None = None,
    provenance: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Validate ``path`` (and the optional ``metrics`` / ``texts`` files) and record them as one
    run of ``protocol_id``'s latest frozen version, with ``provenance`` and ``cost`` (module
    docstring).

    ``seed``: the run's seed. A job that declares ``replicates`` needs one of its seeds (else
    :class:`UserError`); for other jobs it is stored as given (None if not given). Which
    ingested runs feed the verdict is :func:`docketml.ledger.verdicts.select_runs` (a second
    ingest of the same job and seed is recorded but never replaces the first under ``first``).

    Raises :class:`ledger.errors.CheckFailed` (not frozen), :class:`ledger.errors.UserError`
    (bad file: every problem of every file with its line; unknown hardware; nothing written).

    Concurrency: the protocol is read in a deferred read-only transaction and the files are read,
    parsed and validated outside any transaction; only the write (the run, its observations in
    batches of ``store.runs.OBS_CHUNK``, metrics, texts and cost line) takes the ledger's write
    lock, in one short transaction. If another version was frozen in between, the file is
    validated again against it.
    """
    started = time.perf_counter()
    job = job or DEFAULT_JOB
    hardware = "cpu"
    if cost is not None:
        if cost.seconds is None and cost.usd_micros is None:
            raise UserError("--hardware needs --seconds (metered) and/or --usd (as paid)")
        try:
            hardware = user_catalog()[cost.hardware].name
        except UnknownHardwareError as exc:
            raise UserError(f"--hardware: {exc.args[0]}") from None
    side_problems: list[tuple[Path, int, str]] = []
    metric_rows: list[dict[str, Any]] = []
    text_rows: dict[str, str] = {}
    if metrics is not None:
        metric_rows, found = parse_metrics(_read(metrics, "metrics JSONL file"))
        side_problems += [(metrics, line, msg) for line, msg in sorted(found, key=lambda p: p[0])]
    if texts is not None:
        text_rows, found = parse_texts(_read(texts, "texts JSONL file"))
        side_problems += [(texts, line, msg) for line, msg in sorted(found, key=lambda p: p[0])]
    extras = _Extras(metrics, texts, metric_rows, text_rows, hardware, cost, provenance)
    for _ in range(MAX_REVALIDATIONS):
        with ledger.read_session() as session:
            row = store.latest_frozen(session, protocol_id)
            sha256, version = row.sha256, row.version
            protocol = store.parse_row(row)
        names = [j.name for j in protocol.jobs]
        if job != DEFAULT_JOB and job not in names:
            raise UserError(
                f"--job {job!r} is not a job of {protocol_id}; jobs: "
                f"{', '.join(names) or '(none)'} (or omit --job to record the run as "
                f"{DEFAULT_JOB!r})"
            )
        spec = protocol.job(job) if job in names else None
        seeds = spec.declared_seeds() if spec is not None else None
        if seeds is not None and seed not in seeds:
            found = "no --seed" if seed is None else f"--seed {seed}"
            raise UserError(
                f"job {job!r} declares replicates seeds {seeds}: give --seed with one of them "
                f"(found {found})"
            )
        # after the flags are known to be right: read, parse and validate, streaming
        parsed = parse_results(protocol, path, job)
        try:
            _refuse_problems(
                [(path, line, msg) for line, msg in parsed.problems] + side_problems,
                parsed.problem_count + len(side_problems),
            )
            digest = parsed.sha256
            with ledger.session() as session:
                reap_abandoned(session)
                row = store.latest_frozen(session, protocol_id)
                if row.sha256 != sha256:  # frozen meanwhile: validate against the new version
                    continue
                run_id, earlier, latest, cost_row = _record(
                    session, row, job, path, parsed, digest, started, extras, seed
                )
                kept = _first_run(session, row, job, run_id, seed if seeds is not None else None)
        finally:
            parsed.close()
        break
    else:  # pragma: no cover - needs MAX_REVALIDATIONS freezes during one ingest
        raise UserError(f"{protocol_id} kept changing while {path} was ingested; try again")
    notes = []
    if kept is not None:
        of = f"job {job!r}" + ("" if seeds is None else f" seed {seed}")
        notes.append(
            f"{of} already has succeeded run #{kept}: this run is recorded, but the verdict "
            f"keeps using #{kept} (a rerun never replaces a job's first run)"
        )
    if latest != (version, "frozen"):
        notes.append(
            f"bound to v{version} (the latest frozen version); v{latest[0]} is "
            f"{latest[1]} and not used until frozen"
        )
    fed = [n for n, r in protocol.decision_rules.items() if {job, None} & set(rule_sources(r))]
    if not fed:
        read = sorted({j for r in protocol.decision_rules.values() for j in rule_sources(r) if j})
        notes.append(
            f"no decision rule reads job {job!r}; the rules read "
            + (", ".join(read) if read else "no job")
            + " (use --job NAME)"
        )
    return {
        "run_id": run_id,
        "protocol": protocol_id,
        "version": version,
        "protocol_sha256": sha256,
        "job": job,
        "seed": seed,
        "file": str(path),
        "format": parsed.format,
        "file_sha256": digest,
        "items": parsed.items,
        "signals": parsed.signals,
        "observations": parsed.observations,
        "metrics": len(metric_rows),
        "texts": len(text_rows),
        "hardware": hardware,
        "cost_micros": 0 if cost_row is None else cost_row.usd_micros,
        "cost_seq": None if cost_row is None else cost_row.seq,
        "provenance": provenance,
        "previously_ingested_as": list(earlier),
        "feeds_rules": fed,
        "notes": notes,
    }


def _refuse_problems(problems: list[tuple[Path, int, str]], total: int | None = None) -> None:
    """Raise the :class:`UserError` listing ``problems`` (at most ``MAX_PROBLEMS_SHOWN``, each
    ``FILE:LINE: message``; ``total``: how many there are in all, default ``len(problems)``),
    if there are any."""
    if not problems:
        return
    total = len(problems) if total is None else total
    shown = problems[:MAX_PROBLEMS_SHOWN]
    lines = [f"{where}:{line}: {msg}" for where, line, msg in shown]
    more = total - len(shown)
    if more > 0:
        lines.append(f"... and {more} more problem(s)")
    files = sorted({str(where) for where, _, _ in problems})
    raise UserError(
        f"{', '.join(files)}: {total} problem(s); nothing was recorded\n" + "\n".join(lines)
    )


@dataclass(frozen=True)
class _Extras:
    """What an ingest records beside the observations (validated before the write)."""

    metrics_file: Path | None
    texts_file: Path | None
    metric_rows: list[dict[str, Any]]
    text_rows: dict[str, str]
    hardware: str
    cost: IngestCost | None
    provenance: dict[str, Any] | None


def _record(
    session: Session,
    row: ProtocolRow,
    job: str,
    path: Path,
    parsed: Parsed,
    digest: str,
    started: float,
    extras: _Extras,
    seed: int | None,
) -> tuple[int, list[int], tuple[int, str], Any]:
    """Write the validated files as a succeeded run of ``row`` in the caller's (write)
    transaction; return (run id, earlier ingests of the same file, (latest version, status),
    the cost row or None)."""
    earlier = list(
        session.scalars(
            select(RunRow.id).where(
                RunRow.protocol_sha256 == row.sha256,
                RunRow.input_sha256 == digest,
                RunRow.source == "ingest",
            )
        ).all()
    )
    provenance = extras.provenance or {}
    cost = extras.cost
    run = create_run(
        session,
        protocol_pk=row.id,
        protocol_sha256=row.sha256,
        job=job,
        kind="ingest",
        config={
            "file": str(path),
            "path": str(path.resolve()),  # where `docket audit` re-hashes it
            "format": parsed.format,
            "items": parsed.items,
            "signals": parsed.signals,
            "metrics_file": None if extras.metrics_file is None else str(extras.metrics_file),
            "texts_file": None if extras.texts_file is None else str(extras.texts_file),
            "hardware": extras.hardware,
            "device": provenance.get("device"),
            "provenance": extras.provenance,
        },
        hardware=extras.hardware,
        source="ingest",
        input_sha256=digest,
        git_sha=provenance.get("git_commit"),
        seed=seed,
    )
    start_run(session, run.id, worker="ingest")
    complete_run(
        session,
        run.id,
        status="succeeded",
        observations=parsed.observation_rows(),
        metrics=extras.metric_rows,
        texts=extras.text_rows or None,
        wall_s=float(cost.seconds)
        if cost is not None and cost.seconds is not None
        else time.perf_counter() - started,
    )
    cost_row = None
    if cost is not None:
        cost_row = add_manual_cost(
            session,
            hardware=extras.hardware,
            seconds=cost.seconds,
            usd_micros=cost.usd_micros,
            run_id=run.id,
            note=f"ingested from {path.name}",
        )
    latest = store.latest(session, row.protocol_id)
    return run.id, earlier, (latest.version, latest.status), cost_row


def _first_run(
    session: Session, row: ProtocolRow, job: str, run_id: int, seed: int | None
) -> int | None:
    """The job's (and, for a replicated job, the seed's) earliest other succeeded run, if any:
    the one the verdict keeps using under ``select: first``."""
    prior = select(RunRow.id).where(
        RunRow.protocol_sha256 == row.sha256,
        RunRow.job == job,
        RunRow.status == "succeeded",
        RunRow.id != run_id,
    )
    if seed is not None:
        prior = prior.where(RunRow.seed == seed)
    return session.scalars(prior.order_by(RunRow.id).limit(1)).first()
