"""simlab.spectral against constructed subspaces and dense numpy references."""

import numpy as np
import pytest

from simlab import spectral as S
from simlab.data import signal_noise
from simlab.models import CNN, Linear, min_norm_interpolator


def _rotated_pair(d, angles, rng):
    """Two (k, d) row bases whose right subspaces meet at the given angles:
    b_i = cos t_i e_i + sin t_i e_{k+i} in a random orthonormal frame."""
    k = len(angles)
    Q = np.linalg.qr(rng.standard_normal((d, 2 * k)))[0]
    A = Q[:, :k].T
    t = np.radians(angles)
    B = (np.cos(t)[:, None] * Q[:, :k].T + np.sin(t)[:, None] * Q[:, k:].T)
    return A, B


def test_principal_angles_recover_constructed_angles():
    rng = np.random.default_rng(0)
    angles = [5.0, 20.0, 63.0]
    A, B = _rotated_pair(30, angles, rng)
    # distinct singular values 3 > 2 > 1 so the top-k subspaces are unique
    s = np.array([3.0, 2.0, 1.0])
    mix = np.linalg.qr(rng.standard_normal((6, 3)))[0]       # left vectors (6 rows)
    W0 = rng.standard_normal((2, 3, 30))
    Wa = W0 + ((mix * s) @ A).reshape(2, 3, 30)
    Wb = W0 + ((mix * s) @ B).reshape(2, 3, 30)
    got = S.principal_angles(Wa, Wb, W0, 3)
    np.testing.assert_allclose(np.sort(got), angles, atol=1e-8)
    # top-1 subspaces: e_1 vs b_1
    np.testing.assert_allclose(S.principal_angles(Wa, Wb, W0, 1), [5.0], atol=1e-8)


def test_tail_energy_matches_projection():
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((2, 4, 25))
    Wc = W0 + rng.standard_normal((2, 4, 25))
    Wn = Wc + 0.3 * rng.standard_normal((2, 4, 25))
    E = (Wn - Wc).reshape(8, 25)
    for k in (1, 3, 8):
        # reference: projector from numpy's SVD of the clean update
        V = np.linalg.svd((Wc - W0).reshape(8, 25))[2][:k].T
        ref = np.linalg.norm(E - E @ V @ V.T) ** 2 / np.linalg.norm(E) ** 2
        assert S.tail_energy(Wc, Wn, W0, k) == pytest.approx(ref, rel=1e-10)
    assert S.tail_energy(Wc, Wc, W0, 2) == 0.0


def test_wedin_never_violated_and_exact_case():
    rng = np.random.default_rng(2)
    worst = 0.0
    for trial in range(60):
        W0 = np.zeros((6, 20))
        Wc = rng.standard_normal((6, 20)) * np.geomspace(3, 0.1, 6)[:, None]
        Wn = Wc + 10 ** rng.uniform(-3, 0.5) * rng.standard_normal((6, 20))
        for k in range(1, 7):
            b = S.wedin(Wc, Wn, W0, k)
            assert b.holds, (trial, k, b)
            if np.isfinite(b.bound):
                worst = max(worst, b.tightness)
    assert 0.0 < worst <= 1.0
    # a perturbation that only rescales: subspaces unchanged, sin = 0
    Wc = np.diag([3.0, 1.0, 0.5]) @ rng.standard_normal((3, 8))
    b = S.wedin(Wc, 1.1 * Wc, np.zeros((3, 8)), 1)
    assert b.sin_theta == pytest.approx(0.0, abs=1e-7) and b.non_vacuous


def test_wedin_gap_definition():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 10))
    At = A + 0.01 * rng.standard_normal((4, 10))
    s, st = np.linalg.svd(A, compute_uv=False), np.linalg.svd(At, compute_uv=False)
    W0 = np.zeros((4, 10))
    assert S.wedin(A, At, W0, 2).gap == pytest.approx(st[1] - s[2])
    assert S.wedin(A, At, W0, 4).gap == pytest.approx(st[3])      # sigma_5(A) = 0


