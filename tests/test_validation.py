"""Bad input gets a clear error naming the argument, never a wrong number (issue 8 §3).

Each case below failed before the validation in ``simlab._validation`` was
tightened: complex input was truncated to its real part, ``True`` was read as
1, huge but finite values ended in numpy/LAPACK exceptions, ``inf`` or wrong
numbers, and sizes were only checked by the allocator. Where a huge value has a
correct finite answer, it is compared with an independent reference.
"""

import math
import re

import mpmath
import numpy as np
import numpy.testing as npt
import pytest
import scipy.stats

from simlab import _validation as V
from simlab.coherence import block_coherence, coherence_matrix, coherence_measure
from simlab.curvature import (
    coherence_dial,
    mean_hessian,
    random_psd,
    random_rank_one,
    range_basis,
    to_dense,
)
from simlab.data import (
    SignalNoise,
    rescale_signal,
    select_forget,
    signal_noise,
    signal_noise_pair,
)
from simlab.dynamics.linearized import linearized, linearized_grid
from simlab.stability import (
    critical_lr,
    escape_time,
    gram_operator,
    second_moment_matrix,
    second_moment_operator,
    spectral_radius,
)
from simlab.theory import rmt

H = coherence_dial(6, 2)                       # rank-one, lambda_max(mean) = 2
H_DENSE = coherence_dial(6, 2, rank_one=False)
F = np.eye(5)[:3] * 0.5                        # 3 rank-one forget factors, p = 5


# --------------------------------------------------------------------------
# complex input is refused, never truncated
# --------------------------------------------------------------------------

COMPLEX_CALLS = {
    "spectral_radius": lambda: spectral_radius(H + 1e-3j, 0.5, 2, scheme="without"),
    "critical_lr": lambda: critical_lr(H + 1e-3j, 2, scheme="without"),
    "escape_time": lambda: escape_time(H + 1e-3j, 0.9, 2, scheme="without"),
    "forget": lambda: spectral_radius(H, 0.5, 2, scheme="without",
                                      forget=F + 1e-3j, alpha=0.1),
    "coherence_matrix": lambda: coherence_matrix(H + 1e-3j),
    "coherence_measure": lambda: coherence_measure(H_DENSE + 1e-3j),
    "block_coherence": lambda: block_coherence(H + 1e-3j, F),
    "linearized": lambda: linearized(H + 1e-3j, 0.5, 2, steps=5, trajectories=2),
    "SignalNoise": lambda: SignalNoise(X=np.ones((3, 2, 4)) + 1e-3j, y=[1, -1, 1]),
    "second_moment_operator(X)": lambda: second_moment_operator(
        H, 0.5, 2)(np.eye(5) + 1e-3j),
    "gram_operator(C)": lambda: gram_operator(H, 0.5, 2)[0](np.eye(6) + 1e-3j),
    "random_rank_one(scale)": lambda: random_rank_one(3, 2, seed=0,
                                                      scale=[1, 1, 1 + 1e-3j]),
    "ascent_rate_limit(u)": lambda: rmt.ascent_rate_limit(np.array([1 + 1e-3j]),
                                                          100, 10, 0.3),
}
COMPLEX_NAMES = {"forget": "forget", "SignalNoise": "X",
                 "second_moment_operator(X)": "X", "gram_operator(C)": "C",
                 "random_rank_one(scale)": "scale", "ascent_rate_limit(u)": "u",
                 "coherence_matrix": "hessians", "coherence_measure": "hessians",
                 "block_coherence": "retain"}


@pytest.mark.parametrize("call", sorted(COMPLEX_CALLS))
def test_complex_input_is_refused(call):
    name = COMPLEX_NAMES.get(call, "retain")
    with pytest.raises(ValueError, match=rf"^{re.escape(name)} must be real"):
        COMPLEX_CALLS[call]()


def test_complex_scalars_are_refused():
    with pytest.raises(ValueError, match="theta must be a real number"):
        rmt.folded_normal_moments(100, 1j)
    with pytest.raises(ValueError, match="eta must be a real number"):
        spectral_radius(H, 0.5 + 0j, 2)
    with pytest.raises(ValueError, match="sigma_p must be a real number"):
        SignalNoise(X=np.ones((3, 2, 4)), y=[1, -1, 1], sigma_p=1 + 0j)


