"""Curvature at trained weights -> coherence blocks and stability verdict.

The bridge between the nonlinear side (:mod:`simlab.models`, trained by
:mod:`simlab.dynamics.train`) and the exact theory (:mod:`simlab.coherence`,
:mod:`simlab.stability`). At trained weights the per-sample loss Hessians of
the ReLU CNN and of the linear model are rank one, ``H_i = h_i h_i^T`` (THEORY
section 8), so the factors ``h_i`` feed the Gram-reduced operators directly
(THEORY section 6).
"""

import warnings
from dataclasses import dataclass

import numpy as np

from . import _streams
from ._blas import serial_blas
from ._validation import (
    as_float_array,
    check_alpha,
    check_batch,
    check_escape_factor,
    check_eta,
    check_forget_batch,
    check_int,
    check_scheme,
    check_seed,
)
from .coherence import BlockCoherence, block_coherence
from .curvature import range_basis, sharpness
from .data import check_split
from .dynamics.linearized import linearized
from .models.kernels import RELU
from .models.two_patch import check_model_data
from .stability import (
    critical_lr,
    escape_time,
    escape_time_from_rho,
    gaussian_span_moment,
    kappa_plus,
    spectral_radius,
)
from .theory.rmt_cnn import CNNCoherenceStats

__all__ = ["NonStationaryWarning", "StabilityPrediction", "UnlearningPrediction",
           "cnn_summary", "curvature_split", "predict_stability",
           "predict_unlearning"]


def curvature_split(model, W, data, forget_idx, *, retain_idx=None, loss="logistic"):
    """Rank-one curvature factors of the retain and forget sets at ``W``.

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    W : ndarray
        Weights (typically ``train(...).W``).
    data : SignalNoise
        Training set.
    forget_idx, retain_idx : array_like of int
        The split (``retain_idx`` defaults to the complement of ``forget_idx``).
    loss : {"logistic", "squared"}

    Returns
    -------
    retain_factors : ndarray (n_r, p)
    forget_factors : ndarray (n_f, p)
    """
    check_model_data(model, data)
    retain, forget = check_split(retain_idx, forget_idx, data.n)
    F = model.curvature_factors(W, data.X, data.y, loss)
    return F[retain], F[forget]


class NonStationaryWarning(UserWarning):
    """The weights are not a stationary point, so the linearization at them
    (THEORY section 1) misses the drift of the mean gradient."""


#: ``||grad L(W)||`` below ``STATIONARY_RTOL * lambda_max(H) * ||W||`` counts as
#: stationary: the drift it drives per step is that many times smaller than the
#: restoring force of a displacement of size ``||W||``.
STATIONARY_RTOL = 1e-8


@dataclass(frozen=True)
class _LinearStability:
    """Fields shared by the linear-stability predictions at trained weights.

    :class:`UnlearningPrediction` and :class:`StabilityPrediction` extend it:
    the same three questions (mean-square stability, mean-square escape within
    the horizon, typical escape) answered by :func:`_linear_verdicts`.
    """

    rho: float
    critical_lr: float
    sharpness: float
    asymptotic_escape_time: float
    ms_escape_time: float
    ms_escapes: bool
    lyapunov: float
    lyapunov_se: float
    escape_probability: float
    escapes: bool
    far: bool
    grad_norm: float
    stationary: bool
    eta: float
    batch: int
    scheme: str
    escape_factor: float
    horizon: float
    loss: str
    trajectories: int
    steps: int
    seed: int


