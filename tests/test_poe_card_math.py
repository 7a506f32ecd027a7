"""The PoE card's probe math (runners/models/poe_analysis.py) against independent numpy / sklearn
computations: WAND ranges and p99 bounds (numpy.percentile), the margin-shrinkage guarantee,
dominant singular vectors (numpy.linalg.svd + sklearn's svd_flip), Gram-Schmidt unique fractions
(numpy.linalg.qr), the beta-scaled logits and the crossover sign changes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from docketml.runners.jobs.poe_card import beta_name  # noqa: E402
from docketml.runners.models.poe_analysis import (  # noqa: E402
    cumulative_poe,
    gram_schmidt_unique,
    head_diversity,
    quantile,
    scaled_logits,
    sign_changes,
    top2_margin,
    wand_exit,
    wand_ranges,
)


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_cumulative(logits: np.ndarray) -> np.ndarray:
    """c[k] = renormalised mean of the first k+1 stage log-softmaxes, computed with a running
    sum (not the library's stacking)."""
    lp = _np_log_softmax(logits.astype(np.float64))
    out, running = [], np.zeros_like(lp[0])
    for k in range(lp.shape[0]):
        running = running + lp[k]
        out.append(_np_log_softmax(running / (k + 1)))  # a - logsumexp(a)
    return np.stack(out)


@pytest.fixture
def logits() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 300, 17, generator=gen, dtype=torch.float64) * 2.0


def test_wand_ranges_and_p99_match_numpy(logits: torch.Tensor) -> None:
    cum = cumulative_poe(logits)
    ref = _np_cumulative(logits.numpy())
    np.testing.assert_allclose(cum.numpy(), ref, atol=1e-5)  # poe_log_probs works in float32
    ranges = wand_ranges(cum)
    d = ref[1:] - ref[:-1]
    ref_ranges = d.max(-1) - d.min(-1)
    np.testing.assert_allclose(ranges.numpy(), ref_ranges, atol=1e-5)
    # constant-shift invariance: the unnormalised running means give the same ranges
    lp = _np_log_softmax(logits.numpy())
    raw = np.cumsum(lp, 0) / np.arange(1, 5).reshape(-1, 1, 1)
    raw_d = raw[1:] - raw[:-1]
    np.testing.assert_allclose(raw_d.max(-1) - raw_d.min(-1), ref_ranges, atol=1e-10)
    for q in (0.5, 0.9, 0.99):  # the quantile itself, on the same ranges, to float64 precision
        np.testing.assert_allclose(
            quantile(ranges, q).numpy(),
            np.percentile(ranges.double().numpy(), 100 * q, axis=1),
            rtol=1e-12,
        )
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        quantile(ranges, 1.0)


def test_range_bounds_the_margin_shrinkage(logits: torch.Tensor) -> None:
    cum = cumulative_poe(logits).double().numpy()
    ranges = wand_ranges(torch.from_numpy(cum)).numpy()
    for k in range(cum.shape[0] - 1):
        top = cum[k].argmax(-1)
        rows = np.arange(cum.shape[1])
        before = cum[k][rows, top][:, None] - cum[k]
        after = cum[k + 1][rows, top][:, None] - cum[k + 1]
        assert np.all(before - after <= ranges[k][:, None] + 1e-12)
        # and the bound is tight: some pair shrinks by exactly the range
        shrink = (cum[k + 1] - cum[k]).max(-1) - (cum[k + 1] - cum[k]).min(-1)
        np.testing.assert_allclose(shrink, ranges[k], atol=1e-12)