def test_weight_angle_and_curvature_tail():
    assert S.weight_angle([1.0, 0.0], [0.0, 2.0]) == pytest.approx(90.0)
    assert S.weight_angle([1.0, 1.0], [-1.0, -1.0]) == pytest.approx(180.0)
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((7, 30))
    w = rng.standard_normal(30)
    lam, V = np.linalg.eigh(Z.T @ Z / 7)
    for k in (1, 3, 7):
        Vk = V[:, ::-1][:, :k]
        ref = 1.0 - np.sum((Vk.T @ w) ** 2) / (w @ w)
        assert S.curvature_tail(w, Z, k) == pytest.approx(ref, rel=1e-9)


def test_min_norm_gram_identities_match_direct_computation():
    """Acceptance: the exact Gram-matrix angle equals the angle of the directly
    computed interpolators to 1e-10 (degrees); the top-curvature share equals a
    dense eigendecomposition of Z^T Z."""
    for seed, (n, d, snr, p) in enumerate([(20, 200, 0.1, 0.2), (50, 250, 0.5, 0.3),
                                            (30, 90, 0.02, 0.4)]):
        data = signal_noise(n, d, snr=snr, p_flip=p, seed=seed)
        Z = Linear(d).inputs(data.X)
        wc = min_norm_interpolator(Z, data.y_clean)
        wn = min_norm_interpolator(Z, data.y)
        cos = wc @ wn / np.linalg.norm(wc) / np.linalg.norm(wn)
        direct = np.degrees(np.arccos(cos))
        assert abs(S.min_norm_angle(Z, data.y_clean, data.y) - direct) < 1e-10
        assert S.weight_angle(wc, wn) == pytest.approx(direct, abs=1e-10)
        V = np.linalg.svd(Z, full_matrices=False)[2][::-1].T   # ascending, as eigh
        diff = wn - wc
        for k in (1, 2):
            ref = np.sum((V[:, ::-1][:, :k].T @ diff) ** 2) / (diff @ diff)
            assert S.min_norm_split(Z, data.y_clean, data.y, k) == pytest.approx(
                ref, rel=1e-8)
            assert 1.0 - S.curvature_tail(diff, Z, k) == pytest.approx(ref, rel=1e-8)


def test_lip_keeps_top_k_and_refits_inside():
    d, m = 30, 3
    model = CNN(d, m)
    data = signal_noise(12, d, snr=0.3, p_flip=0.2, seed=5)
    rng = np.random.default_rng(5)
    W0 = model.init(0.01, seed=5)
    W = W0 + 0.1 * rng.standard_normal(model.shape)
    dW = (W - W0).reshape(2 * m, d)
    U, s, Vt = np.linalg.svd(dW, full_matrices=False)
    k = 2
    trunc = S.lip(model, W, data, k, W0=W0, steps=0)
    np.testing.assert_allclose(trunc.reshape(2 * m, d) - W0.reshape(2 * m, d),
                               (U[:, :k] * s[:k]) @ Vt[:k], atol=1e-12)
    refit = S.lip(model, W, data, k, W0=W0, eta=0.5, steps=50)
    upd = refit.reshape(2 * m, d) - W0.reshape(2 * m, d)
    # the refit stays in the kept right subspace ...
    np.testing.assert_allclose(upd - upd @ Vt[:k].T @ Vt[:k], 0.0, atol=1e-10)
    # ... and lowers the training loss from the truncation
    assert model.loss(refit, data.X, data.y) < model.loss(trunc, data.X, data.y)


@pytest.mark.parametrize("call, match", [
    (lambda: S.principal_angles(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 3)),
                                3), "k must be <= 2"),
    (lambda: S.tail_energy(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 3)), 0),
     "k must be >= 1"),
    (lambda: S.wedin(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 2)), 1),
     "W0 must have the shape"),
    (lambda: S.weight_angle([0.0, 0.0], [1.0, 0.0]), "w_a and w_b must be nonzero"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lip_linear_model_without_w0():
    """For a scalar-output weight (1 x d) the rank-1 truncation is the weight
    itself; W0=None truncates W (as memorization.edit)."""
    data = signal_noise(8, 40, snr=0.3, p_flip=0.25, seed=6)
    model = Linear(40)
    w = min_norm_interpolator(model.inputs(data.X), data.y)
    np.testing.assert_allclose(S.lip(model, w, data, 1, steps=0), w, atol=1e-12)
