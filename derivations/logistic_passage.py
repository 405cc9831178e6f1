"""Escape under logistic-loss unlearning is a passage of the forget margins.

Derivation (THEORY 10.0, logistic paragraph)
--------------------------------------------
One forget sample with margin ``m = y f`` and gradient ``g = grad_W f`` (``f``
linear in ``W`` on a fixed ReLU pattern, so ``g`` is constant while the pattern
holds), ascended with weight ``a`` at learning rate ``eta``. Logistic loss
``l(m) = log(1 + e^{-m})``: ``dl/df = -y sigma(-m)``, ``l'' = sigma(m) sigma(-m)``.

1. Drift of the margin (continuous-time limit of the ascent steps
   ``W <- W + eta a dl/df g``): ``dm/dt = -eta a ||g||^2 sigma(-m)``.
2. Tangent along ``g``: ``delta <- (I + eta a l'' g g^T) delta``, so the
   component along ``g`` grows at ``d log delta_g / dt = eta a ||g||^2 l''(m)``.
3. Dividing, the rate and the time drop out:
   ``d log delta_g / dm = -l''(m) / sigma(-m) = -sigma(m)``, and a passage from
   ``m0`` to ``m1 < m0`` amplifies ``delta_g`` by

       A(m0, m1) = (1 + e^{m0}) / (1 + e^{m1})  ->  1 + e^{m0}   (m1 -> -inf),

   whatever ``eta``, ``a`` and ``||g||`` (:func:`amplification`).
4. The passage takes ``t(m0 -> m1) = (e^{m0} - e^{m1} + m0 - m1) / (eta a ||g||^2)``
   (:func:`passage_time`): exponentially long in the trained margin.

Consequences for cnn-unlearning's logistic panel: escape (``||delta||`` grows
``sqrt(K)``-fold) needs a trained forget margin ``m0 >~ log(K)/2`` (minus the
share of ``delta_0`` outside the forget directions) *and* a passage completed
within the horizon (``eta alpha`` large enough): the drift triggers the
instability; at ``w*`` itself ``l''_f ~ e^{-m0}`` is negligible. Steps with
``eta a l'' ||g||^2 > 2`` overshoot and add growth (the large-``eta`` cells).
Tested against the discrete tangent of ``simlab.predict`` (linear model) in
``tests/test_predict_logistic.py``.
"""

import sympy as sp

m, m0, m1 = sp.symbols("m m0 m1", real=True)
c = sp.symbols("c", positive=True)                 # c = eta a ||g||^2


def sigma(z):
    return 1 / (1 + sp.exp(-z))


def log_growth_per_margin():
    """``d log delta_g / dm`` from the two rates (steps 1-3), simplified."""
    dm_dt = -c * sigma(-m)
    dlog_dt = c * sigma(m) * sigma(-m)
    return sp.simplify(dlog_dt / dm_dt)


def amplification():
    """``A(m0, m1)`` of step 3 (as ``log A``), by integrating ``-sigma(m)``."""
    return sp.simplify(sp.integrate(-sigma(m), (m, m0, m1)))


def passage_time():
    """``t(m0 -> m1)`` of step 4, by integrating ``dt = dm / (dm/dt)``."""
    return sp.simplify(sp.integrate(1 / (-c * sigma(-m)), (m, m0, m1)))


if __name__ == "__main__":
    rate = log_growth_per_margin()
    print("d log delta / dm =", rate, "  (= -sigma(m):",
          sp.simplify(rate + sigma(m)) == 0, ")")
    logA = amplification()
    print("log A(m0, m1) =", logA)
    print("  closed form log((1+e^m0)/(1+e^m1)):",
          sp.simplify(sp.expand_log(logA - sp.log((1 + sp.exp(m0))
                                                  / (1 + sp.exp(m1))),
                                    force=True)) == 0)
    print("t(m0 -> m1) =", passage_time())