# --------------------------------------------------------------------------
# bools are not integers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [True, np.True_])
def test_bool_batch_is_refused(flag):
    with pytest.raises(ValueError, match="batch must be an integer, got the bool"):
        spectral_radius(H, 0.5, flag)
    with pytest.raises(ValueError, match="batch must be an integer, got the bool"):
        linearized(H, 0.5, flag, steps=5)
    with pytest.raises(ValueError, match="n must be an integer, got the bool"):
        coherence_dial(flag, 1)
    with pytest.raises(ValueError, match="n must be an integer, got the bool"):
        rmt.mp_quantiles(flag, 3)
    with pytest.raises(ValueError, match="label must be 1 or -1"):
        select_forget(signal_noise(10, 4, snr=1.0, seed=0), rule="class",
                      label=flag)
    with pytest.raises(ValueError, match="seed must be an integer, got the bool"):
        random_rank_one(2, 2, seed=flag)


def test_check_int_bounds():
    assert V.check_int(3.0, "k") == 3 and type(V.check_int(np.int64(3), "k")) is int
    with pytest.raises(ValueError, match="steps must fit in a 64-bit integer"):
        linearized(H, 0.5, 2, steps=2**70)
    # seeds are not counted in int64: large seeds stay valid
    assert V.check_seed(2**80) == 2**80


# --------------------------------------------------------------------------
# huge (or tiny) but finite values: a clear error, or the right number
# --------------------------------------------------------------------------

@pytest.mark.parametrize("family", [H * 1e100, H_DENSE * 1e200])
def test_huge_hessians_are_refused(family):
    for call in (lambda: spectral_radius(family, 1.0, 2),
                 lambda: critical_lr(family, 2),
                 lambda: linearized(family, 1.0, 2, steps=5)):
        with pytest.raises(ValueError, match="retain has a per-sample curvature"):
            call()
    with pytest.raises(ValueError, match="hessians has a per-sample curvature"):
        coherence_measure(family)


def test_tiny_rank_one_factors_are_refused_not_called_zero():
    # g g^T underflows to 0 for |g| ~ 1e-200: before, "all Hessians are zero"
    with pytest.raises(ValueError, match="below 1e-100: it underflows"):
        coherence_measure(H * 1e-200)
    with pytest.raises(ValueError, match="retain has a largest per-sample"):
        spectral_radius(H * 1e-200, 0.5, 2)
    # exact zeros remain what they were (a zero family is not a scale problem)
    with pytest.raises(ValueError, match="all zero"):
        coherence_measure(np.zeros((3, 2)))


@pytest.mark.parametrize("eta", [1e200, 1e151])
def test_absurd_eta_is_refused(eta):
    for call in (lambda: spectral_radius(H, eta, 2),
                 lambda: escape_time(H, eta, 2, scheme="without"),
                 lambda: second_moment_matrix(H, eta, 2),
                 lambda: linearized(H, eta, 2, steps=5)):
        with pytest.raises(ValueError, match=r"^eta must be <= 1e\+150"):
            call()


@pytest.mark.parametrize("method", ["dense", "lanczos", "power"])
def test_eta_times_curvature_beyond_float64_is_refused(method):
    # eta <= 1e150 but eta * lambda = 6e60: T has entries ~ 1e121 and the
    # simulation would overflow |delta|^2 in one step
    with pytest.raises(ValueError, match=r"^eta=1e\+60 is too large"):
        spectral_radius(H, 1e60, 2, method=method)
    with pytest.raises(ValueError, match=r"^eta=1e\+60 is too large"):
        linearized(H, 1e60, 2, steps=5)


def test_huge_eta_within_range_gives_the_exact_answer():
    # Identical samples: every minibatch equals the full batch, so
    # rho(T) = (1 - 2 eta)^2 exactly (lambda(H) = 2), at any eta.
    G = coherence_dial(4, 4)
    eta = 1e40
    exact = (2 * eta - 1) ** 2
    for scheme in ("with", "without"):   # bernoulli divides by B, not the draw
        npt.assert_allclose(spectral_radius(G, eta, 2, scheme=scheme), exact,
                            rtol=1e-12)
    # the simulation grows |delta|^2 by exactly (2 eta - 1)^2 per step: no
    # -inf Lyapunov exponents, every trajectory escapes at step 1
    res = linearized(G, eta, 2, scheme="without", steps=30, trajectories=3, seed=1)
    npt.assert_allclose(res.lyapunov, math.log(2 * eta - 1), rtol=1e-12)
    npt.assert_allclose(res.ms_growth, exact, rtol=1e-9)
    assert res.escaped.all() and (res.escape_step == 1).all()


