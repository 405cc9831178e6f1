"""Training driver (simlab.dynamics.train) against an independent NumPy reference
(``reference.gd_run``)."""

import numpy as np
import numpy.testing as npt
import pytest

from simlab import _streams
from simlab.data import signal_noise, signal_noise_pair
from simlab.dynamics.train import (
    batch_weights,
    memorization_scores,
    train,
    train_many,
)
from simlab.models import CNN, Linear

import reference  # gd_run: plain NumPy weight-space (S)GD, no Gram trick, no Numba

CASES = [(CNN(40, 4), "logistic"), (CNN(40, 3, q=2), "squared"),
         (Linear(40), "squared"), (Linear(40), "logistic")]
CASE_IDS = ["relu-logistic", "relu2-squared", "linear-squared", "linear-logistic"]


@pytest.mark.parametrize("method", ["gram", "weight"])
@pytest.mark.parametrize("model, loss", CASES, ids=CASE_IDS)
def test_gd_matches_numpy_reference(model, loss, method):
    data = signal_noise(12, 40, snr=0.3, p_flip=0.2, seed=1)
    eta = 0.05 if loss == "squared" else 0.2
    res = train(model, data, eta=eta, steps=200, loss=loss, method=method, seed=2,
                sigma0=0.1, record_every=50)
    ref = reference.gd_run(model, res.W0, data.X, data.y, eta,
                           np.full((200, 12), 1.0 / 12), loss)
    assert not res.diverged
    npt.assert_allclose(res.W, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("scheme", ["without", "with", "bernoulli"])
def test_sgd_matches_numpy_reference(scheme):
    model = CNN(30, 3)
    data = signal_noise(10, 30, snr=0.3, p_flip=0.2, seed=3)
    res = train(model, data, eta=0.2, steps=150, batch=3, scheme=scheme, seed=5,
                sigma0=0.1, record_every=40)
    rng = np.random.default_rng([5, _streams.TRAIN_BATCHES])
    wts = batch_weights(rng, 150, 10, 3, scheme)
    ref = reference.gd_run(model, res.W0, data.X, data.y, 0.2, wts, "logistic")
    npt.assert_allclose(res.W, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_methods_and_records_agree():
    model = CNN(25, 3)
    tr, te = signal_noise_pair(16, 40, 25, snr=0.5, p_flip=0.1, seed=0)
    kw = dict(eta=0.1, steps=120, batch=4, scheme="with", seed=1, test=te)
    a = train(model, tr, method="gram", record_every=1, **kw)
    b = train(model, tr, method="weight", record_every=37, **kw)
    npt.assert_allclose(a.W, b.W, rtol=0, atol=1e-12 * np.abs(a.W).max())
    ha, hb = a.history, b.history
    common = np.intersect1d(ha.step.values, hb.step.values)
    npt.assert_array_equal(common, [0, 37, 74, 111, 120])
    for var in ["train_loss", "test_loss", "test_acc_clean", "dist", "rho_max"]:
        npt.assert_allclose(ha[var].sel(step=common), hb[var].sel(step=common),
                            rtol=1e-10, atol=1e-13)


def test_train_many_equals_train():
    datas, tests, models = [], [], []
    for d in (20, 35, 50):
        tr, te = signal_noise_pair(10, 30, d, mu_norm=2.0, p_flip=0.1, seed=d)
        datas.append(tr)
        tests.append(te)
        models.append(CNN(d, 3))
    etas, seeds = [0.05, 0.1, 0.2], [0, 1, 2]
    many = train_many(models, datas, tests=tests, eta=etas, steps=80, seeds=seeds,
                      batch=5, record_every=20)
    for k in range(3):
        one = train(models[k], datas[k], test=tests[k], eta=etas[k], steps=80,
                    seed=seeds[k], batch=5, record_every=20)
        npt.assert_allclose(many[k].W, one.W, rtol=0, atol=1e-14)
        npt.assert_allclose(many[k].history.test_loss, one.history.test_loss,
                            rtol=1e-13)


def _assert_same_records(dense, sparse, test_rtol=0.0):
    """``sparse``'s history is ``dense``'s at ``sparse``'s steps, bit for bit.

    ``test_rtol``: the Gram form picks its route to the test outputs by cost,
    which depends on the number of records (``W_0 X_t^T + C (X_p X_t^T)`` cached,
    or ``(W_0 + C X_p) X_t^T``); the two round differently, so ``test_loss``
    then agrees to rounding only.
    """
    hd, hs = dense.history, sparse.history
    assert np.isin(hs.step.values, hd.step.values).all()
    npt.assert_array_equal(dense.W, sparse.W)
    for var in hs.data_vars:
        a, b = hd[var].sel(step=hs.step.values).values, hs[var].values
        if var == "test_loss" and test_rtol:
            npt.assert_allclose(a, b, rtol=test_rtol, err_msg=var)
        else:
            npt.assert_array_equal(a, b, err_msg=var)


@pytest.mark.parametrize("method", ["gram", "weight"])
@pytest.mark.parametrize("batch, scheme", [(None, "without"), (4, "with")])
def test_default_records_equal_sparse_records(method, batch, scheme):
    # Where records are made, and how many at a time, must not change a number:
    # the default schedule (every steps // 100 = 3 steps, recorded inside the
    # Gram-form kernel) against two records made one at a time.
    model = CNN(30, 3)
    tr, te = signal_noise_pair(12, 25, 30, mu_norm=2.0, p_flip=0.1, seed=6)
    kw = dict(eta=0.2, steps=300, batch=batch, scheme=scheme, seed=3, method=method)
    for test in (None, te):
        dense = train(model, tr, test=test, **kw)
        sparse = train(model, tr, test=test, record_every=150, **kw)
        npt.assert_array_equal(dense.history.step, np.arange(0, 301, 3))
        npt.assert_array_equal(sparse.history.step, [0, 150, 300])
        _assert_same_records(dense, sparse,
                             test_rtol=1e-13 if method == "gram" else 0.0)
        # ... and the records are those of the weights (independent formulas)
        npt.assert_allclose(dense.history.dist.values[-1],
                            np.linalg.norm(dense.W - dense.W0), rtol=1e-12)
        npt.assert_allclose(dense.history.train_loss.values[-1],
                            model.loss(dense.W, tr.X, tr.y), rtol=1e-12)


def test_record_chunks_and_stacks_do_not_change_records(monkeypatch):
    # Records split over many kernel calls (tiny chunk budget) and configurations
    # run as a stack give the records of one configuration run alone.
    from simlab.dynamics import train as train_mod

    datas, tests, models = [], [], []
    for d in (20, 35):
        tr, te = signal_noise_pair(10, 30, d, mu_norm=2.0, p_flip=0.1, seed=d)
        datas.append(tr)
        tests.append(te)
        models.append(CNN(d, 3))
    kw = dict(eta=[0.05, 0.2], steps=200, seeds=[0, 1], batch=5)
    ref = train_many(models, datas, tests=tests, record_every=100, **kw)
    monkeypatch.setattr(train_mod, "_CHUNK_ENTRIES", 700)
    many = train_many(models, datas, tests=tests, record_every=1, **kw)
    for k in range(2):
        assert many[k].history.step.size == 201
        _assert_same_records(many[k], ref[k], test_rtol=1e-13)
        one = train(models[k], datas[k], test=tests[k], eta=kw["eta"][k], steps=200,
                    seed=kw["seeds"][k], batch=5, record_every=7)
        _assert_same_records(many[k], one, test_rtol=1e-13)


def test_quad_records_grouping_and_reference():
    # ||W - W0||^2 in Gram form: each record's value is the same whether it is
    # summed alone, four at a time or as a SIMD lane among many, and agrees with
    # the plain quadratic form (summation-order rounding only).
    from simlab.dynamics.train import _cpu

    rng = np.random.default_rng(0)
    for K, n2 in [(1, 2), (6, 40), (20, 40), (4, 100), (2, 2732)]:
        R = 10 if n2 < 1000 else 3
        Cs = rng.standard_normal((R, K, n2))
        Cs[:, :, ::3] = 0.0                       # zero rows (skipped)
        Cs[1] *= rng.random((K, n2)) < 0.5         # scattered zeros
        X = rng.standard_normal((n2, 5))
        G = X @ X.T
        together = np.empty(R)
        _cpu.quad_records(Cs, G, R, together)
        alone = np.empty(R)
        for r in range(R):
            _cpu.quad_records(Cs[r:r + 1], G, 1, alone[r:r + 1])
        npt.assert_array_equal(together, alone)
        plain = np.einsum("rik,kl,ril->r", Cs, G, Cs, optimize=True)
        npt.assert_allclose(together, plain, rtol=1e-12)
    # non-finite input propagates (nothing is skipped then)
    Cs = np.zeros((9, 2, 4))
    Cs[:, 0, 1] = 1.0
    G = np.eye(4)
    G[0, 0] = np.inf
    out = np.empty(9)
    _cpu.quad_records(Cs, G, 9, out)
    assert np.isnan(out).all()


def test_history_decomposition_and_sharpness():
    model = CNN(40, 4)
    tr, te = signal_noise_pair(12, 50, 40, mu_norm=3.0, p_flip=0.2, seed=4)
    res = train(model, tr, test=te, eta=0.1, steps=60, record_every=20,
                sharpness_every=30)
    h = res.history
    npt.assert_array_equal(h.step, [0, 20, 40, 60])
    npt.assert_array_equal(h.sharpness_step, [0, 30, 60])
    for var in h.data_vars:
        assert np.all(np.isfinite(h[var].values)), var
    npt.assert_allclose(h.sharpness.values[-1], model.sharpness(res.W, tr.X, tr.y),
                        rtol=1e-8)
    npt.assert_allclose(h.dist.values[-1], np.linalg.norm(res.W - res.W0), rtol=1e-10)
    npt.assert_allclose(h.train_loss.values[-1], model.loss(res.W, tr.X, tr.y),
                        rtol=1e-12)
    gamma, rho = model.decompose(res.W, res.W0, tr)     # least squares on W
    npt.assert_allclose(res.gamma, gamma, atol=1e-10 * np.abs(gamma).max())
    npt.assert_allclose(res.rho, rho, atol=1e-10 * np.abs(rho).max())
    npt.assert_allclose(h.gamma_max.values[-1], gamma.max(), rtol=1e-10)
    W = res.W0 + np.einsum("jrip,ipd->jrd", res.coef, tr.X)
    npt.assert_allclose(W, res.W, atol=1e-13)
    assert res.memorization.shape == (12,)


def test_memorization_scores():
    rho = np.zeros((2, 2, 3))
    rho[0, 1, 0] = 5.0      # sample 0 (y=+1) memorized by a +1 filter
    rho[1, 0, 1] = 4.0      # sample 1 (y=-1) by a -1 filter
    rho[0, 0, 2] = 9.0      # sample 2 (y=-1) only by a filter of the other class
    npt.assert_allclose(memorization_scores(rho, np.array([1.0, -1.0, -1.0])),
                        [5.0, 4.0, 0.0])
    npt.assert_allclose(memorization_scores(np.array([[[1.0, -2.0]]]),
                                            np.array([1.0, -1.0])), [1.0, 2.0])


def test_divergence_stops_cleanly():
    model = Linear(30)
    data, test = signal_noise_pair(10, 20, 30, snr=1.0, seed=0)
    res = train(model, data, test=test, eta=50.0, steps=2000, loss="squared",
                record_every=100)
    assert res.diverged and res.steps < 2000
    assert res.history.step.values[-1] == res.steps
    for var in res.history.data_vars:
        assert np.all(np.isfinite(res.history[var].values)), var
    assert np.all(np.isfinite(res.W))


def test_zero_steps_and_no_test():
    model = CNN(10, 2)
    data = signal_noise(5, 10, snr=1.0, seed=0)
    res = train(model, data, eta=0.1, steps=0)
    npt.assert_array_equal(res.W, res.W0)
    assert res.history.step.values.tolist() == [0]
    assert np.isnan(res.history.test_loss.values[0])


@pytest.mark.parametrize("scheme", ["without", "with", "bernoulli"])
def test_batch_weights(scheme):
    rng = np.random.default_rng(0)
    w = batch_weights(rng, 4000, 10, 3, scheme)
    if scheme != "bernoulli":
        npt.assert_allclose(w.sum(axis=1), 1.0)
    if scheme == "without":
        assert np.all((w == 0) | (w == 1 / 3)) and np.all((w > 0).sum(axis=1) == 3)
    # unbiased: E w_i = 1/n; 4000 steps give SE ~ 0.002 per sample
    npt.assert_allclose(w.mean(axis=0), 0.1, atol=0.012)
    # chunking does not change the draws
    a = batch_weights(np.random.default_rng(1), 10, 10, 3, scheme)
    r = np.random.default_rng(1)
    b = np.concatenate([batch_weights(r, 4, 10, 3, scheme),
                        batch_weights(r, 6, 10, 3, scheme)])
    npt.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=0.0), "eta"), (dict(eta=-1.0), "eta"), (dict(steps=-1), "steps"),
    (dict(batch=11), "batch"), (dict(batch=0), "batch"),
    (dict(scheme="random", batch=2), "scheme"), (dict(loss="hinge"), "loss"),
    (dict(method="gpu"), "method"), (dict(seed=-2), "seed"),
    (dict(record_every=0), "record_every"),
    (dict(W0=np.zeros((2, 3, 9))), "W0"),
])
def test_bad_input(kwargs, match):
    model = CNN(10, 3)
    data = signal_noise(10, 10, snr=1.0, seed=0)
    args = dict(eta=0.1, steps=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(model, data, **args)


def test_bad_data():
    data = signal_noise(10, 10, snr=1.0, seed=0)
    with pytest.raises(ValueError, match="d=10"):
        train(CNN(12, 3), data, eta=0.1, steps=5)
    with pytest.raises(ValueError, match="test"):
        train(CNN(10, 3), data, eta=0.1, steps=5, test=signal_noise(5, 11, snr=1.0))
    with pytest.raises(ValueError, match="same n"):
        train_many(CNN(10, 3), [data, signal_noise(8, 10, snr=1.0)], eta=0.1,
                   steps=5)
    with pytest.raises(ValueError, match="architecture"):
        train_many([CNN(10, 3), CNN(10, 2)], [data, data], eta=0.1, steps=5)
    with pytest.raises(ValueError, match="eta"):
        train_many(CNN(10, 3), [data, data], eta=[0.1, 0.2, 0.3], steps=5)


def test_benign_overfitting_smoke(tmp_path):
    from simlab.experiments import get

    mod = get("benign-overfitting")
    ds = mod.run(quick=True, d=[100, 400], mu=[0.5, 1.0, 2.0, 4.0, 8.0], steps=100,
                 n_test=100)
    assert ds.mean_test_error_clean.shape == (2, 5)
    assert np.isfinite(ds.attrs["exponent"])
    assert "predicted 0.25" in ds.attrs["summary"]
    # error falls with signal strength (harmful -> benign)
    err = ds.mean_test_error_clean.values
    assert np.all(err[:, 0] > 0.3) and np.all(err[:, -1] < 0.05)
    ds.to_netcdf(tmp_path / "bo.nc", engine="scipy")
    fig = mod.plot(ds)
    fig.savefig(tmp_path / "bo.png")


def test_sharpness_of_overflowing_weights_is_inf_not_an_error():
    """A diverging q = 3 run's weights overflow the Hessian: the sharpness is
    reported as inf (dense and Lanczos paths), never NaN or a LinAlgError."""
    import simlab.models.two_patch as tp
    from simlab.models.two_patch import kernel_sharpness, loss_code

    model = CNN(20, 2, q=3)
    data = signal_noise(6, 20, snr=0.5, seed=0)
    Xp = data.X.reshape(12, 20)
    for scale in (np.inf, 1e120):
        Wk = np.full(model.shape, scale).reshape(4, 20)
        for dense_max in (10**6, 0):        # dense eigh, then the Lanczos path
            old, tp._DENSE_SHARPNESS_MAX = tp._DENSE_SHARPNESS_MAX, dense_max
            try:
                s = kernel_sharpness(Wk, Xp, data.y, model.kernel_args,
                                     loss_code("squared"), 1e-10, 0)
            finally:
                tp._DENSE_SHARPNESS_MAX = old
            assert s == np.inf
