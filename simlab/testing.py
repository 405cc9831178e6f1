"""Hypothesis strategies and assertion helpers for property-testing your theorems.

The strategies follow the convention of ``hypothesis.extra.numpy`` and
``xarray.testing.strategies``: functions that return a strategy, sizes as
``min``/``max`` keywords, every random array drawn from a seed that hypothesis
itself draws (so a failing example shrinks and replays). simlab's own property
tests use them.

Strategies

- :func:`families`: per-sample curvature families, rank-one ``(n, p)``,
  dense ``(n, p, p)`` of chosen rank, or rank-k :class:`~simlab.curvature.Factors`,
  with controlled alignment (``alignment`` -> 1 makes the samples share one
  direction: coherence rises) and a controlled spread of per-sample scales;
- :func:`dial_families`: the coherence-dial family ``(family, n, s)`` of THEORY
  section 7, whose coherence is exactly ``s``;
- :func:`configurations`: ``(scheme, batch, forget_batch, alpha)`` valid together
  for given set sizes;
- :func:`unlearning_problems`: retain and forget families with the forget set
  inside the retain range (so small ``alpha`` can be stable), with a valid
  configuration;
- :func:`signal_noise_data`: signal-plus-noise data sets (THEORY section 8).

Assertions

- :func:`assert_bound_holds`: a bound is never violated (with the rounding
  tolerance stated);
- :func:`assert_agrees`: an estimate with a standard error agrees with an exact
  value at a stated false-failure rate;
- :func:`assert_simulation_matches_operator`: the Monte-Carlo mean of
  ``||delta_t||^2`` of :func:`simlab.simulate.linearized` agrees with the exact
  second-moment operator at a stated false-failure rate.

Needs hypothesis (``pip install "simlab[testing]"``) for the strategies; the
assertions do not.
"""

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised without hypothesis
    raise ImportError(
        "simlab.testing needs hypothesis for its strategies: install it with "
        "pip install 'simlab[testing]' (or pip install hypothesis)") from exc

from . import curvature
from ._validation import check_int
from .data import signal_noise
from .stability import mean_square_growth
from .stability.operator import build_problem

__all__ = [
    "SCHEMES",
    "UnlearningProblem",
    "assert_agrees",
    "assert_bound_holds",
    "assert_simulation_matches_operator",
    "configurations",
    "dial_families",
    "families",
    "schemes",
    "signal_noise_data",
    "unlearning_problems",
]

#: The three sampling schemes (THEORY section 2).
SCHEMES = ("bernoulli", "with", "without")

_KINDS = ("rank_one", "dense", "rank_k")
_ALPHAS = (0.0, 0.02, 0.1, 0.3, 0.5, 0.9, 1.0)


#: Largest ``scale_spread`` of :func:`families`: per-sample scales up to
#: ``e^50`` stay far inside the package's curvature range.
_MAX_SPREAD = 50.0


def schemes():
    """Strategy over the sampling schemes ``"bernoulli"``, ``"with"``, ``"without"``."""
    return st.sampled_from(SCHEMES)


def _seeds():
    return st.integers(0, 2**32 - 1)