def test_scale_invariance_at_extreme_scales():
    # T depends on eta * H only (THEORY 2): rho(c H, eta / c) = rho(H, eta)
    ref = spectral_radius(H, 0.4, 2)
    for c in (1e-45, 1e45):                  # rank-one factors: H_i scales as c^2
        npt.assert_allclose(spectral_radius(H * math.sqrt(c), 0.4 / c, 2), ref,
                            rtol=1e-10)
        npt.assert_allclose(spectral_radius(H_DENSE * c, 0.4 / c, 2), ref, rtol=1e-10)


def test_huge_snr_and_scales_are_refused():
    for call, name in ((lambda: signal_noise(5, 10, snr=1e200), "snr"),
                       (lambda: signal_noise_pair(5, 5, 10, snr=1e60), "snr"),
                       (lambda: signal_noise(5, 10, snr=1e49, sigma_p=1e10), "snr"),
                       (lambda: signal_noise(5, 10, mu_norm=1e300), "mu_norm"),
                       (lambda: signal_noise(5, 10, snr=1.0, sigma_p=1e300),
                        "sigma_p"),
                       (lambda: rmt.sharpness(50, 200, 1e200), "snr"),
                       (lambda: rmt.critical_lr(50, 200, 1e200, 10), "snr"),
                       (lambda: rmt.kappa_plus(50, 10, 200, 1e200, 0.3), "snr"),
                       (lambda: rmt.coherence_top(50, 200, 1.0, 1e-200), "sigma_p")):
        with pytest.raises(ValueError, match=rf"^{name}"):
            call()
    data = signal_noise(3, 4, snr=1.0, seed=0)
    with pytest.raises(ValueError, match="mu_norm must be <="):
        rescale_signal(data, 1e200)
    with pytest.raises(ValueError, match="X has an entry of magnitude"):
        SignalNoise(X=np.full((2, 2, 3), 1e100), y=[1, -1])


def test_rmt_large_snr_limits():
    # kappa_+ / ||mu||^2 -> 2 alpha - 1 for alpha > 1/2 (the mean Hessian along
    # mu is (alpha - (1 - alpha)) ||mu||^2); for alpha < 1/2 the outlier root of
    # THEORY 11's quadratic tends to p alpha (1-alpha) (1/n_f + 1/n_r) / (1 - 2 alpha).
    # Before, the root cancelled to 0 for snr >~ 1e6 and the edge was returned.
    n, n_f, d = 50, 10, 200
    for snr in (1e6, 1e10, 1e20):
        theta = snr**2 * d
        npt.assert_allclose(rmt.kappa_plus(n, n_f, d, snr, 0.7) / theta,
                            0.4, rtol=1e-6)
        limit = (d - 1) * 0.3 * 0.7 * (1 / n_f + 1 / (n - n_f)) / 0.4
        npt.assert_allclose(rmt.kappa_plus(n, n_f, d, snr, 0.3), limit,
                            rtol=1e-6)
        # sharpness ~ theta (the spike dominates): finite, no brentq failure
        npt.assert_allclose(rmt.sharpness(n, d, snr) / theta, 1.0, rtol=1e-6)


# --------------------------------------------------------------------------
# linearized: horizon and recording
# --------------------------------------------------------------------------

def test_record_every_beyond_steps_is_refused():
    with pytest.raises(ValueError, match="record_every must be <= 5, got 10"):
        linearized(H, 0.5, 2, steps=5, record_every=10)
    with pytest.raises(ValueError, match="record_every must be <= 5"):
        linearized_grid([{"retain": H, "eta": 0.5, "batch": 2}], steps=5,
                        record_every=6)
    # record_every == steps keeps two recorded points: ms_growth is defined
    G = coherence_dial(4, 4)
    res = linearized(G, 1.5, 2, scheme="without", steps=5, record_every=5,
                     trajectories=2)
    npt.assert_allclose(res.ms_growth, 4.0, rtol=1e-12)     # (1 - 2 * 1.5)^2


# --------------------------------------------------------------------------
# rmt building blocks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("p, theta, name", [(0, 1.0, "p"), (np.nan, 1.0, "p"),
                                            (np.inf, 1.0, "p"), (-3, 1.0, "p"),
                                            (10, np.nan, "theta"),
                                            (10, np.inf, "theta"),
                                            (10, -1.0, "theta"),
                                            (True, 1.0, "p")])
