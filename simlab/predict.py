"""Curvature at trained weights -> coherence blocks and stability verdict.

The bridge between the nonlinear side (:mod:`simlab.models`, trained by
:mod:`simlab.dynamics.train`) and the exact theory (:mod:`simlab.coherence`,
:mod:`simlab.stability`). At trained weights the per-sample loss Hessians of
the ReLU CNN and of the linear model are rank one, ``H_i = h_i h_i^T`` (THEORY
section 8), so the factors ``h_i`` feed the Gram-reduced operators directly
(THEORY section 6).
"""

from dataclasses import dataclass

import numpy as np

from ._validation import (
    check_alpha,
    check_batch,
    check_escape_factor,
    check_eta,
)
from .coherence import BlockCoherence, block_coherence
from .data import SignalNoise, check_split
from .models.two_patch import TwoPatchModel
from .stability import critical_lr, kappa_plus, spectral_radius
from .theory.rmt_cnn import CNNCoherenceStats

__all__ = ["UnlearningPrediction", "cnn_summary", "curvature_split", "predict_unlearning"]


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
    if not isinstance(model, TwoPatchModel):
        raise ValueError(f"model must be a simlab model, got {type(model).__name__}")
    if not isinstance(data, SignalNoise):
        raise ValueError("data must be a SignalNoise instance")
    retain, forget = check_split(retain_idx, forget_idx, data.n)
    F = model.curvature_factors(W, data.X, data.y, loss)
    return F[retain], F[forget]


@dataclass(frozen=True)
class UnlearningPrediction:
    """Linear-stability prediction for descent-ascent unlearning at ``W``.

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
    escape_time : float
        ``log K / log rho`` (``inf`` when ``rho <= 1``).
    escapes : bool
        ``rho > 1`` and, when a horizon was given, ``escape_time <= horizon``.
    alpha, eta, batch, forget_batch, scheme, escape_factor, horizon
        The inputs.
    """

    coherence: BlockCoherence
    rho: float
    critical_lr: float
    kappa_plus: float
    sharpness: float
    escape_time: float
    escapes: bool
    alpha: float
    eta: float
    batch: int
    forget_batch: int
    scheme: str
    escape_factor: float
    horizon: float


def predict_unlearning(model, W, data, forget_idx, *, alpha, eta, batch=None,
                       forget_batch=None, scheme="without", retain_idx=None,
                       loss="logistic", escape_factor=1e3, horizon=None):
    """Coherence blocks and predicted escape of unlearning from weights ``W``.

    Parameters
    ----------
    model, W, data, forget_idx, retain_idx, loss
        As in :func:`curvature_split`.
    alpha, eta, batch, forget_batch, scheme, escape_factor
        As in :func:`simlab.dynamics.unlearn.unlearn` (same defaults).
    horizon : int, optional
        Number of steps of the run to compare with; ``escapes`` then also
        requires ``escape_time <= horizon``.

    Returns
    -------
    UnlearningPrediction

    See Also
    --------
    simlab.dynamics.unlearn.unlearn : the nonlinear run this predicts.
    simlab.stability.spectral_radius, simlab.stability.critical_lr

    Notes
    -----
    THEORY sections 3-6 and claim 5 of section 9. For ``q > 1`` CNNs the
    per-sample Hessians are not rank one and this function refuses them
    (``curvature_factors`` raises).

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> from simlab.dynamics.train import train
    >>> data = signal_noise(20, 60, snr=0.1, p_flip=0.1, seed=0)
    >>> model = CNN(60, 4)
    >>> W = train(model, data, eta=0.1, steps=100).W
    >>> pred = predict_unlearning(model, W, data, [0, 1, 2], alpha=0.3, eta=0.1,
    ...                           batch=5, forget_batch=2)
    >>> bool(pred.rho > 0)
    True
    """
    G_r, G_f = curvature_split(model, W, data, forget_idx, retain_idx=retain_idx,
                               loss=loss)
    n_r, n_f = G_r.shape[0], G_f.shape[0]
    alpha = check_alpha(alpha)
    eta = check_eta(eta, "eta")
    batch = n_r if batch is None else check_batch(batch, n_r, "batch")
    if forget_batch is None:
        forget_batch = n_f if batch == n_r else batch
    forget_batch = check_batch(forget_batch, n_f, "forget_batch")
    K = check_escape_factor(escape_factor)
    kw = dict(scheme=scheme, forget=G_f, forget_batch=forget_batch, alpha=alpha)
    rho = spectral_radius(G_r, eta, batch, **kw)
    try:
        eta_crit = critical_lr(G_r, batch, **kw)
    except ValueError:
        eta_crit = float("nan")
    kappa = kappa_plus(G_r, forget=G_f, alpha=alpha)
    F = np.concatenate([G_r, G_f])
    sharp = float(np.linalg.eigvalsh(F @ F.T)[-1] / F.shape[0])
    t_esc = float(np.log(K) / np.log(rho)) if rho > 1.0 else float("inf")
    escapes = rho > 1.0 and (horizon is None or t_esc <= horizon)
    return UnlearningPrediction(
        coherence=block_coherence(G_r, G_f), rho=float(rho),
        critical_lr=float(eta_crit), kappa_plus=float(kappa), sharpness=sharp,
        escape_time=t_esc, escapes=bool(escapes), alpha=alpha, eta=eta, batch=batch,
        forget_batch=forget_batch, scheme=scheme, escape_factor=K,
        horizon=float("inf") if horizon is None else float(horizon))


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
    W = np.asarray(W, dtype=float).reshape(2 * model.m, model.d)
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