@dataclass(frozen=True)
class UnlearningPrediction(_LinearStability):
    """Linear-stability prediction for descent-ascent unlearning at ``W``.

    Three different questions, each with its own fields (THEORY section 4):

    *Mean-square stability* (``rho``): does ``E||delta_t||^2`` grow?
    *Mean-square escape within the horizon* (``ms_escape_time``,
    ``ms_escapes``): does ``E||delta_t||^2`` reach ``K E||delta_0||^2`` for some
    ``t <= horizon``, from the actual law of ``delta_0``?
    *Typical escape* (``lyapunov``, ``escape_probability``, ``escapes``): does
    a typical run, i.e. the majority of runs, reach ``K ||delta_0||^2``? This is
    what a majority-of-runs heatmap scores, and ``escapes`` answers it.

    Attributes
    ----------
    coherence : BlockCoherence
        ``S_rr``, ``S_ff``, ``S_rf`` summary (THEORY section 5).
    rho : float
        Spectral radius of the exact unlearning operator ``T_u`` on ``U``.
    critical_lr : float
        Smallest ``eta`` with ``rho > 1`` at this ``(alpha, batch, forget_batch,
        scheme)`` (``0`` when ``kappa_plus > 0``; ``nan`` if undefined).
    kappa_plus : float
        Net ascent curvature ``lambda_max(alpha H_f - (1-alpha) H_r)``.
    sharpness : float
        ``lambda_max`` of the mean loss Hessian over retain and forget samples.
    asymptotic_escape_time : float
        ``log K / log rho`` (``inf`` when ``rho <= 1``): the mean-square escape
        time of a ``delta_0`` in the top eigenmatrix of ``T_u``.
    ms_escape_time : float
        Exact first ``t <= horizon`` with ``E||delta_t||^2 >= K E||delta_0||^2``
        from the perturbation law (:func:`simlab.stability.escape_time`);
        ``inf`` if none. Without a horizon, ``asymptotic_escape_time``.
    ms_escapes : bool
        The mean-square verdict: ``ms_escape_time`` is finite.
    lyapunov : float
        ``lambda_typ``: median over Monte-Carlo trajectories of the linearized
        dynamics at ``W`` of ``(1/T) log(||delta_T|| / ||delta_0||)``, with
        ``T`` the horizon (``steps`` without one).
    lyapunov_se : float
        Standard error of that median, ``sqrt(pi/2) std / sqrt(trajectories)``
        (the normal-theory value; the per-trajectory exponents are close to
        normal over long horizons).
    escape_probability : float
        Fraction of those trajectories with ``||delta_t||^2 >= K ||delta_0||^2``
        for some ``t <= T``.
    escapes : bool
        The typical verdict: ``T lambda_typ >= log(K) / 2`` (``lambda_typ > 0``
        without a horizon).
    far : bool
        ``|T lambda_typ| > log K``: the typical verdict is far from its
        boundary (``False`` without a horizon).
    grad_norm : float
        ``||grad L(W)||`` of the mean loss over all samples.
    stationary : bool
        ``grad_norm <= STATIONARY_RTOL * sharpness * ||W||`` (a
        ``NonStationaryWarning`` is issued when ``False``).
    alpha, eta, batch, forget_batch, scheme, escape_factor, horizon, loss
        The inputs (``horizon`` is ``inf`` when none was given).
    trajectories, steps, seed
        Of the Monte Carlo behind the typical verdict.
    drift : bool
        ``True``: the drift-aware path of :func:`predict_unlearning` computed
        ``lyapunov``, ``lyapunov_se``, ``escape_probability``, ``escapes``,
        ``far``, ``ms_escape_time`` and ``ms_escapes`` along the reference
        trajectories (``lyapunov`` then from the running maximum of the growth,
        see :func:`predict_unlearning`); ``rho``, ``critical_lr``,
        ``kappa_plus``, ``coherence``, ``sharpness`` and
        ``asymptotic_escape_time`` are then those of the Hessians at ``W``, the
        start of the path.
    """

    coherence: BlockCoherence
    kappa_plus: float
    alpha: float
    forget_batch: int
    drift: bool = False


# ---------------------------------------------------------------------------
# shared by predict_unlearning and predict_stability (one family of verdicts)
# ---------------------------------------------------------------------------

def _span_laws(F, perturbation_samples, n_params):
    """Coordinates of ``span{h_i}`` and the ``delta_0`` laws in them.

    Every quantity of the predictions is invariant under rotations of parameter
    space, so they work in ``r <= n`` orthonormal coordinates ``Q`` of the span
    of the curvature factors (an isometry: same Gram matrix).

    Returns
    -------
    Q : ndarray (p, r)
    pad : bool
        The law has mass outside the span: one extra coordinate (zero in every
        Hessian, never moved) carries it into ``||delta_t||``.
    ms_law, mc_law : ndarray
        ``perturbation_samples`` for :func:`simlab.stability.escape_time` and
        for :func:`simlab.simulate.linearized` in those coordinates. Default
        law: ``delta_0 = c F / ||c F||`` with ``c ~ N(0, I_n)``; its second
        moment for the mean-square verdict, its direction (that of the Gaussian
        ``c F``, all the typical verdict sees) for the Monte Carlo.
    """
    Q = range_basis(F)
    if perturbation_samples is None:
        Fc = F @ Q
        return Q, False, gaussian_span_moment(Fc), Fc
    A = as_float_array(perturbation_samples, "perturbation_samples", ndim=2)
    if A.shape[1] != n_params:
        raise ValueError(f"perturbation_samples must have {n_params} columns (the "
                         f"flattened weights), got {A.shape}")
    inside = A @ Q
    outside = np.linalg.norm(A - inside @ Q.T, axis=1)
    if np.any(outside > 1e-12 * np.linalg.norm(A, axis=1)):
        law = np.column_stack([inside, outside])
        return Q, True, law, law
    return Q, False, inside, inside


def _coords(G, Q, pad):
    """Factors ``G`` in the coordinates of :func:`_span_laws`."""
    G = G @ Q
    return np.pad(G, ((0, 0), (0, 1))) if pad else G


def _stationarity(model, W, data, loss, sharp):
    """``(||grad L(W)||, stationary)``; warns when ``W`` is not stationary."""
    L, grad = model.loss_grad(W, data.X, data.y, loss)
    grad_norm = float(np.linalg.norm(grad))
    stationary = grad_norm <= STATIONARY_RTOL * sharp * float(np.linalg.norm(W))
    if not stationary:
        warnings.warn(
            f"W is not a stationary point of the {loss} loss (||grad L|| = "
            f"{grad_norm:.3g}, L = {L:.3g}): the linearized prediction ignores the "
            "drift of the mean gradient", NonStationaryWarning, stacklevel=3)
    return grad_norm, bool(stationary)


