"""The curvature eigenbasis and the linear model's minimum-norm interpolator
against dense numpy references."""

import numpy as np
import pytest

from simlab.curvature import eigenbasis, mean_hessian, to_dense
from simlab.data import signal_noise
from simlab.models import Linear, min_norm_interpolator


@pytest.mark.parametrize("dense", [False, True])
def test_eigenbasis_diagonalizes_mean_hessian(dense):
    rng = np.random.default_rng(0)
    G = rng.standard_normal((6, 15))
    fam = to_dense(G) if dense else G
    vals, vecs = eigenbasis(fam)
    H = G.T @ G / 6
    ref = np.linalg.eigvalsh(H)[::-1][:6]
    # rank 6 of 15: the range has exactly 6 directions, eigenvalues match eigvalsh
    assert vals.shape == (6,) and vecs.shape == (15, 6)
    np.testing.assert_allclose(vals, ref, rtol=1e-10)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(H @ vecs, vecs * vals, atol=1e-10)
    assert np.all(np.diff(vals) <= 0)
    np.testing.assert_allclose(mean_hessian(fam), (vecs * vals) @ vecs.T, atol=1e-10)


def test_min_norm_interpolator_is_pinv_solution():
    data = signal_noise(10, 40, snr=0.3, p_flip=0.2, seed=1)
    Z = Linear(40).inputs(data.X)
    np.testing.assert_allclose(Z, data.X[:, 0] + data.X[:, 1])
    w = min_norm_interpolator(Z, data.y)
    np.testing.assert_allclose(Z @ w, data.y, atol=1e-10)
    np.testing.assert_allclose(w, np.linalg.pinv(Z) @ data.y, atol=1e-10)


def test_min_norm_interpolator_refuses_overdetermined_and_rank_deficient():
    with pytest.raises(ValueError, match="no exact interpolator"):
        min_norm_interpolator(np.ones((5, 3)), np.ones(5))
    with pytest.raises(ValueError, match="rank deficient"):
        min_norm_interpolator(np.ones((2, 3)), [1.0, -1.0])
