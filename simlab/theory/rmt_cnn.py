"""Random-matrix predictions of the coherence of the trained two-layer ReLU CNN.

THEORY.md sections 5, 8, 9.4; the CNN analogue of :mod:`simlab.theory.rmt`;
derived in ``derivations/rmt_cnn.py``.

Exact structure (THEORY 8). At weights ``W`` the logistic-loss Hessian of
sample ``i`` is ``h_i h_i^T`` with ``h_i = sqrt(l''_i) grad_W f_i`` and
``grad_{w_{j,r}} f_i = (j/m) [a^s_{jr,i} y_i mu + a^xi_{jr,i} xi_i]``, where
``a^s``, ``a^xi`` are the ReLU activations of filter ``(j, r)`` on the signal
and noise patches. Because ``xi_i`` is orthogonal to ``mu``,

``K_ik = sqrt(l''_i l''_k) / m^2 [N^s_ik y_i y_k ||mu||^2 + N^xi_ik <xi_i, xi_k>]``

exactly, with co-activation counts ``N^s_ik = sum_jr a^s_jr,i a^s_jr,k`` and
``N^xi_ik`` likewise. A filter is active on the signal patch of exactly one
class (``a^s_{jr,i} = 1[y_i <w_jr, mu> > 0]``), so ``N^s_ik = N_{y_i}
1[y_i = y_k]``: **cross-class pairs carry no signal overlap**, which is the
difference from the linear model (THEORY 11), where ``|K_ik|`` does not depend
on the labels.

Trained-network statistics (measured by :func:`simlab.predict.cnn_summary`;
GD, ``eta = 0.1``, 200 steps, ``sigma_0 = 0.01``, ``sigma_p = 1``, ``n in {20, 40}``,
``d in {200, 1000}``, ``m in {5, 10}``, ``SNR in [0.01, 1]``): in every run
each class's own filters end aligned with ``j mu`` (``N_{+1} = N_{-1} = m``,
in both regimes, because even a weak signal gradient beats
``<w^(0), mu> ~ sigma_0 ||mu||``); a sample's noise patch is seen mainly by the
own-class filters that were active on it at initialisation (their ``rho``
grows), and the wrong-class filters switch off (``rho < 0``). Hence the
*predictive* assumptions: ``N^s = m`` within a class, ``A_i = N^xi_ii ~
Binomial(m, 1/2)``, same-class noise co-activation ``m/4``, cross-class ``0``,
and equal ``l''`` (margins equal, so ``l''`` cancels from ``sigma``).

Two regimes follow (units ``sigma_p = 1``, ``theta = SNR^2 d``, ``p = d - 1``):

- **signal learning** (``m theta >> co sqrt p``): two class blocks of constant
  off-diagonal ``m theta`` on a diagonal ``m theta + A p``;
  ``sigma -> (n theta + p) / (2 theta + p) ~ (1 + n SNR^2) / (1 + 2 SNR^2)``
  for ``A = m/2`` (tends to ``n/2``, not ``n``: the classes never align);
- **noise memorization**: off-diagonals are folded normals of scale
  ``co sqrt p``, ``sigma ~ 1 + (n/2 - 1) sqrt(2/pi) (co / A) / sqrt p``.

The function computes the expected ``S`` from these statistics (folded-normal
means, :func:`simlab.theory.rmt.folded_normal_moments`), its top eigenvalue
plus the second-order (Wigner) correction, and divides by the expected
normaliser ``max_i S_ii``.

Measured errors are stated in :func:`cnn_coherence`; ``tests/test_rmt_cnn.py``
enforces them.
"""

import functools
from dataclasses import dataclass

import numpy as np
import scipy.stats

from .._validation import check_int, check_positive
from .rmt import folded_normal_moments

__all__ = [
    "CNNCoherenceStats",
    "predictive_stats",
    "cnn_coherence",
    "cnn_coherence_limits",
    "ERRORS",
]

#: Worst measured ``|pred / sim - 1|`` on the grid of :func:`cnn_coherence`
#: (``derivations/rmt_cnn.py --errors``), by form and ``d``.
ERRORS = {("semi", 200): 0.066, ("semi", 1000): 0.030,
          ("pred", 200): 0.304, ("pred", 1000): 0.290}


