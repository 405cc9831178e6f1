"""simlab.testing: its strategies draw what they promise, its assertions catch
what they should (negative controls), at the stated false-failure rates."""

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlab import testing
from simlab._validation import check_hessians
from simlab.coherence import coherence_measure
from simlab.curvature import Factors, to_dense
from simlab.stability import critical_lr
from simlab.stability.bounds import coherence_bound_lr

import reference


@given(testing.families(min_n=2, max_n=5, max_p=4))
@settings(max_examples=40, deadline=None)
def test_families_are_valid_psd_families(fam):
    H = to_dense(fam)
    assert 2 <= H.shape[0] <= 5 and 1 <= H.shape[1] <= 4
    check_hessians(fam)
    assert np.linalg.eigvalsh(H).min() >= -1e-10 * max(1.0, np.abs(H).max())


@given(testing.families(kind="rank_k", max_rank=3))
@settings(max_examples=20, deadline=None)
def test_rank_k_kind_is_factors(fam):
    assert isinstance(fam, Factors) and 1 <= fam.shape[1] <= 3


def _draws(strategy, k=30):
    """``k`` examples of ``strategy`` from a derandomized hypothesis run (the
    same examples every time; distinct family seeds are checked by the caller)."""
    out = []

    @settings(max_examples=k, database=None, derandomize=True, deadline=None)
    @given(strategy)
    def grab(example):
        out.append(example)

    grab()
    return out


def test_alignment_raises_coherence():
    """Coherence of 30 derandomized draws each at alignment 0 and 0.95 (n = 8,
    p = 20): aligned samples share a direction, so sigma moves towards n. The mean
    difference must exceed 5 combined standard errors (one-sided normal tail
    3e-7 under 'no effect'); the draws must be distinct families."""
    sig = {}
    for a in (0.0, 0.95):
        fams = _draws(testing.families(min_n=8, max_n=8, min_p=20, max_p=20,
                                       kind="rank_one", alignment=a,
                                       scale_spread=0.0))
        assert len({f.tobytes() for f in fams}) >= 20        # genuinely many draws
        sig[a] = np.array([coherence_measure(f) for f in fams])
    se = np.hypot(*(v.std(ddof=1) / np.sqrt(v.size) for v in sig.values()))
    assert sig[0.95].mean() - sig[0.0].mean() > 5 * se


@given(testing.dial_families(max_n=8))
@settings(max_examples=20, deadline=None)
def test_dial_family_coherence_is_s(drawn):
    fam, n, s = drawn
    assert abs(coherence_measure(fam) - s) < 1e-9 * n


@given(testing.unlearning_problems())
@settings(max_examples=30, deadline=None)
def test_unlearning_problems_valid_together(prob):
    n_r, n_f = prob.retain.shape[0], prob.forget.shape[0]
    assert 1 <= prob.batch <= n_r and 1 <= prob.forget_batch <= n_f
    assert 0.0 <= prob.alpha <= 1.0 and prob.scheme in testing.SCHEMES
    # forget inside range(retain): projecting on the retain range changes nothing
    from simlab.curvature import range_basis
    U = range_basis(prob.retain)
    F = to_dense(prob.forget)
    np.testing.assert_allclose(U @ U.T @ F @ U @ U.T, F, atol=1e-8 * np.abs(F).max())


@given(testing.signal_noise_data(max_n=10, max_d=30, snr=0.7))
@settings(max_examples=15, deadline=None)
def test_signal_noise_data(data):
    """The strategy honours its bounds and fixed parameters: 2 <= n <= 10,
    4 <= d <= 30 (min_d's default), the requested SNR (to rounding), labels in
    {-1, +1} with the flips recorded (the flip rate: the next test)."""
    n, _, d = data.X.shape
    assert 2 <= n <= 10 and 4 <= d <= 30 and data.X.shape == (n, 2, d)
    npt.assert_allclose(data.snr, 0.7, rtol=1e-12)
    assert set(np.unique(data.y)) <= {-1.0, 1.0}
    npt.assert_array_equal(data.flipped, data.y != data.y_clean)


