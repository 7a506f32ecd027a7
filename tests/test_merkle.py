"""RFC 9162 section 2.1 Merkle tree: checked against a deliberately naive reference written here
from the RFC's recursive definitions (MTH, PATH, PROOF/SUBPROOF over lists of leaf bytes)."""

from __future__ import annotations

import hashlib

import pytest

from docketml.ledger.integrity.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# ---- independent reference: the RFC's definitions, literally, over lists of leaf data ----


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if len(d) == 0:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_sides(m: int, n: int) -> list[str]:
    """Which side each PATH sibling is on, leaf to root ('L' = sibling is the left child)."""
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_sides(m, k) + ["R"]
    return ref_sides(m - k, n - k) + ["L"]


def ref_verify_inclusion(m: int, n: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    sides = ref_sides(m, n)
    if len(sides) != len(proof):
        return False
    r = leaf
    for side, p in zip(sides, proof, strict=True):
        r = _h(b"\x01" + p + r) if side == "L" else _h(b"\x01" + r + p)
    return r == root


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def ref_verify_consistency(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    """Verify by replaying SUBPROOF's recursion: each proof element is the hash it defines, so
    folding them (last element = top level) must give both roots."""
    stack = list(proof)

    def rv(m: int, n: int, b: bool) -> tuple[bytes, bytes]:
        if m == n:
            if b:
                return old_root, old_root
            c = stack.pop()
            return c, c
        k = _k(n)
        c = stack.pop()
        if m <= k:
            o, nw = rv(m, k, b)
            return o, _h(b"\x01" + nw + c)
        o, nw = rv(m - k, n - k, False)
        return _h(b"\x01" + c + o), _h(b"\x01" + c + nw)

    try:
        o, nw = rv(m, n, True)
    except IndexError:
        return False
    return not stack and o == old_root and nw == new_root


def data(n: int) -> list[bytes]:
    return [f"leaf-{i}".encode() for i in range(n)]


# ---- roots ----


def test_known_values() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    # RFC 6962/9162 test vector: the leaf hash of the empty leaf.
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("n", range(1, 41))
def test_root_matches_reference(n: int) -> None:
    d = data(n)
    hashes = [leaf_hash(x) for x in d]
    assert root_hash(hashes) == ref_mth(d)
    cr = CompactRange()
    for i, h in enumerate(hashes, start=1):
        cr.append(h)
        assert cr.size == i
        assert cr.root() == ref_mth(d[:i])


# ---- inclusion ----


@pytest.mark.parametrize("n", range(1, 41))
def test_inclusion_every_index(n: int) -> None:
    d = data(n)
    hashes = [leaf_hash(x) for x in d]
    root = ref_mth(d)
    for m in range(n):
        proof = inclusion_proof(hashes, m)
        assert proof == ref_path(m, d)
        assert verify_inclusion(m, n, hashes[m], proof, root)
        # wrong leaf, wrong index, wrong size, wrong root: all rejected
        other = leaf_hash(b"not a leaf")
        assert not verify_inclusion(m, n, other, proof, root)
        assert not verify_inclusion(m, n, hashes[m], proof, ref_mth(d[:-1]) if n > 1 else other)
        for m2 in range(n):
            if m2 != m:
                assert not verify_inclusion(m2, n, hashes[m], proof, root)
        # Another size: accepted exactly when the reference shape at that size folds the same
        # proof to the same root (e.g. index 0 of sizes 3 and 4 share a shape: the root alone
        # does not bind the size, which is why a signed tree head signs the size too).
        rejected_sizes = 0
        for n2 in range(m + 1, n + 3):
            if n2 != n:
                expected = ref_verify_inclusion(m, n2, hashes[m], proof, root)
                assert verify_inclusion(m, n2, hashes[m], proof, root) == expected
                rejected_sizes += not expected
        assert n == 1 or rejected_sizes > 0
        assert not verify_inclusion(m, m, hashes[m], proof, root)  # index == size
        # each hash of the proof flipped in one bit
        for j in range(len(proof)):
            bad = list(proof)
            bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
            assert not verify_inclusion(m, n, hashes[m], bad, root)
        # truncated or extended proof
        if proof:
            assert not verify_inclusion(m, n, hashes[m], proof[:-1], root)
        assert not verify_inclusion(m, n, hashes[m], [*proof, root], root)


def test_inclusion_bad_index_raises() -> None:
    hashes = [leaf_hash(x) for x in data(3)]
    with pytest.raises(ValueError):
        inclusion_proof(hashes, 3)
    with pytest.raises(ValueError):
        inclusion_proof(hashes, -1)
    assert not verify_inclusion(-1, 3, hashes[0], [], root_hash(hashes))


# ---- consistency ----


@pytest.mark.parametrize("n", range(1, 25))
def test_consistency_every_pair(n: int) -> None:
    d = data(n)
    hashes = [leaf_hash(x) for x in d]
    new_root = ref_mth(d)
    for m in range(1, n):
        old_root = ref_mth(d[:m])
        proof = consistency_proof(hashes, m)
        assert proof == ref_proof(m, d)
        assert verify_consistency(m, n, old_root, new_root, proof)
        # a rewritten old tree (one leaf changed) is not a prefix
        rewritten = list(d[:m])
        rewritten[m // 2] = b"rewritten"
        assert not verify_consistency(m, n, ref_mth(rewritten), new_root, proof)
        # a rewritten new tree (a leaf inside the old range changed, re-hashed) is rejected
        d2 = list(d)
        d2[m - 1] = b"rewritten"
        assert not verify_consistency(m, n, old_root, ref_mth(d2), proof)
        # the proof replayed with other sizes: accepted exactly when the reference recursion
        # folds it to the same two roots (roots do not bind sizes; an STH signs them)
        rejected = 0
        for m2 in range(1, n + 2):
            for n2 in range(m2 + 1, n + 3):
                if (m2, n2) != (m, n):
                    expected = ref_verify_consistency(m2, n2, old_root, new_root, proof)
                    assert verify_consistency(m2, n2, old_root, new_root, proof) == expected
                    rejected += not expected
        assert rejected > 0
        for j in range(len(proof)):
            bad = list(proof)
            bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
            assert not verify_consistency(m, n, old_root, new_root, bad)
        assert not verify_consistency(m, n, old_root, new_root, proof[:-1])
        assert not verify_consistency(m, n, old_root, new_root, [*proof, new_root])
        assert not verify_consistency(m, n, old_root, new_root, [])


def test_consistency_edge_sizes() -> None:
    d = data(5)
    hashes = [leaf_hash(x) for x in d]
    root = root_hash(hashes)
    assert consistency_proof(hashes, 5) == []
    assert verify_consistency(5, 5, root, root, [])
    assert not verify_consistency(5, 5, root, ref_mth(d[:4]), [])
    assert consistency_proof(hashes, 0) == []
    assert verify_consistency(0, 5, EMPTY_ROOT, root, [])
    assert not verify_consistency(0, 5, root, root, [])
    assert not verify_consistency(6, 5, root, root, [])  # old larger than new
    with pytest.raises(ValueError):
        consistency_proof(hashes, 6)