@dataclass(frozen=True)
class CNNCoherenceStats:
    """Summary statistics of a (trained) CNN that fix its predicted coherence.

    Attributes
    ----------
    y : ndarray (n,)
        Labels.
    lpp : ndarray (n,)
        ``l''(y_i f_i)`` (logistic); all equal in the predictive form.
    A : ndarray (n,)
        Noise activation counts ``A_i = #{(j, r): <w_jr, xi_i> > 0}``.
    xi_sq : ndarray (n,)
        ``||xi_i||^2 / sigma_p^2``; ``nan`` entries mean "use the chi^2 law".
    n_signal : tuple of float
        ``(N_{+1}, N_{-1})``: filters active on ``+mu`` / on ``-mu``.
    co_same, co_cross : float
        Mean noise co-activation count ``N^xi_ik`` over same-class and
        cross-class pairs.
    """

    y: np.ndarray
    lpp: np.ndarray
    A: np.ndarray
    xi_sq: np.ndarray
    n_signal: tuple
    co_same: float
    co_cross: float


@functools.lru_cache(maxsize=256)
def _binom_quantiles(N, m):
    """``N`` classical locations of ``Binomial(m, 1/2)`` (mid-quantiles)."""
    u = (np.arange(N) + 0.5) / N
    return scipy.stats.binom.ppf(u, m, 0.5).astype(float)