def _linear_verdicts(G, eta, batch, *, K, T, steps, trajectories, seed, ms_law,
                     mc_law, **kw):
    """The verdicts of :class:`_LinearStability` from factors ``G`` (THEORY 4).

    ``kw``: ``scheme`` and, for unlearning, ``forget``, ``forget_batch``,
    ``alpha`` (as in :func:`simlab.stability.spectral_radius`). Returns a dict
    of the fields ``rho`` ... ``seed`` other than ``sharpness``,
    ``grad_norm``, ``stationary``, ``eta``, ``batch``, ``scheme``, ``loss``.
    """
    rho = spectral_radius(G, eta, batch, **kw)
    try:
        eta_crit = critical_lr(G, batch, **kw)
    except ValueError:
        eta_crit = float("nan")
    t_asym = escape_time_from_rho(rho, K)
    if T is None:
        t_ms = t_asym
    else:
        t_ms = escape_time(G, eta, batch, escape_factor=K, horizon=T,
                           perturbation_samples=ms_law, **kw)
    n_steps = steps if T is None else T
    mc = linearized(G, eta, batch, steps=n_steps, trajectories=trajectories,
                    escape_factor=K, seed=seed, record_every=n_steps,
                    perturbation_samples=mc_law, **kw)
    lyap = mc.lyapunov
    lam = float(np.median(lyap))
    finite = lyap[np.isfinite(lyap)]
    se = (float(np.sqrt(np.pi / 2) * finite.std(ddof=1) / np.sqrt(finite.size))
          if finite.size > 1 else float("nan"))
    if T is None:
        escapes, far = lam > 0.0, False
    else:
        escapes = T * lam >= 0.5 * np.log(K)
        far = abs(T * lam) > np.log(K)
    return dict(
        rho=float(rho), critical_lr=float(eta_crit),
        asymptotic_escape_time=float(t_asym), ms_escape_time=float(t_ms),
        ms_escapes=bool(np.isfinite(t_ms)), lyapunov=lam, lyapunov_se=se,
        escape_probability=mc.escape_fraction, escapes=bool(escapes),
        far=bool(far), escape_factor=K,
        horizon=float("inf") if T is None else float(T),
        trajectories=trajectories, steps=n_steps, seed=seed)


