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