@st.composite
def families(draw, *, min_n=1, max_n=6, min_p=1, max_p=4, kind=None, max_rank=None,
             alignment=None, scale_spread=1.0):
    """Strategy over per-sample curvature families.

    Parameters
    ----------
    min_n, max_n, min_p, max_p : int
        Bounds on the number of samples ``n`` and the dimension ``p``.
    kind : {"rank_one", "dense", "rank_k"} or None
        ``"rank_one"``: factors ``(n, p)``; ``"dense"``: PSD ``(n, p, p)`` of rank
        drawn in ``[1, min(p, max_rank)]``; ``"rank_k"``:
        :class:`~simlab.curvature.Factors` ``(n, k, p)`` with ``k`` drawn in
        ``[1, max_rank or 3]``. ``None`` draws the kind.
    max_rank : int, optional
        Largest per-sample rank for ``"dense"`` and ``"rank_k"``.
    alignment : float or strategy of floats in [0, 1], optional
        Each factor is ``sqrt(a) u + sqrt(1 - a) z_i`` with ``u`` shared and
        ``z_i`` the sample's own standard Gaussian: ``a = 0`` gives independent
        samples (low coherence), ``a -> 1`` samples aligned along ``u`` (high
        coherence). Default: drawn in ``[0, 1)``.
    scale_spread : float
        Per-sample scales are ``exp(U(-spread, spread))``.

    Returns
    -------
    strategy
        Drawing the family (an array, or ``Factors`` for ``"rank_k"``).

    Examples
    --------
    >>> from hypothesis import given
    >>> @given(families(kind="rank_one", max_n=4))
    ... def test_sharpness_positive(G):
    ...     assert curvature.sharpness(G) > 0
    >>> test_sharpness_positive()
    """
    check_int(max_n, "max_n", low=check_int(min_n, "min_n", low=1))
    check_int(max_p, "max_p", low=check_int(min_p, "min_p", low=1))
    if max_rank is not None:
        check_int(max_rank, "max_rank", low=1)
    if not 0.0 <= scale_spread <= _MAX_SPREAD:
        raise ValueError(f"scale_spread must lie in [0, {_MAX_SPREAD}], got "
                         f"{scale_spread!r}")
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(min_p, max_p))
    kind = draw(st.sampled_from(_KINDS)) if kind is None else kind
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS} or None, got {kind!r}")
    if alignment is None:
        alignment = st.floats(0.0, 0.99)
    a = draw(alignment) if isinstance(alignment, st.SearchStrategy) else alignment
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alignment must lie in [0, 1], got {a}")
    k = 1
    if kind == "rank_k":
        k = draw(st.integers(1, max_rank or 3))
    elif kind == "dense":
        k = draw(st.integers(1, min(p, max_rank or p)))
    rng = np.random.default_rng(draw(_seeds()))
    scales = np.exp(rng.uniform(-scale_spread, scale_spread, n))
    shared = rng.standard_normal((1, k, p))
    own = rng.standard_normal((n, k, p))
    G = (np.sqrt(a) * shared + np.sqrt(1.0 - a) * own) * np.sqrt(scales)[:, None, None]
    if kind == "rank_one":
        return G[:, 0, :]
    if kind == "rank_k":
        return curvature.Factors(G)
    return np.einsum("ikp,ikq->ipq", G, G) / k


@st.composite
def dial_families(draw, *, min_n=1, max_n=12, rank_one=True):
    """Strategy over the coherence-dial family: ``(family, n, s)``, ``1 <= s <= n``.

    Its coherence is exactly ``s`` (THEORY section 7) and the dial theory
    (:mod:`simlab.theory.dial`) gives its ``rho`` and critical learning rate in
    closed form.
    """
    n = draw(st.integers(min_n, max_n))
    s = draw(st.integers(1, n))
    return curvature.coherence_dial(n, s, rank_one=rank_one), n, s


@st.composite
def configurations(draw, n_retain, n_forget=None, *, scheme=None, alphas=_ALPHAS):
    """Strategy over ``(scheme, batch, forget_batch, alpha)`` valid together.

    ``1 <= batch <= n_retain``; without a forget set ``forget_batch`` is
    ``None`` and ``alpha = 0`` (SGD); with one, ``1 <= forget_batch <=
    n_forget`` and ``alpha`` from ``alphas``.
    """
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES} or None, got {scheme!r}")
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alphas must be mixing weights in [0, 1], got {alphas!r}")
    check_int(n_retain, "n_retain", low=1)
    if n_forget is not None:
        check_int(n_forget, "n_forget", low=1)
    sch = draw(schemes()) if scheme is None else scheme
    batch = draw(st.integers(1, n_retain))
    if n_forget is None:
        return sch, batch, None, 0.0
    return sch, batch, draw(st.integers(1, n_forget)), draw(st.sampled_from(alphas))


@dataclass(frozen=True)
class UnlearningProblem:
    """A drawn unlearning problem (see :func:`unlearning_problems`)."""

    retain: object
    forget: object
    batch: int
    forget_batch: int
    alpha: float
    scheme: str

    @property
    def kwargs(self):
        """Keyword arguments for the operator functions (after ``retain``)."""
        return {"forget": self.forget, "forget_batch": self.forget_batch,
                "alpha": self.alpha, "scheme": self.scheme}