@serial_blas
def predict_unlearning(model, W, data, forget_idx, *, alpha, eta, horizon=None,
                       batch=None, forget_batch=None, scheme="without",
                       retain_idx=None, loss="logistic", escape_factor=1e3,
                       perturbation_samples=None, trajectories=64, steps=1000,
                       seed=0, drift=None):
    """Mean-square and typical predictions for unlearning from weights ``W``.

    Two paths, chosen by measuring ``||grad L(W)||`` (``drift``):

    * *stationary* (``W`` a stationary point, e.g. the squared loss trained to
      interpolation): the linearization at ``W``, ``delta_{t+1} = (I - eta
      M_t) delta_t`` with the per-sample Hessians ``l''_i h_i h_i^T`` at ``W``
      (THEORY sections 3-4): exact operator ``T_u`` (``rho``, mean-square
      escape time from the ``delta_0`` law) and a linearized Monte Carlo
      (``lambda_typ``).
    * *drift-aware* (``W`` not stationary, e.g. the logistic loss at finite
      margins, where ``||grad L|| ~ L``; THEORY 10.0): the linearization along
      the reference trajectory. For each of ``trajectories`` independent
      minibatch sequences the real descent-ascent run from ``W`` (the reference
      ``W_t``, drift included) is computed, and the perturbation follows its
      tangent dynamics ``delta_{t+1} = (I - eta H_t) delta_t``, ``H_t`` the
      minibatch descent-ascent Hessian ``sum_i w_{t,i} l''_i(W_t) grad f_i(W_t)
      grad f_i(W_t)^T`` at the reference iterate (exact a.e. for the ReLU CNN and
      the linear model: ``grad^2 f = 0`` off the kinks). This is the first-order
      law of the twin separation ``W'_t - W_t`` that
      :func:`simlab.dynamics.unlearn.unlearn_twins` measures, in the limit
      ``||delta_0|| -> 0``. ``lambda_typ`` is the median over these
      trajectories of ``(1/T) max_{t <= T} log(||delta_t|| / ||delta_0||)``,
      the first-passage form the twins are scored by (the growth saturates,
      and may decay, once the forget margins have passed through zero), so
      the typical verdict ``T lambda_typ >= log(K)/2`` says that the majority
      of trajectories reach ``K ||delta_0||^2`` within ``T``; ``lambda_typ >=
      0`` here, so no cell is far on the resisting side (without a horizon:
      escape iff the median final growth over ``steps`` is positive). The
      mean-square verdict is the first ``t <= T`` at which the Monte-Carlo mean
      of ``||delta_t||^2`` over the same trajectories reaches ``K`` times that
      of ``||delta_0||^2`` (an estimate: no exact operator exists along a
      random path, and rare fast trajectories that dominate ``E||delta_t||^2``
      may be missed). ``rho``, ``critical_lr``, ``kappa_plus``, ``coherence``
      and ``asymptotic_escape_time`` stay those of the Hessians at ``W``.

    The tangent misses one first-order effect of ReLU networks on a drifting
    path: when the reference crosses a kink, a twin at finite ``||delta_0||``
    crosses it a step earlier or later, and the separation jumps by
    ``O(eta |l'| ||x||^2 / m)`` whatever ``delta`` is; units whose
    pre-activation hovers at a kink do the same at any ``||delta_0||``. Real
    twins follow the tangent where such jumps stay below ``sqrt(K)
    ||delta_0||`` (cnn-unlearning's logistic panel: ``1e-5 ||W||`` agrees better
    than ``1e-8 ||W||``).

    Parameters
    ----------
    model, W, data, forget_idx, retain_idx, loss
        As in :func:`curvature_split`.
    alpha, eta, batch, forget_batch, scheme, escape_factor
        As in :func:`simlab.dynamics.unlearn.unlearn` (same defaults).
    horizon : int, optional
        Number of steps ``T`` of the runs to compare with. Without it the
        verdicts are asymptotic (``rho > 1``; ``lambda_typ > 0``).
    perturbation_samples : array_like, shape (k, p), optional
        The law of ``delta_0`` in parameter space (``p = model.n_params``, rows
        flattened like ``W``), as in :func:`simlab.stability.escape_time`.
        Default: ``delta_0 = c F / ||c F||`` with ``c ~ N(0, I_n)`` and ``F``
        the curvature factors of all samples (a perturbation in the curvature
        range, the law the cnn-unlearning twin runs draw;
        :func:`simlab.stability.gaussian_span_moment`).
    trajectories, steps, seed
        Monte Carlo of the linearized dynamics behind ``lyapunov`` (``steps``
        is used only without a horizon).
    drift : bool, optional
        ``None`` (default): the drift-aware path exactly when ``W`` is not
        stationary (``||grad L(W)|| > STATIONARY_RTOL lambda_max(H) ||W||``).
        ``True``: always the drift-aware path (at a stationary point it
        reproduces the stationary one in law). ``False``: the stationary
        theory even at a non-stationary ``W`` (with a warning).

    Returns
    -------
    UnlearningPrediction

    Warns
    -----
    NonStationaryWarning
        When ``W`` is not a stationary point of the mean loss and
        ``drift`` is not ``True``: the message says which path was taken
        (``drift=None``: the drift-aware one; ``drift=False``: the stationary
        theory, which then ignores the drift, and real runs may escape by
        drift whatever it says).

    See Also
    --------
    simlab.dynamics.unlearn.unlearn, simlab.dynamics.unlearn.unlearn_twins :
        the nonlinear runs this predicts.
    simlab.stability.escape_time, simlab.simulate.linearized

    Notes
    -----
    THEORY sections 3-6, 10.0 and claim 5 of section 9. The per-sample Hessians
    are the Gauss-Newton factors ``l''_i h_i h_i^T`` (``l'' = 1`` for the squared
    loss, ``sigma(z) sigma(-z)`` for the logistic loss), exact for ``q = 1``
    where ``grad^2 f = 0`` a.e.; the stationary path assumes moreover
    ``grad L(W) = 0`` (an interpolating minimum of the squared loss), the
    drift-aware path does not. For ``q > 1`` CNNs the
    per-sample Hessians are not rank one and this function refuses them
    (``curvature_factors`` raises).

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> from simlab.dynamics.train import train
    >>> data = signal_noise(20, 60, snr=0.1, p_flip=0.1, seed=0)
    >>> model = CNN(60, 4)
    >>> W = train(model, data, eta=0.5, steps=3000, loss="squared").W
    >>> pred = predict_unlearning(model, W, data, [0, 1, 2], alpha=0.3, eta=0.1,
    ...                           batch=5, horizon=100, loss="squared")
    >>> pred.stationary, pred.escapes == (100 * pred.lyapunov >= 0.5 * np.log(1e3))
    (True, True)
    """
    G_r, G_f = curvature_split(model, W, data, forget_idx, retain_idx=retain_idx,
                               loss=loss)
    n_r, n_f = G_r.shape[0], G_f.shape[0]
    alpha = check_alpha(alpha)
    eta = check_eta(eta, "eta")
    batch = n_r if batch is None else check_batch(batch, n_r, "batch")
    forget_batch = check_forget_batch(forget_batch, batch, n_r, n_f)
    scheme = check_scheme(scheme)
    K = check_escape_factor(escape_factor)
    T = None if horizon is None else check_int(horizon, "horizon", low=1)
    trajectories = check_int(trajectories, "trajectories", low=2)
    steps = check_int(steps, "steps", low=1)
    seed = check_seed(seed)
    F = np.concatenate([G_r, G_f])
    Q, pad, ms_law, mc_law = _span_laws(F, perturbation_samples, model.n_params)
    G_r, G_f = (_coords(G, Q, pad) for G in (G_r, G_f))
    sharp = sharpness(F)
    if drift not in (None, True, False):
        raise ValueError(f"drift must be None, True or False, got {drift!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonStationaryWarning)
        grad_norm, stationary = _stationarity(model, W, data, loss, sharp)
    use_drift = (not stationary) if drift is None else drift
    for w in caught:
        if drift is None:
            msg = (f"{w.message}; predicting instead along the reference "
                   "trajectory (drift-aware linearization, predict_unlearning "
                   "docstring)")
        else:
            msg = str(w.message)
        if drift is not True:
            warnings.warn(msg, NonStationaryWarning, stacklevel=3)
    kw = dict(scheme=scheme, forget=G_f, forget_batch=forget_batch, alpha=alpha)
    verdicts = _linear_verdicts(G_r, eta, batch, K=K, T=T, steps=steps,
                                trajectories=2 if use_drift else trajectories,
                                seed=seed, ms_law=ms_law, mc_law=mc_law, **kw)
    if use_drift:
        retain, forget = check_split(retain_idx, forget_idx, data.n)
        pert = (None if perturbation_samples is None else as_float_array(
            perturbation_samples, "perturbation_samples", ndim=2))
        verdicts.update(_drift_verdicts(
            model, W, data, retain, forget, alpha=alpha, eta=eta, batch=batch,
            forget_batch=forget_batch, scheme=scheme, loss=loss, K=K, T=T,
            steps=steps, trajectories=trajectories, seed=seed,
            perturbation_samples=pert), trajectories=trajectories)
    return UnlearningPrediction(
        coherence=block_coherence(G_r, G_f),
        kappa_plus=kappa_plus(G_r, forget=G_f, alpha=alpha), sharpness=sharp,
        grad_norm=grad_norm, stationary=stationary, alpha=alpha, eta=eta,
        batch=batch, forget_batch=forget_batch, scheme=scheme, loss=loss,
        drift=bool(use_drift), **verdicts)


# ---------------------------------------------------------------------------
# predict_unlearning at non-stationary weights: linearization along the
# reference trajectory (THEORY section 10.0, logistic paragraph)
# ---------------------------------------------------------------------------

#: Seed-stream key of the drift-aware Monte Carlo (minibatches, ``delta_0`` rows).
_DRIFT_STREAM = _streams.PREDICT_DRIFT

#: A reference run whose pre-activations leave ``|z| <= _DRIFT_BLOWUP`` has
#: blown up; its trajectory counts as escaped (as in ``unlearn_twins``).
_DRIFT_BLOWUP = 1e100


def _drift_coefficients(model, Z, y, loss):
    """``g = d f_i / d Z`` (mask over the sample's own patches), ``f``, ``l'``,
    ``l''`` at pre-activations ``Z`` of shape ``(S, K, 2n)`` (NumPy, the same
    formulas as :mod:`simlab.models.bodies`: ReLU derivative 0 at the kink)."""
    J, m, act_id, _ = model.kernel_args
    S, _, n2 = Z.shape
    sign = np.repeat([1.0, -1.0][:J], m) / m
    if act_id == RELU:
        pos = Z > 0.0
        g = pos * sign[:, None]
        a = Z * pos
    else:
        g = np.broadcast_to(sign[:, None], Z.shape)
        a = Z
    f = _pair_sum(np.matmul(sign, a))
    if loss == "squared":
        return g, f, f - y, np.ones_like(f)
    s_neg = 0.5 * (1.0 - np.tanh(0.5 * y * f))            # sigma(-y f)
    return g, f, -y * s_neg, s_neg * (1.0 - s_neg)


def _pair_sum(V):
    """``(S, 2n) -> (S, n)``: the two patches of each sample added."""
    return V[:, 0::2] + V[:, 1::2]


def _drift_linearized(model, Wk, Xp, y, wts, eta, A0, out0, loss):
    """Tangent dynamics of the descent-ascent map along its reference runs.

    Reference ``s`` starts at ``Wk`` and takes the real (nonlinear) steps
    ``W <- W - eta sum_i wts[s, t, i] grad l_i(W)``; its tangent
    ``delta_{t+1} = (I - eta H_t) delta_t`` uses the minibatch Hessian
    ``H_t = sum_i wts[s, t, i] l''_i(W_t) grad f_i grad f_i^T`` at the reference
    iterate (exact a.e. for ReLU and the linear model: ``grad^2 f = 0`` off the
    kinks). Both live in Gram form: filters move in the span of the training
    patches ``Xp``, so ``W_t = Wk + C_t Xp`` and ``delta_t = A_t Xp + o`` with
    ``o`` (norm ``out0``) outside that span, never moved.

    Parameters
    ----------
    Wk : (K, d) kernel weights; Xp : (2n, d); y : (n,)
    wts : (S, T, n) signed per-step sample weights (retain ``(1-alpha) w``,
        forget ``-alpha w``, as in :func:`simlab.dynamics.unlearn.unlearn`)
    A0 : (S, K, 2n) coefficients of the in-span part of ``delta_0``
    out0 : (S,) norm of its out-of-span part

    Returns
    -------
    log_growth : ndarray (S, T + 1)
        ``log(||delta_t|| / ||delta_0||)``; ``+inf`` from the step a reference
        run blows up numerically.
    """
    S, T, _ = wts.shape
    n2 = Xp.shape[0]
    G = Xp @ Xp.T
    Z = np.repeat((Wk @ Xp.T)[None], S, axis=0)
    A = A0.copy()
    U = A @ G                                              # delta_t Xp^T
    out = np.asarray(out0, dtype=float).copy()
    sq = np.empty((S, T + 1))                              # ||delta_t||^2 / e^logs
    sq[:, 0] = np.einsum("skl,skl->s", A, U) + out**2
    if np.any(sq[:, 0] <= 0.0):
        raise ValueError("perturbation_samples: delta_0 must be nonzero")
    logs = np.zeros((S, T + 1))                            # log of the rescalings
    dead = np.full(S, T + 1)                               # first blown-up step
    c = np.empty((S, 2, n2))
    for t in range(T):
        g, f, d1, d2 = _drift_coefficients(model, Z, y, loss)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(f).max(axis=1) <= _DRIFT_BLOWUP)
        dead[bad] = np.minimum(dead[bad], t)
        gu = _pair_sum(np.einsum("skl,skl->sl", g, U))     # grad f_i . delta
        w = -eta * wts[:, t]
        c[:, 0, 0::2] = c[:, 0, 1::2] = w * d1
        c[:, 1, 0::2] = c[:, 1, 1::2] = w * d2 * gu
        dCA = g[:, None] * c[:, :, None, :]                # (S, 2, K, 2n)
        step = (dCA.reshape(-1, n2) @ G).reshape(dCA.shape)
        Z += step[:, 0]
        A += dCA[:, 1]
        U += step[:, 1]
        sq[:, t + 1] = np.einsum("skl,skl->s", A, U) + out**2
        logs[:, t + 1] = logs[:, t]
        big = sq[:, t + 1] > 1e200                         # keep delta finite
        if big.any():
            r = np.sqrt(sq[big, t + 1])
            A[big] /= r[:, None, None]
            U[big] /= r[:, None, None]
            out[big] /= r
            logs[big, t + 1] += np.log(r)
            sq[big, t + 1] = 1.0
        if bad.any():
            Z[bad] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = logs + 0.5 * (np.log(np.maximum(sq, 1e-300)) - np.log(sq[:, :1]))
    lg[np.arange(T + 1)[None, :] >= dead[:, None]] = np.inf
    return lg