def test_folded_normal_moments_refuses_bad_arguments(p, theta, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        rmt.folded_normal_moments(p, theta)


def test_folded_normal_moments_against_scipy_and_large_mean():
    # |N(q, 1)| is scipy's foldnorm(c=q); the moments scale by sqrt(p) and p
    for p, q in ((100, 0.0), (100, 0.5), (37, 2.0), (400, 6.0)):
        m, v = rmt.folded_normal_moments(p, q * np.sqrt(p))
        ref_m, ref_v = scipy.stats.foldnorm.stats(q, moments="mv")
        npt.assert_allclose([m / np.sqrt(p), v / p], [ref_m, ref_v], rtol=1e-12)
    # far from 0 the fold does nothing: mean theta, variance p. Before, the
    # variance cancelled to 0.
    m, v = rmt.folded_normal_moments(100, 1e9)
    npt.assert_allclose([m, v], [1e9, 100.0], rtol=1e-12)


@pytest.mark.parametrize("u", [np.nan, np.inf, -1.0, [0.5, np.nan]])
def test_ascent_rate_limit_refuses_bad_u(u):
    with pytest.raises(ValueError, match="^u "):
        rmt.ascent_rate_limit(u, 100, 10, 0.3)


def test_ascent_rate_limit_at_large_u():
    # independent reference: the textbook root in 500-digit arithmetic (its
        # cancellation at u = 1e200 costs ~200 digits)
    def ref(u, n, n_f, alpha):
        with mpmath.workdps(500):
            u, alpha = mpmath.mpf(u), mpmath.mpf(alpha)
            n_r = n - n_f
            a, b = alpha / n_f, (1 - alpha) / n_r
            B = b - a + (u / n) * (1 - 2 * alpha)
            C = -a * b - (u / n) * alpha * (1 - alpha) * (mpmath.mpf(1) / n_f
                                                          + mpmath.mpf(1) / n_r)
            ell = (-B + mpmath.sqrt(B * B - 4 * C)) / 2
            return float(n * ell / (1 + u))

    for alpha in (0.3, 0.5, 0.7):
        for u in (0.0, 1.0, 1e3, 1e8, 1e12, 1e200):
            npt.assert_allclose(rmt.ascent_rate_limit(u, 100, 10, alpha),
                                ref(u, 100, 10, alpha), rtol=1e-12)
    assert isinstance(rmt.ascent_rate_limit(2.0, 100, 10, 0.3), float)


# --------------------------------------------------------------------------
# sizes are checked before allocating
# --------------------------------------------------------------------------

SIZE_CALLS = {
    "coherence_dial(n=1000000, s=1": lambda: coherence_dial(10**6, 1),
    "coherence_dial(n=1000000, s=1, rank_one=False": lambda: coherence_dial(
        10**6, 1, rank_one=False),
    "signal_noise(n=1000000000000": lambda: signal_noise(10**12, 10, snr=1.0),
    "mp_quantiles(n=10000000000000": lambda: rmt.mp_quantiles(10**13, 3),
    "random_rank_one(n=1000000000": lambda: random_rank_one(10**9, 10**4, seed=0),
    "random_psd(n=1000": lambda: random_psd(1000, 10**5, seed=0),
    "coherence matrix of 1000000 x 1000000": lambda: coherence_matrix(
        np.ones((10**6, 1))),
    "dense operator on 2000 x 2000": lambda: second_moment_matrix(
        np.eye(2000)[:4], 0.5, 2, restrict=False),
    "linearized run": lambda: linearized(H, 0.5, 2, steps=10**12, trajectories=4),
}


@pytest.mark.parametrize("what", sorted(SIZE_CALLS))
def test_sizes_are_checked_before_allocating(what):
    with pytest.raises(V.SizeError) as info:
        SIZE_CALLS[what]()
    assert what in str(info.value) and "iB)" in str(info.value)
    # a ValueError (bad argument) and a MemoryError at once
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemoryError)


# --------------------------------------------------------------------------
# the remaining argument checks of the touched modules
# --------------------------------------------------------------------------

