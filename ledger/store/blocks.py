"""One group's effective observations as aligned arrays: the unit the verdict read path passes
from the ledger (rows, or a run's stored columns) to the inputs hash and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .results import SourcePayload


@dataclass
class GroupBlock:
    """The effective observations of one group, in canonical ``(item, signal)`` order.

    ``items``, ``signals``: object arrays of ``str``; ``labels``: object array of ``int`` or
    ``None`` (the stored values); ``values``: float64 (the stored value, ``float()``)."""

    group: str
    items: np.ndarray
    signals: np.ndarray
    labels: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def payload_blocks(payload: SourcePayload) -> list[GroupBlock]:
    """A dict-held payload (:class:`docketml.ledger.store.results.SourcePayload`) as the blocks
    :func:`iter_groups` yields: one per group, group order, rows in canonical ``(item, signal)``
    order (for parts that repeat a run, and for hashing dict payloads)."""
    keys = sorted(payload.observations)
    out: list[GroupBlock] = []
    start = 0
    for k in range(1, len(keys) + 1):
        if k == len(keys) or keys[k][0] != keys[start][0]:
            chunk = keys[start:k]
            out.append(
                GroupBlock(
                    chunk[0][0],
                    np.array([i for _, i, _ in chunk], dtype=object),
                    np.array([s for _, _, s in chunk], dtype=object),
                    np.array([payload.observations[c][0] for c in chunk], dtype=object),
                    np.array([payload.observations[c][1] for c in chunk], dtype=np.float64),
                )
            )
            start = k
    return out