@st.composite
def unlearning_problems(draw, *, max_n=5, max_p=3, max_forget=3, kind=None,
                        scheme=None):
    """Strategy over :class:`UnlearningProblem` with the forget set inside the
    range of the retain set (so that small ``alpha`` can be stable).

    Rank-one forget factors are random combinations of retain factors; dense
    forget Hessians are non-negative combinations of retain Hessians.
    """
    kind = draw(st.sampled_from(("rank_one", "dense"))) if kind is None else kind
    if kind not in ("rank_one", "dense"):
        raise ValueError(f"kind must be 'rank_one', 'dense' or None, got {kind!r}")
    retain = draw(families(min_n=2, max_n=max_n, max_p=max_p, kind=kind,
                           alignment=0.0))
    n_r = retain.shape[0]
    n_f = draw(st.integers(1, max_forget))
    rng = np.random.default_rng(draw(_seeds()))
    if kind == "rank_one":
        forget = rng.standard_normal((n_f, n_r)) @ retain
    else:
        W = rng.standard_normal((n_f, n_r)) ** 2
        forget = np.einsum("fi,ijk->fjk", W, retain) / n_r
    sch, batch, fb, alpha = draw(configurations(n_r, n_f, scheme=scheme))
    return UnlearningProblem(retain, forget, batch, fb, alpha, sch)


@st.composite
def signal_noise_data(draw, *, min_n=2, max_n=20, min_d=4, max_d=60, snr=None,
                      p_flip=None):
    """Strategy over signal-plus-noise data sets (:func:`simlab.data.signal_noise`).

    ``snr`` and ``p_flip`` are floats or strategies (default: ``snr`` in
    ``[0, 1]``, ``p_flip`` in ``[0, 0.4]``).
    """
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    s = draw(st.floats(0.0, 1.0) if snr is None else
             (snr if isinstance(snr, st.SearchStrategy) else st.just(snr)))
    pf = draw(st.floats(0.0, 0.4) if p_flip is None else
              (p_flip if isinstance(p_flip, st.SearchStrategy) else st.just(p_flip)))
    return signal_noise(n, d, snr=s, p_flip=pf, seed=draw(_seeds()))


# ----------------------------------------------------------------- assertions

def assert_bound_holds(exact, bound, *, side="upper", rtol=1e-9, name="bound"):
    """Assert that a bound is not violated, up to rounding.

    ``side="upper"``: ``exact <= bound (1 + rtol)`` (e.g. the coherence bound
    on the critical learning rate, above which SGD provably diverges);
    ``side="lower"``: ``exact >= bound (1 - rtol)`` (a guaranteed-stable
    learning rate). ``rtol`` covers floating-point rounding of the two
    computations only; the default ``1e-9`` is far above the ``~1e-13``
    relative error of the package's eigenvalue computations and far below any
    real violation.
    """
    exact, bound, rtol = float(exact), float(bound), float(rtol)
    if not (np.isfinite(rtol) and rtol >= 0.0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol}")
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' or 'lower', got {side!r}")
    if np.isnan(exact) or np.isnan(bound):
        raise AssertionError(f"{name}: NaN values exact={exact}, bound={bound}")
    slack = rtol * abs(bound) if np.isfinite(bound) else 0.0
    bad = exact > bound + slack if side == "upper" else exact < bound - slack
    if bad:
        word = "above" if side == "upper" else "below"
        raise AssertionError(f"{name} violated: exact {exact!r} lies {word} the "
                             f"{side} bound {bound!r} (ratio "
                             f"{exact / bound if bound else np.inf:.12g}, "
                             f"rtol {rtol:g})")


def _z(false_failure_rate, tests):
    if not 0.0 < false_failure_rate < 1.0:
        raise ValueError(f"false_failure_rate must lie in (0, 1), got "
                         f"{false_failure_rate}")
    return NormalDist().inv_cdf(1.0 - false_failure_rate / (2 * tests))