@given(testing.signal_noise_data(min_n=30, max_n=40, max_d=8, p_flip=0.45),
       testing.signal_noise_data(max_n=10, max_d=8, p_flip=0.0))
@settings(max_examples=15, deadline=None)
def test_signal_noise_data_passes_the_flip_rate(noisy, clean):
    """p_flip reaches signal_noise: at 0 nothing is flipped; at 0.45 with n >= 30
    something is (no flip has probability 0.55^30 = 1.6e-8 per example, below
    3e-7 over the 15 examples)."""
    assert not clean.flipped.any()
    assert noisy.flipped.any()


@given(testing.families(kind="rank_one", min_n=2), st.integers(1, 6))
@settings(max_examples=30, deadline=None)
def test_coherence_bound_never_violated_via_helper(G, batch):
    batch = min(batch, G.shape[0])
    # Dexter et al.: Bernoulli SGD diverges above the bound, so eta* <= bound
    testing.assert_bound_holds(critical_lr(G, batch, scheme="bernoulli"),
                               coherence_bound_lr(G, batch), side="upper")


def test_assert_bound_holds_catches_violation():
    testing.assert_bound_holds(1.0 + 1e-12, 1.0)
    testing.assert_bound_holds(1.0 - 1e-12, 1.0, side="lower")
    with pytest.raises(AssertionError, match="above the upper bound"):
        testing.assert_bound_holds(1.0 + 1e-6, 1.0)
    with pytest.raises(AssertionError, match="below the lower bound"):
        testing.assert_bound_holds(1.0 - 1e-6, 1.0, side="lower")


def test_assert_agrees_rate_and_power():
    """Under the null (normal estimates with the stated se) 2000 repetitions of a
    10-entry test at rate 0.05 fail about 100 times: the count lies in [60, 145]
    (binomial(2000, 0.05) +- 4.3 sd; Bonferroni makes the true rate slightly
    below 0.05, hence the lower end); a 6-sigma shift is always caught."""
    rng = np.random.default_rng(0)
    fails = 0
    for _ in range(2000):
        try:
            testing.assert_agrees(rng.standard_normal(10), np.zeros(10), 1.0,
                                  false_failure_rate=0.05)
        except AssertionError:
            fails += 1
    assert 60 <= fails <= 145, fails
    with pytest.raises(AssertionError, match="standard errors"):
        testing.assert_agrees([6.0 + 1e-3], [0.0], [1.0], false_failure_rate=1e-6)
    for bad in (-1.0, 0.0, np.nan):
        with pytest.raises(ValueError, match="se must"):
            testing.assert_agrees([0.0], [0.0], [bad])


_HELPER_CASES = {
    # n = 6, B = 2: the without-replacement noise factor is 2/5, "with" gives 1/2.
    "retain": dict(n_f=0, eta=0.6, steps=4, kw=dict(scheme="without")),
    # descent-ascent: retain 6 (B = 2) and forget 3 (B_f = 2: 1/4 vs 1/2)
    "forget": dict(n_f=3, eta=0.8, steps=6, kw=dict(scheme="without", forget_batch=2,
                                                    alpha=0.5)),
    # alpha = 1: ascent on the forget set only; U is the forget set's range
    "alpha=1": dict(n_f=3, eta=0.5, steps=4, kw=dict(scheme="without", forget_batch=2,
                                                     alpha=1.0)),
}


