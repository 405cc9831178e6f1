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

__all__ = ["NonStationaryWarning", "UnlearningPrediction", "cnn_summary",
           "curvature_split", "predict_unlearning"]


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
class UnlearningPrediction:
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
        ``grad_norm <= STATIONARY_RTOL * sharpness * ||W||``; when ``False`` the
        prediction ignores the drift (a ``NonStationaryWarning`` was issued).
    alpha, eta, batch, forget_batch, scheme, escape_factor, horizon, loss
        The inputs (``horizon`` is ``inf`` when none was given).
    trajectories, steps, seed
        Of the Monte Carlo behind the typical verdict.
    """

    coherence: BlockCoherence
    rho: float
    critical_lr: float
    kappa_plus: float
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
    alpha: float
    eta: float
    batch: int
    forget_batch: int
    scheme: str
    escape_factor: float
    horizon: float
    loss: str
    trajectories: int
    steps: int
    seed: int


@serial_blas
def predict_unlearning(model, W, data, forget_idx, *, alpha, eta, horizon=None,
                       batch=None, forget_batch=None, scheme="without",
                       retain_idx=None, loss="logistic", escape_factor=1e3,
                       perturbation_samples=None, trajectories=64, steps=1000,
                       seed=0):
    """Mean-square and typical predictions for unlearning from weights ``W``.

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

    Returns
    -------
    UnlearningPrediction

    Warns
    -----
    NonStationaryWarning
        When ``W`` is not a stationary point of the mean loss (e.g. logistic
        loss at finite margins): the linearization then misses the drift of the
        mean gradient, and real runs escape by drift whatever the prediction
        says. Use the squared loss trained to interpolation, where the factors
        are exact and ``grad L = 0``.

    See Also
    --------
    simlab.dynamics.unlearn.unlearn, simlab.dynamics.unlearn.unlearn_twins :
        the nonlinear runs this predicts.
    simlab.stability.escape_time, simlab.simulate.linearized

    Notes
    -----
    THEORY sections 3-6 and claim 5 of section 9. The per-sample Hessians are
    the Gauss-Newton factors ``l''_i h_i h_i^T``, exact at an interpolating
    minimum of the squared loss (where ``l'_i = 0``). For ``q > 1`` CNNs the
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
    # Every quantity below is invariant under rotations of parameter space, so
    # work in r <= n coordinates of span{h_i} (an isometry: same Gram matrix).
    Q = range_basis(F)
    G_r, G_f, Fc = G_r @ Q, G_f @ Q, F @ Q
    if perturbation_samples is None:
        # delta_0 = c F / ||c F||: its second moment for the mean-square
        # verdict; its direction is that of the Gaussian c F (z F in
        # ``linearized``), which is all the typical verdict sees.
        ms_law, mc_law = gaussian_span_moment(Fc), Fc
    else:
        A = as_float_array(perturbation_samples, "perturbation_samples", ndim=2)
        if A.shape[1] != model.n_params:
            raise ValueError(f"perturbation_samples must have {model.n_params} "
                             f"columns (the flattened weights), got {A.shape}")
        mc_law = A @ Q
        # the part outside span{h_i} never moves; one extra coordinate (zero in
        # every Hessian) carries its mass into the mean-square norm
        outside = np.linalg.norm(A - mc_law @ Q.T, axis=1)
        if np.any(outside > 1e-12 * np.linalg.norm(A, axis=1)):
            G_r, G_f = (np.pad(G, ((0, 0), (0, 1))) for G in (G_r, G_f))
            ms_law = np.column_stack([mc_law, outside])
        else:
            ms_law = mc_law

    L, grad = model.loss_grad(W, data.X, data.y, loss)
    grad_norm = float(np.linalg.norm(grad))
    sharp = sharpness(F)
    stationary = grad_norm <= STATIONARY_RTOL * sharp * float(np.linalg.norm(W))
    if not stationary:
        warnings.warn(
            f"W is not a stationary point of the {loss} loss (||grad L|| = "
            f"{grad_norm:.3g}, L = {L:.3g}): the linearized prediction ignores the "
            "drift of the mean gradient", NonStationaryWarning, stacklevel=2)

    kw = dict(scheme=scheme, forget=G_f, forget_batch=forget_batch, alpha=alpha)
    rho = spectral_radius(G_r, eta, batch, **kw)
    try:
        eta_crit = critical_lr(G_r, batch, **kw)
    except ValueError:
        eta_crit = float("nan")
    t_asym = escape_time_from_rho(rho, K)
    if T is None:
        t_ms = t_asym
    else:
        t_ms = escape_time(G_r, eta, batch, escape_factor=K, horizon=T,
                           perturbation_samples=ms_law, **kw)
    n_steps = steps if T is None else T
    mc = linearized(G_r, eta, batch, steps=n_steps, trajectories=trajectories,
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
    return UnlearningPrediction(
        coherence=block_coherence(G_r, G_f), rho=float(rho),
        critical_lr=float(eta_crit), kappa_plus=kappa_plus(G_r, forget=G_f,
                                                           alpha=alpha),
        sharpness=sharp, asymptotic_escape_time=float(t_asym),
        ms_escape_time=float(t_ms), ms_escapes=bool(np.isfinite(t_ms)),
        lyapunov=lam, lyapunov_se=se, escape_probability=mc.escape_fraction,
        escapes=bool(escapes), far=bool(far), grad_norm=grad_norm,
        stationary=bool(stationary), alpha=alpha, eta=eta, batch=batch,
        forget_batch=forget_batch, scheme=scheme, escape_factor=K,
        horizon=float("inf") if T is None else float(T), loss=loss,
        trajectories=trajectories, steps=n_steps, seed=seed)


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