def test_wand_exit_is_exact_when_every_range_is_within_its_bound(logits: torch.Tensor) -> None:
    cum = cumulative_poe(logits)
    ranges = wand_ranges(cum)
    margin, top1 = top2_margin(cum)
    bounds = ranges.amax(dim=1)  # every position within its bound
    ex = wand_exit(margin, top1, bounds)
    assert bool(ex.agree.all())
    # hand-check the rule on the exits: first k with margin > sum of remaining bounds
    remaining = [float(bounds[k:].sum()) for k in range(3)]
    for i in range(margin.size(1)):
        first = next((k for k in range(3) if float(margin[k, i]) > remaining[k]), 3)
        assert int(ex.stages_used[i]) == first + 1
    # zero bounds exit every position at stage 0 whose top-2 is not tied
    ex0 = wand_exit(margin, top1, torch.zeros(3))
    assert bool((ex0.stages_used == 1).all())
    assert float(ex0.agree.double().mean()) == pytest.approx(
        float((top1[0] == top1[-1]).double().mean())
    )


def test_dominant_singular_cosines_match_numpy_svd_and_svd_flip() -> None:
    from sklearn.utils.extmath import svd_flip

    gen = torch.Generator().manual_seed(1)
    heads = [torch.randn(29, 6, generator=gen) for _ in range(4)]
    heads[2] = heads[1] * 3.0 + 0.01 * torch.randn(29, 6, generator=gen)  # nearly parallel
    div = head_diversity(heads)
    us = []
    for w in heads:
        u, s, vt = np.linalg.svd(w.double().numpy(), full_matrices=False)
        u, vt = svd_flip(u, vt)  # sklearn: largest-|.| entry of each u column positive
        us.append(u[:, 0])
    for (i, j), c in div.cos.items():
        assert c == pytest.approx(float(us[i] @ us[j]), abs=1e-9)
    assert sorted(div.cos) == [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert div.cos[(1, 2)] == pytest.approx(1.0, abs=1e-3)


def test_gram_schmidt_unique_fraction_matches_numpy_qr() -> None:
    gen = torch.Generator().manual_seed(2)
    heads = [torch.randn(13, 5, generator=gen) for _ in range(4)]
    heads[3] = 0.5 * heads[0] - heads[1] + 0.2 * torch.randn(13, 5, generator=gen)
    unique = gram_schmidt_unique(heads)
    a = np.stack([w.double().numpy().reshape(-1) for w in heads], axis=1)  # columns w_k
    _, r = np.linalg.qr(a)
    ref = np.diag(r) ** 2 / (a**2).sum(0)  # ||r_k||^2 / ||w_k||^2
    np.testing.assert_allclose(unique, ref, rtol=1e-9)
    assert unique[0] == pytest.approx(1.0)
    div = head_diversity(heads)
    energy = (a**2).sum(0)
    assert div.unique_total == pytest.approx(float((ref * energy).sum() / energy.sum()))
    # exact multiples carry nothing unique; an orthogonal head is all unique
    e = torch.zeros(13, 5)
    e[0, 0] = 1.0
    f = torch.zeros(13, 5)
    f[1, 1] = 2.0
    assert gram_schmidt_unique([e, 2 * e, f]) == pytest.approx([1.0, 0.0, 1.0], abs=1e-12)


def test_zero_heads_are_refused() -> None:
    with pytest.raises(ValueError, match=r"stage heads \[1\] are all zero"):
        head_diversity([torch.ones(3, 2), torch.zeros(3, 2)])


def test_scaled_logits_scale_one_stage_or_all() -> None:
    gen = torch.Generator().manual_seed(3)
    base, delta = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    assert torch.equal(scaled_logits(base, delta, 1.0, 1), base + delta)
    got = scaled_logits(base, delta, 0.0, 1)
    assert torch.equal(got[1], base[1]) and torch.equal(got[0], base[0] + delta[0])
    assert torch.allclose(scaled_logits(base, delta, 2.0, None), base + 2 * delta)


def test_sign_changes_and_beta_names() -> None:
    assert sign_changes([10, 20, 30, 40, 50], [0.1, 0.2, -0.1, -0.3, 0.05]) == [30, 50]
    assert sign_changes([1, 2, 3], [0.0, 0.1, 0.1]) == [2]
    assert sign_changes([5], [1.0]) == []
    assert [beta_name(b) for b in (0, 0.5, 2.0, -1, 1.25)] == ["0", "0p5", "2", "m1", "1p25"]
