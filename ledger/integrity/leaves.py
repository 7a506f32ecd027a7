"""The leaf bytes of the ledger's Merkle log: one canonical JSON object per append-only record.

Pure functions (no database): ``docket verify`` rebuilds leaves from a receipt offline with
them. Every leaf is ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`` encoded as ASCII, and every body has a ``"kind"`` from :data:`LEAF_KINDS`.

Kinds and their fields (docs/transparency.md is the reader's copy of this list):

* ``protocol`` — a frozen protocol version: ``protocol_id``, ``version``, ``sha256`` (the
  canonical SHA-256 of the protocol), ``parent_sha256`` (the version it amends, or null),
  ``frozen_at`` (ISO 8601 UTC, microseconds, ``Z``).
* ``journal`` / ``cost`` — a row of the journal or cost hash chain: ``seq`` and ``hash`` (the
  row's stored chain hash, which covers its content and its predecessor).
* ``signcheck`` — a stored sign-check: ``id`` (``sign_checks.id``), ``protocol_sha256``,
  ``passed`` (bool), ``ran_at``, ``report_sha256`` (SHA-256 of the stored ``report_json``
  text, UTF-8).
* ``run`` — a completed run (any final status): ``id`` (``runs.id``), ``protocol_sha256``,
  ``job``, ``seed`` (int or null), ``status``, ``observations`` / ``metrics`` / ``texts`` (how
  many rows of each) and ``results_sha256`` (:func:`results_sha256`: the run's observations,
  metrics and texts, whether or not a verdict used them).
* ``verdict`` — a recorded verdict: ``id`` (``verdicts.id``), ``protocol_sha256``,
  ``computed_at``, ``verdict``, ``inputs_sha256``, ``run_ids`` (list of ints, from
  ``run_ids_json``) and ``details_sha256`` (SHA-256 of the stored ``details_json``, UTF-8).

Timestamps are :func:`utc_iso`. Verdict looks and reproductions are not leaves.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LEAF_KINDS",
    "chain_leaf_bytes",
    "leaf_body",
    "leaf_bytes",
    "protocol_leaf_bytes",
    "results_sha256",
    "run_leaf_bytes",
    "signcheck_leaf_bytes",
    "text_sha256",
    "utc_iso",
    "verdict_leaf_bytes",
]

LEAF_KINDS = ("protocol", "signcheck", "run", "verdict", "cost", "journal")


def leaf_bytes(body: dict[str, Any]) -> bytes:
    """Canonical bytes of a leaf body (sorted keys, no whitespace, ASCII)."""
    if body.get("kind") not in LEAF_KINDS:
        raise ValueError(f"leaf kind must be one of {LEAF_KINDS}, found {body.get('kind')!r}")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_body(leaf: bytes) -> dict[str, Any]:
    """Parse leaf bytes back into their body; raises ValueError if they are not canonical."""
    body = json.loads(leaf.decode("ascii"))
    if not isinstance(body, dict) or leaf_bytes(body) != leaf:
        raise ValueError("leaf bytes are not the canonical JSON of a leaf body")
    return body


def utc_iso(at: datetime) -> str:
    """``2026-06-01T12:00:00.000000Z``; naive datetimes are refused."""
    if at.tzinfo is None:
        raise ValueError("naive datetime in a leaf")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def protocol_leaf_bytes(
    *,
    protocol_id: str,
    version: int,
    sha256: str,
    parent_sha256: str | None,
    frozen_at: datetime | str,
) -> bytes:
    """The leaf of a frozen protocol version."""
    at = frozen_at if isinstance(frozen_at, str) else utc_iso(frozen_at)
    return leaf_bytes(
        {
            "kind": "protocol",
            "protocol_id": protocol_id,
            "version": version,
            "sha256": sha256,
            "parent_sha256": parent_sha256,
            "frozen_at": at,
        }
    )


def chain_leaf_bytes(kind: str, seq: int, row_hash: str) -> bytes:
    """The leaf of a journal (``kind="journal"``) or cost (``kind="cost"``) chain row."""
    if kind not in ("journal", "cost"):
        raise ValueError(f"chain leaf kind must be journal or cost, found {kind!r}")
    return leaf_bytes({"kind": kind, "seq": seq, "hash": row_hash})


def text_sha256(value: str) -> str:
    """Hex SHA-256 of ``value`` encoded as UTF-8."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _stamp(at: datetime | str) -> str:
    return at if isinstance(at, str) else utc_iso(at)