def _drift_verdicts(model, W, data, retain, forget, *, alpha, eta, batch,
                    forget_batch, scheme, loss, K, T, steps, trajectories, seed,
                    perturbation_samples):
    """Typical and mean-square verdicts of the drift-aware path (a dict of the
    fields ``lyapunov`` ... ``ms_escapes`` of :class:`UnlearningPrediction`)."""
    from .dynamics.train import batch_weights

    n = data.n
    Wk = model.kernel_weights(W)
    Xp = data.X.reshape(2 * n, model.d)
    n_steps = steps if T is None else T
    rng = np.random.default_rng([seed, _DRIFT_STREAM])
    wts = np.zeros((trajectories, n_steps, n))
    for s in range(trajectories):
        if alpha < 1.0:
            wts[s][:, retain] = (1.0 - alpha) * batch_weights(
                rng, n_steps, retain.size, batch, scheme)
        if alpha > 0.0:
            wts[s][:, forget] = -alpha * batch_weights(
                rng, n_steps, forget.size, forget_batch, scheme)
    if perturbation_samples is None:
        # delta_0 = c F, c ~ N(0, I_n): coefficients sqrt(l''_i) c_i g_i
        g, _, _, d2 = _drift_coefficients(model, (Wk @ Xp.T)[None], data.y, loss)
        c = rng.standard_normal((trajectories, n)) * np.sqrt(d2)
        A0 = np.repeat(c, 2, axis=1)[:, None, :] * g
        out0 = np.zeros(trajectories)
    else:
        rows = perturbation_samples.reshape(-1, *Wk.shape)
        pick = rows[rng.integers(0, rows.shape[0], size=trajectories)]
        coef = np.linalg.lstsq(Xp.T, pick.reshape(-1, model.d).T, rcond=None)[0]
        A0 = coef.T.reshape(trajectories, *Wk.shape[:1], 2 * n)
        out0 = np.linalg.norm(pick - A0 @ Xp, axis=(1, 2))
    lg = _drift_linearized(model, Wk, Xp, data.y, wts, eta, A0, out0, loss)
    # first passage, as the twins are scored: the running maximum of the growth
    # (along a drifting path it saturates and may decay once the forget
    # margins have passed through zero; at a stationary point it is the
    # final-time growth up to fluctuations)
    lyap = lg.max(axis=1) / n_steps
    lam = float(np.median(lyap))
    finite = lyap[np.isfinite(lyap)]
    se = (float(np.sqrt(np.pi / 2) * finite.std(ddof=1) / np.sqrt(finite.size))
          if finite.size > 1 else float("nan"))
    half = 0.5 * np.log(K)
    prob = float(np.mean(lg.max(axis=1) >= half))
    # mean square: E||delta_t||^2 / E||delta_0||^2 over the same trajectories
    sq0 = np.einsum("skl,skl->s", A0, A0 @ (Xp @ Xp.T)) + out0**2
    with np.errstate(over="ignore"):
        ms = (np.exp(np.minimum(2.0 * lg, 1400.0)) * sq0[:, None]).mean(axis=0)
    hit = np.flatnonzero(ms >= K * sq0.mean())
    t_ms = float(hit[0]) if hit.size else float("inf")
    if T is None:
        escapes, far = float(np.median(lg[:, -1])) > 0.0, False
    else:
        escapes, far = T * lam >= half, abs(T * lam) > np.log(K)
    return dict(ms_escape_time=t_ms, ms_escapes=bool(np.isfinite(t_ms)),
                lyapunov=lam, lyapunov_se=se, escape_probability=prob,
                escapes=bool(escapes), far=bool(far), steps=n_steps)