def predictive_stats(n, d, m):
    """The statistics assumed by the fully predictive form (module docstring).

    Balanced classes, ``N^s = m``, ``A_i`` at the mid-quantiles of
    ``Binomial(m, 1/2)`` within each class, ``co_same = m/4``,
    ``co_cross = 0``, equal ``l''``, ``xi_sq = nan`` (chi^2 law).

    Examples
    --------
    >>> st = predictive_stats(4, 100, 10)
    >>> st.y.tolist(), st.co_same
    ([1.0, 1.0, -1.0, -1.0], 2.5)
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    n_p = (n + 1) // 2
    y = np.concatenate([np.ones(n_p), -np.ones(n - n_p)])
    A = np.concatenate([_binom_quantiles(n_p, m), _binom_quantiles(n - n_p, m)])
    return CNNCoherenceStats(y=y, lpp=np.ones(n), A=A, xi_sq=np.full(n, np.nan),
                             n_signal=(float(m), float(m)), co_same=m / 4.0,
                             co_cross=0.0)


def _mean_var(stats, p, theta):
    """Expected ``S`` (units ``sigma_p^2``, ``1/m^2`` dropped) and the entry
    variances ``V`` (diagonal: chi^2 fluctuation when ``xi_sq`` is unknown)."""
    y, A = stats.y, np.asarray(stats.A, dtype=float)
    c = np.sqrt(np.asarray(stats.lpp, dtype=float))
    Ns = np.where(y > 0, stats.n_signal[0], stats.n_signal[1])
    nu = np.where(np.isfinite(stats.xi_sq), stats.xi_sq, float(p))
    unknown = ~np.isfinite(stats.xi_sq)
    same = y[:, None] == y[None, :]
    M = np.zeros((y.size, y.size))
    V = np.zeros_like(M)
    for cls, N_c in ((1.0, stats.n_signal[0]), (-1.0, stats.n_signal[1])):
        blk = np.outer(y == cls, y == cls)
        co = stats.co_same
        if co > 0:
            mu_, var_ = folded_normal_moments(p, N_c * theta / co)
            M[blk], V[blk] = co * mu_, co * co * var_
        else:
            M[blk] = N_c * theta
    if stats.co_cross > 0:
        mu_, var_ = folded_normal_moments(p, 0.0)
        M[~same] = stats.co_cross * mu_
        V[~same] = stats.co_cross**2 * var_
    diag = Ns * theta + A * nu
    M[np.diag_indices_from(M)] = diag
    V[np.diag_indices_from(V)] = np.where(unknown, 2.0 * p * A**2, 0.0)
    cc = np.outer(c, c)
    return cc * M, cc * cc * V


def _lam_top(M, V):
    """``E lambda_max(M + W)``, ``W`` symmetric with entry variances ``V``:
    ``lambda_1(M) + E ||W v||^2 / (lambda_1 - lambda_bar)`` with ``v`` the
    top eigenvector and ``lambda_bar`` the mean of the other eigenvalues."""
    w, U = np.linalg.eigh(M)
    v = U[:, -1]
    n = M.shape[0]
    if n == 1:
        return float(w[-1])
    lam_bar = (np.trace(M) - w[-1]) / (n - 1)
    gap = w[-1] - lam_bar
    corr = float(np.sum(V @ (v * v))) / gap if gap > 0 else 0.0
    return float(w[-1] + corr)


def _expected_max_diag(stats, p, theta):
    """``E max_i S_ii``; exact for known ``xi_sq``, else by quadrature of
    ``1 - prod_i F_i(x)`` with ``S_ii = lpp_i (N theta + A_i chi^2_p)``."""
    y, A = stats.y, np.asarray(stats.A, dtype=float)
    lpp = np.asarray(stats.lpp, dtype=float)
    Ns = np.where(y > 0, stats.n_signal[0], stats.n_signal[1])
    known = np.isfinite(stats.xi_sq)
    base = lpp * Ns * theta
    if np.all(known):
        return float(np.max(base + lpp * A * stats.xi_sq))
    scale = lpp * A
    hi = float(np.max(base + scale * (p + 12.0 * np.sqrt(2.0 * p) + 40.0)))
    lo = float(np.min(base + scale * max(p - 12.0 * np.sqrt(2.0 * p), 0.0)))
    lo = max(lo, 0.0)
    x = np.linspace(lo, hi, 4001)
    logF = np.zeros_like(x)
    for b, s, kn, xs in zip(base, scale, known, stats.xi_sq, strict=True):
        if kn:
            logF += np.where(x >= b + s * xs, 0.0, -np.inf)
        elif s > 0:
            logF += scipy.stats.chi2.logcdf((x - b) / s, p)
        else:
            logF += np.where(x >= b, 0.0, -np.inf)
    tail = -np.expm1(logF)
    return float(lo + np.trapezoid(tail, x))


def _sigma_from_stats(stats, d, snr):
    p, theta = d - 1, snr**2 * d
    M, V = _mean_var(stats, p, theta)
    # sigma >= 1 holds exactly for rank-one families; the mean-field ratio can
    # dip below it where the normaliser's extreme-value fluctuation is not
    # matched by lambda_max (low SNR, predictive form)
    return max(_lam_top(M, V) / _expected_max_diag(stats, p, theta), 1.0)


def cnn_coherence(n, d, snr, m, *, stats=None):
    """Predicted coherence ``sigma`` of a trained two-layer ReLU CNN.

    Parameters
    ----------
    n : int
        Number of samples.
    d : int
        Patch dimension (noise dimension ``p = d - 1``).
    snr : float
        ``||mu|| / (sigma_p sqrt(d))``; ``sigma`` does not depend on
        ``sigma_p``.
    m : int
        Filters per class.
    stats : CNNCoherenceStats, optional
        Measured statistics of the trained network (:func:`simlab.predict.cnn_summary`):
        the *semi-empirical* form. ``None`` uses :func:`predictive_stats`:
        the *fully predictive* form.

    Returns
    -------
    float
        Predicted ``sigma = lambda_max(S) / max_i lambda_max(H_i)`` (THEORY 5)
        for the logistic-loss curvature factors
        (:meth:`simlab.models.CNN.curvature_factors`).

    Notes
    -----
    Module docstring and ``derivations/rmt_cnn.py``. ``S`` is replaced by its
    mean (folded-normal off-diagonals of scale ``co sqrt p`` around the
    same-class signal overlap ``N_c theta``; no signal overlap across
    classes), ``lambda_max`` gets the second-order correction
    ``E ||W v||^2 / (lambda_1 - lambda_bar)``, and the normaliser is
    ``E max_i S_ii`` (exact for measured ``||xi_i||``; chi^2 quadrature
    otherwise).

    Measured error against ``simlab.coherence.coherence_measure`` of the
    curvature factors of trained CNNs (GD, ``eta = 0.1``, 200 steps,
    ``sigma_0 = 0.01``; ``n in {20, 40}``, ``d in {200, 1000}``,
    ``m in {5, 10}``, seven SNR from 0.01 to 1; mean of 3 seeds per cell,
    worst over three disjoint seed sets, ``derivations/rmt_cnn.py
    --errors``), worst ``|pred / sim - 1|`` (:data:`ERRORS`):

    - *semi-empirical* (``stats`` from :func:`simlab.predict.cnn_summary`): 6.6 % at
      ``d = 200`` (worst at ``n = 40, m = 10``, low SNR, where the noise
      co-activations are least homogeneous across pairs) and 3.0 % at
      ``d = 1000`` (under 0.5 % for ``SNR >= 0.46``). Quantitative
      in both regimes and through the transition. Tests hold 8.3 % / 3.8 %.
      These are 3-seed means; single networks scatter more (one 2-seed mean
      in the figure reached 7.5 % at ``d = 200``).
    - *fully predictive* (``stats=None``): 30 % at ``d = 200`` and 19 % at
      ``d = 1000`` on the three seed sets, 29 % at ``d = 1000`` on the
      ``cnn-coherence`` figure's seeds (4-seed means; ``n = 20, m = 10``,
      ``SNR = 1``, where the seed-to-seed scatter of ``sigma`` is large).
      Only *qualitatively* right: it has the right regimes
      (``sigma ~ 1`` for ``SNR^2 << 1/sqrt d``, ``sigma`` rising to
      ``~ n/2`` by ``SNR = 1``; the simulated values are 5.6-6.1 for
      ``n = 20`` and 8.8-9.9 for ``n = 40``, against ``~ n`` for the linear
      model) but misses the low-SNR excess ``sigma - 1`` (0.01-0.36 measured;
      predicted ``~ 0``: it is clipped at the exact bound 1), because the
      trained noise activations are not the assumed ``Binomial(m, 1/2)`` /
      ``m/4`` (measured ``A_i / m ~ 0.55-0.9``, same-class co-activation
      ``~ 0.1-0.2 m``) and margins are unequal (``std y f ~ 0.3-0.5``, so
      ``l''`` varies by ``e^{+-0.5}``). It errs both ways near the
      transition (``SNR ~ 0.2-0.5``) and at ``SNR = 1`` (+25 % at
      ``n = 40, d = 200, m = 10``). Tests hold 38 % / 36.3 %, plus the
      qualitative statements (monotone in SNR, the two limits).

    Regime of validity: the errors above are for GD with the protocol
    above. Spot checks of the semi-empirical form on two cells
    (``(20, 1000, 5)``, ``(40, 200, 10)``): 1000 steps, 1.8 % worst; a
    shorter, slower run (``eta = 0.02``, 200 steps) 2.2 % at ``d = 1000`` but
    9.7 % at ``n = 40, d = 200, m = 10`` (low SNR), i.e. it degrades when
    ``n / sqrt(d)`` is large and training is short (noise co-activations
    vary from pair to pair and the mean ``co_same`` no longer summarises
    them). The predictive form's assumptions are tied to training that
    reaches zero training error from small initialisation. ``p_flip > 0``
    (mislabeled samples, whose signal activation follows the clean class)
    was not measured.

    Examples
    --------
    >>> s_lo = cnn_coherence(20, 1000, 0.01, 10)
    >>> s_hi = cnn_coherence(20, 1000, 1.0, 10)
    >>> 1.0 <= s_lo < 1.2 < s_hi <= 20
    True
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    snr = check_positive(snr, "snr", allow_zero=True)
    if stats is None:
        stats = predictive_stats(n, d, m)
    elif stats.y.size != n:
        raise ValueError(f"stats describe {stats.y.size} samples, not n={n}")
    return float(_sigma_from_stats(stats, d, snr))


def cnn_coherence_limits(n, d, snr):
    """Closed-form limits of the predictive form (``A = m/2``, mean normaliser).

    Returns
    -------
    high, low : float
        ``(1 + n SNR^2) / (1 + 2 SNR^2)`` (signal learning; ``-> n/2``) and
        ``1 + (n/2 - 1) sqrt(2/pi) / (2 sqrt(d - 1))`` (memorization).

    Examples
    --------
    >>> hi, lo = cnn_coherence_limits(20, 1000, 1.0)
    >>> round(hi, 4)
    7.0
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    snr = check_positive(snr, "snr", allow_zero=True)
    s2 = snr**2
    high = (1 + n * s2) / (1 + 2 * s2)
    low = 1 + (n / 2 - 1) * np.sqrt(2 / np.pi) / (2 * np.sqrt(d - 1))
    return float(high), float(low)
