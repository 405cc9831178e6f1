"""Coherence matrix, measure, blocks and the SGD coherence bound (THEORY 5, 7)."""

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlab.coherence import block_coherence, coherence_matrix, coherence_measure
from simlab.curvature import coherence_dial, random_psd, to_dense
from simlab.stability import (
    coherence_bound_lr,
    coherence_bound_tightness,
    critical_lr,
    spectral_radius,
)

import reference
from strategies import families


@given(families())
def test_coherence_matrix_matches_square_roots(fam):
    H, r1 = fam
    ref_S = reference.coherence_matrix(H)
    comp_S = coherence_matrix(H)
    npt.assert_allclose(comp_S, ref_S, rtol=1e-7, atol=1e-7 * ref_S.max())
    if r1:
        npt.assert_allclose(comp_S, np.abs(H @ H.T), rtol=1e-14)


@given(families())
def test_sigma_range(fam):
    """sigma >= 1 always; sigma <= n for rank-one; for dense the upper bound is
    n max ||H_i||_F / max lambda_max(H_i) (sigma can exceed n there)."""
    H, r1 = fam
    n = H.shape[0]
    sigma = coherence_measure(H)
    assert sigma >= 1 - 1e-12
    Hd = to_dense(H)
    lam = np.linalg.eigvalsh(Hd)[:, -1].max()
    upper = n if r1 else n * np.linalg.norm(Hd, axis=(1, 2)).max() / lam
    assert sigma <= upper * (1 + 1e-12)


def test_sigma_exceeds_n_for_full_rank():
    """THEORY 5 says sigma lies in [1, n]; that only holds for rank-one
    families: identical identity Hessians give n sqrt(p)."""
    H = np.broadcast_to(np.eye(4), (3, 4, 4))
    npt.assert_allclose(coherence_measure(H), 3 * 2.0)


@pytest.mark.parametrize("n, s", [(10, 1), (10, 3), (40, 17), (40, 40)])
def test_dial_sigma_equals_s(n, s):
    npt.assert_allclose(coherence_measure(coherence_dial(n, s)), s, rtol=1e-12)


def test_blocks():
    rng = np.random.default_rng(0)
    R, F = rng.standard_normal((6, 4)), rng.standard_normal((3, 4))
    blk = block_coherence(R, F)
    K = np.abs(np.concatenate([R, F]) @ np.concatenate([R, F]).T)
    npt.assert_allclose(blk.S, K)
    npt.assert_allclose(blk.lam_rr, np.linalg.eigvalsh(K[:6, :6])[-1])
    npt.assert_allclose(blk.lam_ff, np.linalg.eigvalsh(K[6:, 6:])[-1])
    npt.assert_allclose(blk.s_rf, np.linalg.svd(K[:6, 6:])[1][0])
    npt.assert_allclose(blk.sigma_r, coherence_measure(R))
    npt.assert_allclose(blk.sigma, coherence_measure(np.concatenate([R, F])))
    with pytest.raises(ValueError, match="forget"):
        block_coherence(R, None)
    with pytest.raises(ValueError, match="forget"):
        block_coherence(R, np.ones((2, 3)))
    # an all-zero block has no coherence: an error naming the set, not a NaN
    with pytest.raises(ValueError, match="forget Hessians are all zero"):
        block_coherence(R, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="retain Hessians are all zero"):
        block_coherence(np.zeros((6, 4)), F)


@given(families(n_min=2, n_max=7, p_max=4), st.data())
def test_coherence_bound_never_violated(fam, data):
    """Dexter et al.: eta lambda_max(H) >= sigma (n/B - 1)^{-1/2} => divergence.
    So eta* <= eta_bound, and rho(T) > 1 just above the bound."""
    H, _ = fam
    n = H.shape[0]
    B = data.draw(st.integers(1, n - 1))
    bound = coherence_bound_lr(H, B)
    eta = critical_lr(H, B, scheme="bernoulli")
    assert eta <= bound * (1 + 1e-9)
    assert spectral_radius(H, bound * (1 + 1e-9), B, scheme="bernoulli") > 1
    t = coherence_bound_tightness(H, B)
    assert 0 < t <= 1 + 1e-9


def test_bound_vacuous_at_full_batch():
    assert coherence_bound_lr(random_psd(4, 3, seed=1), 4) == np.inf


def test_coherence_bad_input():
    with pytest.raises(ValueError, match="hessians"):
        coherence_matrix(np.ones((3,)))
    with pytest.raises(ValueError, match="all zero"):
        coherence_measure(np.zeros((3, 2)))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_coherence_rank_k_factors(k):
    """S, sigma and the blocks of Factors (n, k, p) equal the dense form's
    (explicit matrix square roots): S_ij = ||G_i G_j^T||_F."""
    from simlab.curvature import Factors

    rng = np.random.default_rng(k)
    G, Gf = rng.standard_normal((5, k, 6)), rng.standard_normal((3, k + 1, 6))
    Hd, Fd = reference.dense_from_factors(G), reference.dense_from_factors(Gf)
    S = coherence_matrix(Factors(G))
    npt.assert_allclose(S, reference.coherence_matrix(Hd), rtol=1e-10)
    npt.assert_allclose(coherence_measure(Factors(G)), coherence_measure(Hd),
                        rtol=1e-10)
    a, b = block_coherence(Factors(G), Factors(Gf)), block_coherence(Hd, Fd)
    for field in ("lam_rr", "lam_ff", "s_rf", "sigma", "sigma_r", "sigma_f"):
        npt.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-10)
    npt.assert_allclose(coherence_bound_lr(Factors(G), 2),
                        coherence_bound_lr(Hd, 2), rtol=1e-10)