# ---------------------------------------------------------------------------
# stability of trained weights under plain GD / SGD (THEORY section 10.0)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StabilityPrediction(_LinearStability):
    """Linear-stability prediction for plain GD / SGD from weights ``W``.

    The plain-training member of the family of :class:`UnlearningPrediction`
    (``alpha = 0``, no forget set): the same fields answer the same three
    questions (THEORY sections 4 and 10.0), now about continuing training
    from ``W`` at ``(eta, batch, scheme)``.

    Attributes
    ----------
    rho : float
        Spectral radius of the exact SGD operator ``T`` on ``U = range(H)``
        (mean-square stability: ``rho <= 1``). For GD (``batch = n``,
        ``"without"`` or ``"bernoulli"``) ``rho = max_i (1 - eta lambda_i)^2``.
    critical_lr : float
        Largest mean-square stable ``eta`` at ``(batch, scheme)``:
        ``2 / sharpness`` for GD (THEORY section 2).
    sharpness : float
        ``lambda_max(H(W))`` of the mean loss Hessian (its Gauss-Newton part
        when ``gauss_newton``).
    asymptotic_escape_time, ms_escape_time, ms_escapes
        Mean-square escape: ``log K / log rho`` and the exact first ``t <=
        horizon`` with ``E||delta_t||^2 >= K E||delta_0||^2`` from the
        ``delta_0`` law (:func:`simlab.stability.escape_time`; ``inf`` if
        none); ``ms_escapes`` is the mean-square verdict.
    lyapunov, lyapunov_se, escape_probability
        ``lambda_typ``, the median over Monte-Carlo trajectories of the
        linearized SGD at ``W`` of ``(1/T) log(||delta_T|| / ||delta_0||)``
        (``T`` the horizon, ``steps`` without one), its standard error
        ``sqrt(pi/2) std / sqrt(trajectories)``, and the fraction of
        trajectories reaching ``K ||delta_0||^2``. Typical stability (where
        SGD can settle): ``lambda_typ <= 0``.
    escapes : bool
        The typical verdict: ``T lambda_typ >= log(K) / 2`` (``lambda_typ >
        0`` without a horizon); what a majority of real runs tests.
    far : bool
        ``|T lambda_typ| > log K`` (``False`` without a horizon).
    grad_norm, stationary
        ``||grad L(W)||`` and whether it is below ``STATIONARY_RTOL *
        sharpness * ||W||`` (else a :class:`NonStationaryWarning` was issued).
    gauss_newton : bool
        The factors are the Gauss-Newton part only (``q > 1`` CNN); exact at
        an interpolating squared-loss minimum.
    eta, batch, scheme, escape_factor, horizon, loss, trajectories, steps, seed
        The inputs (``horizon`` is ``inf`` when none was given).
    """

    gauss_newton: bool


