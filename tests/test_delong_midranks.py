"""delong_structural's one-sort midranks give, bit for bit, the numbers of the three
``scipy.stats.rankdata`` calls it used before (Sun & Xu's algorithm as first written), so
verdicts recorded with the old code reproduce exactly; ties, signed zeros and infinities
included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from docketml.ledger.verdict import stats


def _rankdata_delong(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = labels.astype(bool)
    m = int(pos.sum())
    n = z.shape[1] - m
    x, y = z[:, pos], z[:, ~pos]
    tx = scipy.stats.rankdata(x, method="average", axis=1)
    ty = scipy.stats.rankdata(y, method="average", axis=1)
    tz = scipy.stats.rankdata(np.concatenate([x, y], axis=1), method="average", axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("case", range(60))
def test_bit_identical_to_rankdata(case: int) -> None:
    rng = np.random.default_rng(case)
    size = int(rng.integers(4, 4000))
    k = int(rng.integers(1, 4))
    labels = rng.integers(0, 2, size)
    labels[:4] = [0, 1, 0, 1]
    z = rng.normal(size=(k, size))
    if case % 2:
        z = np.round(z, 1)  # many ties
    if case % 5 == 0:
        z[:, ::3] = -0.0
        z[:, 1::7] = 0.0
        z[:, 2::11] = np.inf
    want_aucs, want_cov = _rankdata_delong(z, labels)
    aucs, cov = stats.delong_structural(z, labels)
    assert aucs.tobytes() == want_aucs.tobytes()
    assert cov.tobytes() == want_cov.tobytes()


def test_auc_matches_point_auroc() -> None:
    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(300, np.int8), np.zeros(500, np.int8)]
    z = np.round(rng.normal(size=(2, 800)), 1)
    aucs, _ = stats.delong_structural(z, labels)
    for r in range(2):
        assert aucs[r] == stats.auroc(z[r], labels)


def test_delong_aucs_are_the_exact_pairwise_aurocs_bit_for_bit() -> None:
    """``rules.contest_stats`` takes a DeLong contest's AUCs from ``delong_structural`` instead
    of sorting again: they must be the floats of the pairwise count ``(2 [x > y] + [x = y]) /
    (2 m n)``, counted here directly, with and without ties, on both sides of the size at
    which ``_point_aurocs`` switches from pairs to ranks."""
    from docketml.ledger.verdict.rules import _PAIRS_DIRECT, _point_aurocs

    rng = np.random.default_rng(7)
    for trial in range(300):
        s, m, n = int(rng.integers(1, 4)), int(rng.integers(2, 260)), int(rng.integers(2, 260))
        if trial % 10 == 0:  # past _PAIRS_DIRECT: _point_aurocs ranks instead of counting
            m, n = int(rng.integers(1100, 1500)), int(rng.integers(1100, 1500))
            assert s * m * n > _PAIRS_DIRECT
        pos, neg = rng.normal(size=(s, m)) + 0.4, rng.normal(size=(s, n))
        if trial % 2:
            pos, neg = np.round(pos, 1), np.round(neg, 1)
        gt = (pos[:, :, None] > neg[:, None, :]).sum(axis=(1, 2))
        eq = (pos[:, :, None] == neg[:, None, :]).sum(axis=(1, 2))
        exact = (2 * gt + eq) / (2.0 * m * n)
        labels = np.r_[np.ones(m, np.int8), np.zeros(n, np.int8)]
        aucs, _ = stats.delong_structural(np.concatenate([pos, neg], axis=1), labels)
        assert np.array_equal(aucs, exact), (trial, s, m, n)
        assert np.array_equal(_point_aurocs(pos, neg), exact), (trial, s, m, n)