def test_signal_noise_fields():
    X, y = np.ones((3, 2, 4)), [1, -1, 1]
    with pytest.raises(ValueError, match="flipped must hold booleans"):
        SignalNoise(X=X, y=y, flipped=[0, 2.5, 1])
    assert SignalNoise(X=X, y=y, flipped=[0, 1, 1]).flipped.tolist() == [False,
                                                                          True, True]
    with pytest.raises(ValueError, match="sigma_p must be > 0"):
        SignalNoise(X=X, y=y, sigma_p=-1.0)
    assert np.isnan(SignalNoise(X=X, y=y).sigma_p)          # unknown stays allowed
    with pytest.raises(ValueError, match="data must be a SignalNoise, got NoneType"):
        rescale_signal(None, 1.0)


def test_curvature_arguments():
    with pytest.raises(ValueError, match="scale must have shape"):
        random_rank_one(3, 2, seed=0, scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="rank_one must be a bool"):
        coherence_dial(4, 2, rank_one="no")
    with pytest.raises(ValueError, match="rtol must be < 1"):
        range_basis(H, rtol=2.0)
    # valid calls keep their values
    npt.assert_array_equal(to_dense(H)[0], np.outer(H[0], H[0]))
    npt.assert_allclose(mean_hessian(H), H.T @ H / 6)


def test_model_and_data_helpers():
    from simlab.data import signal_noise
    from simlab.models import CNN
    from simlab.models.two_patch import check_model, check_model_data

    with pytest.raises(ValueError, match="^model must be a TwoPatchModel, got None"):
        check_model(None)
    with pytest.raises(ValueError, match="^data must be a SignalNoise, got list"):
        check_model_data(CNN(3, 1), [1, 2])
    with pytest.raises(ValueError, match="^data has d=4 but the model expects d=3"):
        check_model_data(CNN(3, 1), signal_noise(2, 4, snr=0.1, seed=0))
    with pytest.raises(ValueError, match="scheme must be one of"):
        V.check_scheme(np.array("without"))
    with pytest.raises(ValueError, match="^y must contain only labels"):
        V.check_labels([1, 0], 2)
    assert V.check_patches(np.zeros((1, 2, 3))).shape == (1, 2, 3)


def test_huge_eta_refused_in_closed_forms_and_mean_bound():
    """The dial closed form and the mean lower bound refuse a step size whose
    square overflows, like the general operator (never an inf or 1e280)."""
    from simlab.curvature import coherence_dial
    from simlab.stability import mean_lower_bound
    from simlab.theory import dial_spectral_radius

    with pytest.raises(ValueError, match="eta"):
        dial_spectral_radius(10, 3, 1e140, 2)
    with pytest.raises(ValueError, match="eta"):
        mean_lower_bound(coherence_dial(10, 3), 1e140, 2)


def test_cnn_summary_refuses_complex_weights():
    from simlab.data import signal_noise
    from simlab.models import CNN
    from simlab.predict import cnn_summary

    model = CNN(8, 2)
    data = signal_noise(4, 8, snr=0.5, seed=0)
    with pytest.raises(ValueError, match="W must be real"):
        cnn_summary(model, model.init(0.1) + 1j, data)


@pytest.mark.parametrize("call, match", [
    (lambda m, d: __import__("simlab").train(m, d, eta=0.1, steps=3, scheme="foo"),
     "scheme"),                                    # full batch used to ignore it
    (lambda m, d: __import__("simlab").train(None, d, eta=0.1, steps=3),
     "model must be a TwoPatchModel, got NoneType"),
    (lambda m, d: __import__("simlab").train(m, None, eta=0.1, steps=3),
     "must be a SignalNoise, got NoneType"),
    (lambda m, d: __import__("simlab").unlearn(None, m.init(), d, [0], alpha=0.1,
                                               eta=0.1, steps=2),
     "model must be a TwoPatchModel"),
    (lambda m, d: __import__("simlab").unlearn(m, m.init() + 0j, d, [0], alpha=0.1,
                                               eta=0.1, steps=2),
     "W must be real"),
    (lambda m, d: __import__("simlab").predict_unlearning(m, m.init(), d, [0],
                                                          alpha=0.1, eta=0.1,
                                                          horizon=-1),
     "horizon"),
])
def test_training_unlearning_prediction_bad_input(call, match):
    from simlab.data import signal_noise
    from simlab.models import CNN

    with pytest.raises(ValueError, match=match):
        call(CNN(10, 2), signal_noise(6, 10, snr=0.5, seed=0))