@serial_blas
def predict_stability(model, W, data, *, eta, batch=None, scheme="without",
                      horizon=None, loss="squared", escape_factor=1e3,
                      perturbation_samples=None, trajectories=64, steps=1000,
                      seed=0):
    """Can GD / SGD at ``(eta, batch, scheme)`` stay at the trained weights ``W``?

    At an interpolating minimum ``w*`` every per-sample gradient vanishes, so
    training from ``w* + delta_0`` follows ``delta_{t+1} = (I - eta H_t)
    delta_t`` to first order (THEORY section 1) and an optimizer can only
    settle where this linearization is stable (THEORY section 10.0): GD needs
    ``eta lambda_max(H) <= 2``, SGD typical stability (``lyapunov <= 0``);
    mean-square stability (``rho <= 1``) is stricter. The plain-training
    counterpart of :func:`predict_unlearning` (same verdicts, same fields).

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    W : ndarray
        Trained weights (typically ``train(..., loss="squared").W``).
    data : SignalNoise
        The training set.
    eta : float
        Learning rate of the continued training.
    batch : int, optional
        Minibatch size ``B`` (default ``n``: GD for ``"without"`` and
        ``"bernoulli"``).
    scheme : {"without", "with", "bernoulli"}
    horizon : int, optional
        Number of steps ``T`` of the runs to compare with. Without it the
        verdicts are asymptotic (``rho > 1``; ``lambda_typ > 0``).
    loss : {"squared", "logistic"}
        Squared by default: only there is a trained network an exact
        stationary point.
    escape_factor : float
        ``K`` of the escape criterion (default ``10^3``).
    perturbation_samples : array_like, shape (k, p), optional
        The law of ``delta_0``, as in :func:`predict_unlearning` (default: a
        Gaussian combination of the curvature factors, normalised).
    trajectories, steps, seed
        Monte Carlo of the linearized dynamics behind ``lyapunov`` (``steps``
        is used only without a horizon).

    Returns
    -------
    StabilityPrediction

    Warns
    -----
    NonStationaryWarning
        When ``W`` is not a stationary point of the mean loss.

    Notes
    -----
    THEORY sections 2, 4 and 10.0, claim 7 of section 9. The per-sample
    Hessians are ``l''_i h_i h_i^T`` with ``h_i = grad_W f_i``: exact for the
    ReLU CNN (``q = 1``) and the linear model, where ``grad^2 f = 0``. For the
    ``max(0, z)^q`` CNN with ``q > 1`` (e.g. ``q = 3``) the per-sample Hessian
    also has the term ``l'_i grad^2 f_i``; this function uses the Gauss-Newton
    factors, which are exact at an interpolating squared-loss minimum because
    there ``l'_i = f_i - y_i = 0`` for every sample (``gauss_newton`` is then
    ``True``; away from such a minimum the prediction is that of the
    Gauss-Newton part only).

    See Also
    --------
    predict_unlearning : the same verdicts for descent-ascent unlearning.
    simlab.dynamics.train.train : the runs this predicts.

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> from simlab.dynamics.train import train
    >>> data = signal_noise(10, 40, snr=0.2, seed=0)
    >>> model = CNN(40, 3)
    >>> W = train(model, data, eta=0.3, steps=3000, loss="squared").W
    >>> gd = predict_stability(model, W, data, eta=0.3)
    >>> bool(np.isclose(gd.critical_lr, 2 / gd.sharpness)), gd.stationary
    (True, True)
    """
    check_model_data(model, data)
    n = data.n
    eta = check_eta(eta, "eta")
    batch = n if batch is None else check_batch(batch, n, "batch")
    scheme = check_scheme(scheme)
    K = check_escape_factor(escape_factor)
    T = None if horizon is None else check_int(horizon, "horizon", low=1)
    trajectories = check_int(trajectories, "trajectories", low=2)
    steps = check_int(steps, "steps", low=1)
    seed = check_seed(seed)
    gn = model.q > 1 and model.act_id == RELU
    F = model.curvature_factors(W, data.X, data.y, loss,
                                **({"gauss_newton": True} if gn else {}))
    Q, pad, ms_law, mc_law = _span_laws(F, perturbation_samples, model.n_params)
    sharp = sharpness(F)
    grad_norm, stationary = _stationarity(model, W, data, loss, sharp)
    verdicts = _linear_verdicts(_coords(F, Q, pad), eta, batch, K=K, T=T,
                                steps=steps, trajectories=trajectories, seed=seed,
                                ms_law=ms_law, mc_law=mc_law, scheme=scheme)
    return StabilityPrediction(sharpness=sharp, grad_norm=grad_norm,
                               stationary=stationary, eta=eta, batch=batch,
                               scheme=scheme, loss=loss, gauss_newton=bool(gn),
                               **verdicts)


