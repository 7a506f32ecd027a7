"""The seed receipts' bill ("The receipts", seed 000), as fixture rows for the importer.

The bill, as published::

    | Run    | Hardware                 | Wall time            | Cost  |
    | v5     | CPU (local)              | —                    | $0.00 |
    | v6     | CPU (local)              | —                    | $0.00 |
    | v7     | RTX 4090 SECURE (RunPod) | 88.5 s + 5 min setup | $0.43 |
    | v8a    | A40 (RunPod)             | ~3 min               | $0.18 |
    | v8b    | A40 (RunPod)             | ~3 min               | $0.17 |
    | splice | CPU (local)              | —                    | $0.00 |
    | Total GPU $0.78 (v7 + v8a + v8b; v5 / v6 / splice were CPU at $0)

Each row maps the published hardware to a catalog name (``cpu``, ``rtx4090``, ``a40``).
``usd`` is the recorded dollar amount as a string: the importer stores these as manual
cost entries with the recorded dollars, NOT recomputed from catalog rates (the receipts
include pod time beyond the measured wall time). ``wall_s`` is ``None`` where the bill
shows "—"; ``wall_approx`` marks "~3 min" (read as 180 s). ``setup_s`` is the setup
overhead stated separately (v7: 5 min = 300 s). The GPU rows sum to exactly $0.78.
"""

from __future__ import annotations

from typing import Any

from .hardware import default_catalog
from .money import usd_to_micros

__all__ = ["RECEIPTS_GPU_TOTAL_USD", "receipts_bill", "receipts_gpu_total_micros"]

RECEIPTS_GPU_TOTAL_USD = "0.78"

_ROWS: tuple[tuple[str, str, str, float | None, int | None, bool, str, str], ...] = (
    # run, hardware, hardware_label, wall_s, setup_s, wall_approx, usd, note
    ("v5", "cpu", "CPU (local)", None, None, False, "0.00", "raw text in-domain"),
    ("v6", "cpu", "CPU (local)", None, None, False, "0.00", "chat-format in-domain"),
    (
        "v7",
        "rtx4090",
        "RTX 4090 SECURE (RunPod)",
        88.5,
        300,
        False,
        "0.43",
        "joint router + abstain SFT; 88.5 s train + 5 min setup",
    ),
    ("v8a", "a40", "A40 (RunPod)", 180.0, None, True, "0.18", "lighter MC weight (20 -> 5)"),
    ("v8b", "a40", "A40 (RunPod)", 180.0, None, True, "0.17", "zero MC weight"),
    ("splice", "cpu", "CPU (local)", None, None, False, "0.00", "splice control: v7 head on v4"),
)


def receipts_bill() -> list[dict[str, Any]]:
    """The bill rows in published order (fresh dicts on every call).

    Keys: ``run``, ``hardware`` (catalog name), ``hardware_label`` (as published),
    ``wall_s`` (float seconds or None), ``setup_s`` (int or None), ``wall_approx`` (bool),
    ``usd`` (recorded dollars, str, e.g. ``"0.43"``), ``note``.
    """
    keys = ("run", "hardware", "hardware_label", "wall_s", "setup_s", "wall_approx", "usd", "note")
    return [dict(zip(keys, row, strict=True)) for row in _ROWS]


def receipts_gpu_total_micros() -> int:
    """Sum of the recorded dollars of rows on GPU hardware, in micros (= 780_000)."""
    catalog = default_catalog()
    return sum(usd_to_micros(r["usd"]) for r in receipts_bill() if catalog[r["hardware"]].is_gpu)