def assert_agrees(estimate, exact, se, *, false_failure_rate=1e-6, rtol=0.0,
                  name="estimate"):
    """Assert that estimates agree with exact values within a stated
    false-failure rate.

    Two-sided z-test per entry, Bonferroni over the entries: fails when
    ``|estimate - exact| > z se + rtol |exact|`` for any entry with
    ``z = Phi^{-1}(1 - rate / (2 m))`` (``m`` entries). The rate holds when the
    estimates are (asymptotically) normal with standard errors ``se`` (CLT:
    enough independent samples of finite variance).

    ``rtol`` (default 0) allows for floating-point rounding where the
    estimate has no sampling noise (a deterministic case: every sample
    equal, ``se`` at rounding level or 0); ``se = 0`` is accepted only with
    ``rtol > 0``.
    """
    est, ex, se = (np.atleast_1d(np.asarray(v, dtype=float)) for v in
                   (estimate, exact, se))
    est, ex, se = np.broadcast_arrays(est, ex, se)
    rtol = float(rtol)
    if not (np.isfinite(rtol) and rtol >= 0.0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol}")
    if not np.all(np.isfinite(se)) or np.any(se < 0) or (rtol == 0 and np.any(se == 0)):
        raise ValueError("se must hold finite standard errors > 0 (a zero standard "
                         "error makes the test exact equality: compare exactly, "
                         "or give rtol > 0)")
    if not np.all(np.isfinite(est)):
        raise AssertionError(f"{name}: non-finite estimates {est[~np.isfinite(est)]}")
    z = _z(false_failure_rate, est.size)
    gap = np.abs(est - ex) - rtol * np.abs(ex)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(est - ex) / se
    bad = ~(gap <= z * se)
    if np.any(bad):
        i = int(np.flatnonzero(bad.ravel())[0])
        raise AssertionError(
            f"{name} disagrees with the exact value at entry {i}: "
            f"{est.ravel()[i]!r} vs {ex.ravel()[i]!r}, {dev.ravel()[i]:.2f} standard "
            f"errors (allowed {z:.2f} for false-failure rate {false_failure_rate:g} "
            f"over {est.size} entries, plus rtol {rtol:g})")


def assert_simulation_matches_operator(retain, eta, batch, *, steps, trajectories,
                                       seed, false_failure_rate=1e-6, rtol=1e-10,
                                       **kwargs):
    """Assert that Monte Carlo reproduces the exact second-moment operator.

    Runs :func:`simlab.simulate.linearized` (``delta_0`` uniform on the unit
    sphere of ``U = range`` of the active Hessians, its default) and compares the
    sample mean of ``||delta_t||^2`` at every ``t <= steps`` with the exact
    ``E||delta_t||^2 = tr T^t(P_U / r)`` from
    :func:`simlab.stability.mean_square_growth`, by :func:`assert_agrees` at
    ``false_failure_rate`` (Bonferroni over the ``steps`` compared steps).

    Keep ``steps`` short and ``trajectories`` large (thousands) where the
    dynamics is noisy: ``||delta_t||^2`` is heavy-tailed and the CLT behind the
    stated rate needs its variance to be well estimated.

    ``retain`` and the forget set of ``kwargs`` take every representation the
    simulator takes (rank-one, dense, :class:`~simlab.curvature.Factors`).
    ``rtol`` (passed to :func:`assert_agrees`) covers rounding where the
    dynamics has no noise (full batches, or every sample alike): there the
    standard error is at rounding level and the two curves differ by
    rounding, ``~ steps * 1e-16`` relative; ``1e-10`` leaves a wide margin and
    is far below any disagreement a Monte-Carlo run could resolve (its
    relative standard error is rarely below ``1e-4``).

    Returns
    -------
    mc, exact, se : ndarray, shape (steps + 1,)
        The Monte-Carlo and exact curves, and the standard error of ``mc``.
    """
    from .simulate import linearized

    res = linearized(retain, eta, batch, steps=steps, trajectories=trajectories,
                     seed=seed, record_every=1, **kwargs)
    # U = range of the active Hessians, the simulator's default law
    U = build_problem(retain, batch, **kwargs).basis
    exact = mean_square_growth(retain, eta, batch, steps=steps,
                               perturbation_cov=U @ U.T, **kwargs)
    sq = np.exp(res.log_sq_norm)                       # ||delta_0|| = 1
    mc = sq.mean(axis=0)
    se = sq.std(axis=0, ddof=1) / np.sqrt(trajectories)
    assert_agrees(mc[1:], exact[1:], se[1:], false_failure_rate=false_failure_rate,
                  rtol=rtol, name="Monte-Carlo E||delta_t||^2")
    return mc, exact, se