def cnn_summary(model, W, data):
    """Measure :class:`CNNCoherenceStats` of ``model`` at weights ``W``.

    Parameters
    ----------
    model : simlab.models.CNN
        ReLU CNN with ``q = 1``.
    W : ndarray (2, m, d)
    data : simlab.data.SignalNoise
        Must carry ``mu`` and ``sigma_p``.

    Returns
    -------
    simlab.theory.rmt_cnn.CNNCoherenceStats
        The input of :func:`simlab.theory.rmt_cnn.cnn_coherence` (``stats=``).

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> data = signal_noise(6, 50, snr=0.5, seed=0)
    >>> model = CNN(50, 3)
    >>> st = cnn_summary(model, model.init(0.1, seed=0), data)
    >>> st.A.shape, sum(st.n_signal)
    ((6,), 6.0)
    """
    if model.q != 1:
        raise ValueError("cnn_summary needs the ReLU CNN (q = 1)")
    if data.mu is None:
        raise ValueError("data.mu is unknown")
    W = model.kernel_weights(W)
    y, xi = data.y, data.noise
    sp2 = data.sigma_p**2 if np.isfinite(data.sigma_p) else 1.0
    pos = float(np.sum(W @ data.mu > 0))
    a = (W @ xi.T > 0).astype(float)                   # (2m, n)
    co = a.T @ a
    n = y.size
    same = (y[:, None] == y[None, :]) & ~np.eye(n, dtype=bool)
    cross = y[:, None] != y[None, :]
    z = y * model.forward(W.reshape(model.shape), data.X)
    s = 1.0 / (1.0 + np.exp(-z))
    return CNNCoherenceStats(
        y=y.copy(), lpp=s * (1.0 - s), A=a.sum(axis=0),
        xi_sq=np.einsum("ij,ij->i", xi, xi) / sp2,
        n_signal=(pos, float(2 * model.m) - pos),
        co_same=float(co[same].mean()) if same.any() else 0.0,
        co_cross=float(co[cross].mean()) if cross.any() else 0.0)
