"""RFC 9162 section 2.1 Merkle tree hashes, inclusion proofs and consistency proofs.

Definitions (RFC 9162 2.1.1), over a list ``D[n]`` of leaf byte strings, with HASH = SHA-256:

* ``MTH({}) = HASH()`` (the hash of the empty string);
* ``MTH({d0}) = HASH(0x00 || d0)`` (leaf hash);
* for ``n > 1``, with ``k`` the largest power of two *smaller than* ``n``
  (``k < n <= 2k``): ``MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` (node hash).

Inclusion proofs (2.1.3.1): ``PATH(m, D[n])`` is the list of sibling subtree hashes from the
leaf up to the root; verified by the algorithm of 2.1.3.2 (:func:`verify_inclusion`).

Consistency proofs (2.1.4.1): ``PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`` for ``0 < m < n``;
verified by the algorithm of 2.1.4.2 (:func:`verify_consistency`). Sizes ``m == n`` (the
proof is empty and the two roots must be equal) and ``m == 0`` (the empty tree is a prefix of
every tree; the proof is empty) are outside the RFC's definition and handled explicitly here.

Everything works on *leaf hashes* (``leaf_hash(d)``), so a caller can keep 32 bytes per record
instead of the records themselves. Proof generation and :func:`root_hash` are O(n) hashes over
the leaf hashes (no node storage yet); :class:`CompactRange` appends in amortised O(1) and
O(log n) worst case, and gives the root in O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "CompactRange",
    "EMPTY_ROOT",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaves ``lo..hi-1`` given as leaf hashes (``hi > lo``)."""
    n = hi - lo
    if n == 1:
        return hashes[lo]
    k = _split(n)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of the tree whose leaves have the given leaf hashes (``EMPTY_ROOT`` if none)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 ``PATH(index, D[n])``: sibling hashes ordered leaf to root.

    Raises ``ValueError`` unless ``0 <= index < n``.
    """
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is not in a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root, collecting siblings; PATH appends them root-last, so reverse.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaf_hashes, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def root_from_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """RFC 9162 2.1.3.2 steps 1-4: the root implied by ``proof`` for leaf hash ``leaf``, or
    ``None`` when the proof cannot be for that index and size (wrong length, bad index)."""
    if not 0 <= index < tree_size:
        return None
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` in the tree of
    ``tree_size`` leaves whose root is ``root``?"""
    got = root_from_inclusion(index, tree_size, leaf, proof)
    return got is not None and got == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 ``PROOF(m, D[n])`` for ``m = old_size`` and ``n = len(leaf_hashes)``.

    Empty for ``m == n`` and for ``m == 0`` (outside the RFC's ``0 < m < n``).
    Raises ``ValueError`` unless ``0 <= m <= n``.
    """
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old tree size {old_size} is not between 0 and {n}")
    if old_size in (0, n):
        return []
    out: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, b: bool) -> None:
        size = hi - lo
        if m == size:
            if not b:
                out.append(_mth(leaf_hashes, lo, hi))
            return
        k = _split(size)
        if m <= k:
            subproof(m, lo, lo + k, b)
            out.append(_mth(leaf_hashes, lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            out.append(_mth(leaf_hashes, lo, lo + k))

    subproof(old_size, 0, n, True)
    return out


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the tree (``old_size``, ``old_root``) is a prefix
    of the tree (``new_size``, ``new_root``)?

    Outside the RFC's ``0 < m < n``: ``m == n`` holds iff the proof is empty and the roots are
    equal; ``m == 0`` holds iff the proof is empty and ``old_root`` is the empty-tree root.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """Append-only accumulator of leaf hashes keeping only the O(log n) perfect-subtree roots
    on the right edge (one per set bit of ``size``), so ``append`` is O(log n) and ``root``
    is O(log n) hashes; ``root()`` equals :func:`root_hash` over all appended leaf hashes."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # roots of perfect subtrees, largest first

    def append(self, leaf: bytes) -> None:
        """Append one *leaf hash*."""
        h = leaf
        n = self.size
        while n & 1:
            h = node_hash(self._stack.pop(), h)
            n >>= 1
        self._stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r
