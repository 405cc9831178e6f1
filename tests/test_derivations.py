"""Symbolic derivations (derivations/*.py) against simlab's numeric code."""

import itertools

import numpy as np
import pytest
import sympy as sp

from simlab.stability import scheme_coefficients

import second_moment


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_scheme_coefficients_match_derivation(scheme):
    a, b = second_moment.coefficients(scheme)
    f = sp.lambdify((second_moment.n, second_moment.B), (a, b), "math")
    for n, B in itertools.product([2, 3, 7, 50], [1, 2, 5, 50]):
        if B > n:
            continue
        ref = f(n, B)
        comp = scheme_coefficients(n, B, scheme)
        np.testing.assert_allclose(comp, ref, rtol=1e-14, atol=1e-15)


def test_full_batch_reduces_to_gd():
    for scheme in ("bernoulli", "without"):
        a, b = second_moment.coefficients(scheme)
        assert sp.simplify(a.subs(second_moment.B, second_moment.n)) == 0
        assert sp.simplify(sp.sympify(b).subs(second_moment.B, second_moment.n)) == 0
    a, b = second_moment.coefficients("with")          # keeps its 1/B noise
    assert sp.simplify(a.subs(second_moment.B, second_moment.n)) != 0


def test_unlearning_operator_identity():
    assert second_moment.unlearning_identity() == 0
