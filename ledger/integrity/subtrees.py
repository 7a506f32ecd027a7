"""RFC 9162 hashes and proofs assembled from stored perfect-subtree hashes (pure; no database).

A *node* ``(level, index)`` is the perfect subtree of the ``2**level`` leaves
``index * 2**level .. (index + 1) * 2**level - 1``; level 0 is a leaf hash. The stored log
(``ledger.store.merkle_log``) keeps every complete node, so any range the RFC's recursion
meets is the right fold of O(log n) of them:

* :func:`decompose` splits ``[lo, hi)`` greedily into maximal aligned perfect subtrees, left to
  right. For every range ``MTH`` is asked of here (``lo`` a multiple of a power of two at least
  ``hi - lo``: every range of 2.1.1's recursion) their sizes strictly decrease, and
  ``MTH(D[lo:hi]) = HASH(0x01 || n1 || HASH(0x01 || n2 || ...))`` (:func:`range_hash`).
* :func:`inclusion_ranges` and :func:`consistency_ranges` are the ranges whose ``MTH`` make up
  ``PATH(m, D[n])`` (2.1.3.1) and ``PROOF(m, D[n])`` (2.1.4.1), in the RFC's order; a caller
  fetches the union of their :func:`decompose` nodes (O(log n) distinct ones) and hashes.

``tests/test_merkle_log.py`` checks every result against :mod:`.merkle` over all leaf hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .merkle import EMPTY_ROOT, _split, node_hash

__all__ = [
    "Node",
    "consistency_ranges",
    "decompose",
    "inclusion_ranges",
    "nodes_for",
    "range_hash",
]

Node = tuple[int, int]  # (level, index)


def decompose(lo: int, hi: int) -> list[Node]:
    """Maximal aligned perfect subtrees covering ``[lo, hi)``, left to right."""
    out: list[Node] = []
    while lo < hi:
        level = (lo & -lo).bit_length() - 1 if lo else (hi - lo).bit_length() - 1
        while lo + (1 << level) > hi:
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def range_hash(lo: int, hi: int, nodes: Mapping[Node, bytes]) -> bytes:
    """``MTH`` of leaves ``[lo, hi)`` from the hashes of :func:`decompose` ``(lo, hi)``."""
    parts = decompose(lo, hi)
    if not parts:
        return EMPTY_ROOT
    h = nodes[parts[-1]]
    for node in reversed(parts[:-1]):
        h = node_hash(nodes[node], h)
    return h


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    """Every node :func:`range_hash` needs for ``ranges``."""
    return {node for lo, hi in ranges for node in decompose(lo, hi)}


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose ``MTH`` form ``PATH(index, D[size])``, leaf to root (2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m = lo + k, m - k
    out.reverse()
    return out


def consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose ``MTH`` form ``PROOF(old_size, D[size])`` (2.1.4.1); empty for
    ``old_size`` 0 or ``size``."""
    if not 0 <= old_size <= size:
        raise ValueError(f"old tree size {old_size} is not between 0 and {size}")
    out: list[tuple[int, int]] = []
    if old_size in (0, size):
        return out

    def subproof(m: int, lo: int, hi: int, b: bool) -> None:
        if m == hi - lo:
            if not b:
                out.append((lo, hi))
            return
        k = _split(hi - lo)
        if m <= k:
            subproof(m, lo, lo + k, b)
            out.append((lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            out.append((lo, lo + k))

    subproof(old_size, 0, size, True)
    return out
