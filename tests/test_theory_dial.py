"""Closed-form Hessian-test thresholds (THEORY 7) vs sympy and the exact operator."""

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlab.curvature import coherence_dial
from simlab.stability import critical_lr, spectral_radius
from simlab.theory import dial_critical_lr, dial_spectral_radius

import dial_thresholds
from strategies import SCHEMES

ALPHAS = st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.49, 0.5, 0.7])


@st.composite
def dial_cases(draw, n_max=14):
    n = draw(st.integers(2, n_max))
    s = draw(st.integers(1, n))
    B = draw(st.integers(1, n))
    Bf = draw(st.integers(1, n))
    return n, s, B, Bf


@given(dial_cases(), SCHEMES, ALPHAS, st.floats(0.01, 2.0))
def test_closed_form_radius_equals_operator(case, scheme, alpha, eta):
    n, s, B, Bf = case
    H = coherence_dial(n, s)
    kw = dict(scheme=scheme, alpha=alpha, forget_batch=Bf)
    ref = spectral_radius(H, eta, B, forget=H if alpha else None,
                          **(kw if alpha else dict(scheme=scheme)))
    npt.assert_allclose(dial_spectral_radius(n, s, eta, B, **kw), ref, rtol=1e-9)


@given(dial_cases(), SCHEMES, ALPHAS)
def test_closed_form_threshold_equals_operator_and_sympy(case, scheme, alpha):
    n, s, B, Bf = case
    H = coherence_dial(n, s)
    comp = dial_critical_lr(n, s, B, scheme=scheme, alpha=alpha, forget_batch=Bf)
    if alpha:
        ref = critical_lr(H, B, scheme=scheme, forget=H, forget_batch=Bf, alpha=alpha) \
            if alpha != 0.5 else 0.0
    else:
        ref = critical_lr(H, B, scheme=scheme)
    npt.assert_allclose(comp, ref, rtol=1e-9)
    npt.assert_allclose(
        dial_thresholds.numeric_critical_lr(n, s, B, scheme, alpha, Bf), comp,
        rtol=1e-12)


def test_alpha_half_is_zero_in_operator():
    """alpha = 1/2 with forget = retain: M = 0, noise > 0 unless full batch."""
    H = coherence_dial(8, 3)
    assert critical_lr(H, 2, forget=H, forget_batch=2, alpha=0.5) == 0.0


def test_gd_limit_symbolic():
    e0, e1 = dial_thresholds.gd_check()
    alpha, s = dial_thresholds.alpha, dial_thresholds.s
    assert (e0 - 1 / (1 - 2 * alpha)).simplify() == 0
    assert (e1 - s / (1 - 2 * alpha)).simplify() == 0


def test_full_batch_threshold_is_one():
    for s in (1, 5, 20):
        assert dial_critical_lr(20, s, 20, scheme="without") == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="s"):
        dial_critical_lr(10, 11, 2)
    with pytest.raises(ValueError, match="batch"):
        dial_critical_lr(10, 2, 0)
    with pytest.raises(ValueError, match="alpha"):
        dial_spectral_radius(10, 2, 0.5, 2, alpha=-0.1)
    assert np.isfinite(dial_critical_lr(10, 2, 2))


@pytest.mark.parametrize("s", [1, 4, 8, 18, 33, 60, 100])
def test_matrix_free_radius_equals_closed_form_at_n100(s):
    """The default (matrix-free Davidson) spectral_radius on the n = 100 dial
    family against the closed form, SGD and unlearning, B from 1 to 49. A
    regression test: with start vectors that turned out linearly dependent the
    iteration once returned rho = 0 without a Ritz step (e.g. s = 8, B = 1:
    closed form 11.5). Tolerance 1e-10 relative (observed 7e-15)."""
    H = coherence_dial(100, s)
    for B in (1, 2, 10, 40, 49):
        for a in (0.0, 0.1):
            kw = dict(forget=H, forget_batch=B, alpha=a) if a else {}
            got = spectral_radius(H, 0.5, B, **kw)
            ref = dial_spectral_radius(100, s, 0.5, B, alpha=a)
            assert got == pytest.approx(ref, rel=1e-10), (s, B, a, got, ref)


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.7])
def test_vectorized_table_equals_scalar_forms(scheme, alpha):
    """``dial_table`` (the Hessian-test heatmap's closed forms over all
    batch sizes at once) equals the scalar functions bit for bit, n = 1
    (scalar coefficients) included."""
    from simlab.theory.dial import dial_table

    for n in (1, 7, 100):
        for s in sorted({1, max(1, n // 3), n}):
            batches = list(range(1, n + 1))
            rho, eta_c = dial_table(n, s, 0.5, batches, scheme=scheme, alpha=alpha)
            npt.assert_array_equal(rho, [dial_spectral_radius(
                n, s, 0.5, B, scheme=scheme, alpha=alpha) for B in batches])
            npt.assert_array_equal(eta_c, [dial_critical_lr(
                n, s, B, scheme=scheme, alpha=alpha) for B in batches])
    with pytest.raises(ValueError, match="batch"):
        dial_table(5, 2, 0.5, [1, 6])