@pytest.mark.parametrize("case", list(_HELPER_CASES))
def test_simulation_matches_operator_and_detects_wrong_operator(case, monkeypatch):
    """The helper passes on a correct comparison (false-failure rate 1e-6); the
    exact curve it returns is the dense enumeration of tests/reference.py (p = 3:
    ``tr Sigma_t`` from the 9 x 9 operator; rtol 1e-10 is rounding over <= 6 steps of
    O(1) numbers); and it fails when its operator is swapped for the "with"
    scheme while the simulation samples "without" (the negative control: with
    these cases and seeds the wrong curve lies 7.8-13 standard errors away at its
    farthest step, against the 5.2 allowed, so the control has power, not
    luck)."""
    from simlab import stability
    from simlab.curvature import range_basis

    c = _HELPER_CASES[case]
    rng = np.random.default_rng(3)
    G = rng.standard_normal((6 + c["n_f"], 3))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    R, F = G[:6], (G[6:] if c["n_f"] else None)
    kw = dict(c["kw"], forget=F) if F is not None else dict(c["kw"])
    run = dict(steps=c["steps"], trajectories=40000, seed=5)
    mc, exact, se = testing.assert_simulation_matches_operator(R, c["eta"], 2, **run,
                                                               **kw)
    alpha = kw.get("alpha", 0.0)
    U = range_basis(F if alpha >= 1 else G)
    Tmat = reference.operator_matrix(R, c["eta"], 2, "without", F,
                                     kw.get("forget_batch"), alpha)
    npt.assert_allclose(exact, reference.growth_curve(Tmat, U @ U.T, c["steps"]),
                        rtol=1e-10)
    assert mc.shape == se.shape == (c["steps"] + 1,)
    assert mc[0] == 1.0 and np.all(se[1:] > 0)

    def with_scheme(*a, **k):
        return stability.mean_square_growth(*a, **dict(k, scheme="with"))

    monkeypatch.setattr(testing, "mean_square_growth", with_scheme)
    with pytest.raises(AssertionError, match="standard errors"):
        testing.assert_simulation_matches_operator(R, c["eta"], 2, **run, **kw)


def test_simulation_matches_operator_without_noise_and_for_factors():
    """Deterministic dynamics (B = n: every trajectory contracts alike, the
    standard error is at rounding level) passes through ``rtol``; rank-k
    Factors go through the helper like the other representations."""
    from simlab.curvature import coherence_dial

    for G, B in ((coherence_dial(5, 1), 5), (coherence_dial(4, 4), 2)):
        mc, exact, se = testing.assert_simulation_matches_operator(
            G, 0.3, B, steps=3, trajectories=500, seed=0)
        npt.assert_allclose(mc, exact, rtol=1e-12)
    F = Factors(np.random.default_rng(4).standard_normal((5, 2, 3)))
    testing.assert_simulation_matches_operator(F, 0.05, 2, steps=3,
                                               trajectories=20000, seed=1)
    with pytest.raises(ValueError, match="rtol"):
        testing.assert_agrees([1.0], [1.0], [0.0], rtol=-1.0)
    with pytest.raises(ValueError, match="se must"):
        testing.assert_agrees([1.0], [1.0], [0.0])          # se 0 needs rtol
    with pytest.raises(AssertionError, match="plus rtol"):
        testing.assert_agrees([1.0 + 1e-9], [1.0], [0.0], rtol=1e-10)


def test_bad_arguments_to_strategies_and_helpers_are_refused():
    for rtol in (np.nan, np.inf, -1e-9):
        with pytest.raises(ValueError, match="rtol"):
            testing.assert_bound_holds(5.0, 1.0, rtol=rtol)
    bad_families = [dict(min_n=0), dict(min_p=0), dict(min_n=5, max_n=2),
                    dict(max_rank=0), dict(scale_spread=400.0),
                    dict(scale_spread=np.nan)]
    bad_configs = [dict(scheme="foo"), dict(alphas=(2.0,)), dict(alphas=())]
    strategies = ([testing.families(**kw) for kw in bad_families]
                  + [testing.configurations(4, 2, **kw) for kw in bad_configs])
    for strategy in strategies:
        @given(strategy)
        @settings(max_examples=1, database=None)
        def draw(_):
            pass

        with pytest.raises(ValueError):
            draw()
