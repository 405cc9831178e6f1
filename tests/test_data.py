"""Signal-plus-noise data and forget-set selection (simlab.data)."""

import numpy as np
import numpy.testing as npt
import pytest

from simlab.data import (
    SignalNoise,
    check_split,
    rescale_signal,
    select_forget,
    signal_noise,
    signal_noise_pair,
)


def test_structure_and_orthogonality():
    data = signal_noise(50, 40, snr=0.3, sigma_p=2.0, p_flip=0.2, seed=3)
    assert data.X.shape == (50, 2, 40)
    assert set(np.unique(data.y)) <= {-1.0, 1.0}
    npt.assert_allclose(data.X[:, 0], data.y_clean[:, None] * data.mu)
    # noise is orthogonal to mu up to rounding: |<xi, mu>| / (|xi| |mu|) ~ 1e-16
    cos = data.noise @ data.mu / (np.linalg.norm(data.noise, axis=1)
                                  * np.linalg.norm(data.mu))
    assert np.abs(cos).max() < 1e-13
    npt.assert_allclose(data.snr, 0.3, rtol=1e-12)
    npt.assert_array_equal(data.flipped, data.y != data.y_clean)
    assert data.flipped.any() and not data.flipped.all()


def test_noise_variance():
    # E||xi||^2 = sigma_p^2 (d - 1); 400 samples give a relative SE ~ 0.2%
    data = signal_noise(400, 300, mu_norm=1.0, sigma_p=1.5, seed=0)
    mean_sq = np.mean(np.sum(data.noise**2, axis=1))
    npt.assert_allclose(mean_sq, 1.5**2 * 299, rtol=0.01)


def test_flip_rate():
    data = signal_noise(20000, 2, mu_norm=1.0, p_flip=0.1, seed=1)
    # binomial SE = sqrt(0.09 / 20000) = 0.0021: 4 SE tolerance
    assert abs(data.flipped.mean() - 0.1) < 0.009


def test_common_random_numbers_and_rescale():
    a = signal_noise(10, 30, mu_norm=1.0, p_flip=0.2, seed=4)
    b = signal_noise(10, 30, mu_norm=3.0, p_flip=0.2, seed=4)
    npt.assert_array_equal(a.noise, b.noise)
    npt.assert_array_equal(a.y, b.y)
    c = rescale_signal(a, 3.0)
    npt.assert_allclose(c.X, b.X, rtol=1e-14, atol=1e-15)


def test_pair_shares_mu():
    tr, te = signal_noise_pair(10, 30, 25, snr=0.5, p_flip=0.1, seed=2)
    npt.assert_array_equal(tr.mu, te.mu)
    assert te.n == 30
    npt.assert_array_equal(tr.X, signal_noise(10, 25, snr=0.5, p_flip=0.1,
                                              seed=2).X)
    assert np.abs(te.noise @ tr.mu).max() < 1e-12


def test_user_arrays():
    X = np.random.default_rng(0).standard_normal((4, 2, 3))
    data = SignalNoise(X=X, y=[1, -1, 1, 1])
    assert data.n == 4 and data.d == 3 and data.mu is None
    assert np.isnan(data.snr)
    sub = data.subset([0, 2])
    npt.assert_array_equal(sub.X, X[[0, 2]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(X=np.ones((3, 2)), y=[1, 1, 1]), "X"),
    (dict(X=np.ones((3, 3, 4)), y=[1, 1, 1]), "X"),
    (dict(X=np.ones((3, 2, 4)), y=[1, 0, 1]), "y"),
    (dict(X=np.ones((3, 2, 4)), y=[1, 1]), "y"),
    (dict(X=np.full((3, 2, 4), np.nan), y=[1, 1, 1]), "X"),
    (dict(X=np.ones((3, 2, 4)), y=[1, 1, 1], mu=np.ones(3)), "mu"),
    (dict(X=np.ones((3, 2, 4)), y=[1, 1, 1], y_clean=[2, 1, 1]), "y_clean"),
])
def test_signalnoise_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SignalNoise(**kwargs)


@pytest.mark.parametrize("args, kwargs, match", [
    ((10, 5), dict(snr=1.0, p_flip=0.5), "p_flip"),
    ((10, 5), dict(snr=1.0, p_flip=-0.1), "p_flip"),
    ((-1, 5), dict(snr=1.0), "n"),
    ((10, 0), dict(snr=1.0), "d"),
    ((10, 5), dict(), "snr"),
    ((10, 5), dict(snr=1.0, mu_norm=1.0), "snr"),
    ((10, 5), dict(snr=-1.0), "snr"),
    ((10, 5), dict(snr=1.0, sigma_p=0.0), "sigma_p"),
    ((10, 5), dict(snr=1.0, seed=-1), "seed"),
])
def test_generator_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        signal_noise(*args, **kwargs)


def test_select_forget_rules():
    data = signal_noise(40, 20, snr=1.0, p_flip=0.2, seed=5)
    r, f = select_forget(data, 7, seed=1)
    assert f.size == 7 and r.size == 33
    npt.assert_array_equal(np.sort(np.concatenate([r, f])), np.arange(40))
    r, f = select_forget(data, rule="class", label=-1)
    npt.assert_array_equal(f, np.flatnonzero(data.y == -1))
    r, f = select_forget(data, rule="mislabeled")
    npt.assert_array_equal(f, np.flatnonzero(data.flipped))
    scores = np.arange(40.0)[::-1]
    r, f = select_forget(data, 3, rule="memorized", scores=scores)
    npt.assert_array_equal(f, [0, 1, 2])
    r, f = select_forget(data, 2, rule="class", label=1, seed=0)
    assert np.all(data.y[f] == 1) and f.size == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_forget=None), "n_forget"),
    (dict(n_forget=40), "n_forget"),
    (dict(n_forget=3, rule="nope"), "rule"),
    (dict(n_forget=3, rule="memorized"), "scores"),
    (dict(n_forget=3, rule="memorized", scores=np.ones(3)), "scores"),
    (dict(rule="class", label=0), "label"),
])
def test_select_forget_bad_input(kwargs, match):
    data = signal_noise(40, 20, snr=1.0, p_flip=0.2, seed=5)
    with pytest.raises(ValueError, match=match):
        select_forget(data, **kwargs)


def test_mislabeled_needs_flip_mask():
    data = SignalNoise(X=np.ones((3, 2, 2)), y=[1, -1, 1])
    with pytest.raises(ValueError, match="flip"):
        select_forget(data, rule="mislabeled")


@pytest.mark.parametrize("retain, forget, match", [
    (None, [0, 10], "forget"),
    (None, [-1], "forget"),
    (None, [], "forget"),
    (None, [1, 1], "forget"),
    ([0, 1, 2], [2, 3], "overlap"),
    ([0, 12], [3], "retain"),
    (None, list(range(10)), "retain"),
    (None, [0.5], "forget"),
])
def test_check_split_bad_input(retain, forget, match):
    with pytest.raises(ValueError, match=match):
        check_split(retain, forget, 10)