def signcheck_leaf_bytes(
    *, id: int, protocol_sha256: str, passed: bool, ran_at: datetime | str, report_json: str
) -> bytes:
    """The leaf of a stored sign-check row."""
    return leaf_bytes(
        {
            "kind": "signcheck",
            "id": int(id),
            "protocol_sha256": protocol_sha256,
            "passed": bool(passed),
            "ran_at": _stamp(ran_at),
            "report_sha256": text_sha256(report_json),
        }
    )


_ESCAPE = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _json_str(value: Any) -> str:
    return _ESCAPE(str(value))


def _json_float(value: Any) -> str:
    """``json.dumps(float(value))`` (null for None), without building an encoder per call."""
    if value is None:
        return "null"
    x = float(value)
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _json_int(value: Any) -> str:
    return "null" if value is None else str(int(value))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def results_sha256(
    observations: Iterable[tuple[Any, Any, Any, Any, Any]],
    metrics: Iterable[tuple[Any, Any, Any, Any, Any]],
    texts: Iterable[tuple[Any, Any]],
) -> tuple[str, int, int, int]:
    """``(sha256 hex, n_observations, n_metrics, n_texts)`` of a run's results.

    The digest is SHA-256 over one line per row, each line the compact JSON array below
    (``json.dumps(values, separators=(",", ":"), ensure_ascii=True)``) followed by ``\\n``,
    in this order: every observation ``["o", group, item, signal, value, label]``, then every
    metric ``["m", name, value, ci_low, ci_high, step]``, then every text ``["t", item, text]``,
    each section in row id order (the order the run wrote them). Strings are ``str``, values
    and CIs ``float`` (null if absent), labels and steps ``int`` (null if absent); floats are
    written as Python's ``repr`` (shortest round-trip form).

    ``observations`` are ``(group, item, signal, value, label)``, ``metrics`` ``(name, value,
    ci_low, ci_high, step)``, ``texts`` ``(item, text)``.
    """
    q, f, n = _json_str, _json_float, _json_int
    sections = [
        [f'["o",{q(g)},{q(i)},{q(s)},{f(v)},{n(lab)}]' for g, i, s, v, lab in observations],
        [f'["m",{q(name)},{f(v)},{f(lo)},{f(hi)},{n(st)}]' for name, v, lo, hi, st in metrics],
        [f'["t",{q(i)},{q(t)}]' for i, t in texts],
    ]
    digest = hashlib.sha256()
    for lines in sections:
        if lines:
            digest.update(("\n".join(lines) + "\n").encode("ascii"))
    return digest.hexdigest(), len(sections[0]), len(sections[1]), len(sections[2])


def run_leaf_bytes(
    *,
    id: int,
    protocol_sha256: str,
    job: str,
    seed: int | None,
    status: str,
    results: tuple[str, int, int, int],
) -> bytes:
    """The leaf of a completed run; ``results`` is :func:`results_sha256` of its rows."""
    digest, n_obs, n_metrics, n_texts = results
    return leaf_bytes(
        {
            "kind": "run",
            "id": int(id),
            "protocol_sha256": protocol_sha256,
            "job": job,
            "seed": _opt_int(seed),
            "status": status,
            "observations": n_obs,
            "metrics": n_metrics,
            "texts": n_texts,
            "results_sha256": digest,
        }
    )


def verdict_leaf_bytes(
    *,
    id: int,
    protocol_sha256: str,
    computed_at: datetime | str,
    verdict: str,
    inputs_sha256: str,
    run_ids_json: str,
    details_json: str,
) -> bytes:
    """The leaf of a recorded verdict row (``run_ids_json`` must be a JSON list of ints)."""
    return leaf_bytes(
        {
            "kind": "verdict",
            "id": int(id),
            "protocol_sha256": protocol_sha256,
            "computed_at": _stamp(computed_at),
            "verdict": verdict,
            "inputs_sha256": inputs_sha256,
            "run_ids": [int(i) for i in json.loads(run_ids_json)],
            "details_sha256": text_sha256(details_json),
        }
    )
