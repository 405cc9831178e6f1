"""Descent-ascent unlearning of trained nonlinear models (THEORY section 3).

Starting from trained weights ``W``, every step descends on a retain minibatch
and ascends on an independent forget minibatch,

    W <- W - eta [ (1-alpha) (1/B_r) sum_{i in batch_r} grad l_i
                  - alpha (1/B_f) sum_{j in batch_f} grad l_j ],

on the real network (not linearized), with the same Numba step bodies and
exact update forms as :mod:`simlab.dynamics.train`.

Escape (THEORY section 4, finite horizon): the run starts at the old minimum,
so the displacement ``delta_1 = W_1 - W_start`` of the first update plays the
role of ``delta_0``; the run has escaped at the first step ``t`` with
``||W_t - W_start||^2 >= K ||delta_1||^2`` (``K = escape_factor``, ``10^3`` by
the source's convention). Because the trained weights are not an exact
stationary point (logistic loss), that displacement also contains the drift
driven by the nonzero mean gradient, which grows ``||W_t - W_start||`` linearly
and alone reaches ``K = 10^3`` within ``~sqrt(K)`` steps. With
``perturbation=eps`` the run is instead paired with a twin started at
``W_start + delta_0`` (``||delta_0|| = eps ||W_start||``, Gaussian in the span of
the training patches, the invariant subspace of the dynamics) that sees the
same minibatches; the run has escaped at the first record step with
``||W'_t - W_t||^2 >= K ||delta_0||^2``. The twin separation removes the drift
and measures the homogeneous growth that ``rho(T)`` predicts, as long as the
twins stay on the same side of every ReLU kink: when one twin crosses a kink a
step before the other, the separation jumps by ``O(eta * gradient)`` for a step,
so ``eps`` must not be tiny for ReLU networks. Divergence (a pre-activation
non-finite or above ``1e100``) stops the run before the offending step, so every
reported number is finite.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import _streams
from .._validation import (
    check_alpha,
    check_batch,
    check_escape_factor,
    check_eta,
    check_forget_batch,
    check_int,
    check_positive,
    check_scheme,
    check_seed,
)
from ..data import SignalNoise, check_split
from ..models import kernels
from ..models.two_patch import check_model, check_model_data, loss_code
from . import train as _train

__all__ = ["TwinRun", "UnlearnResult", "membership_auc", "unlearn", "unlearn_twins"]



def membership_auc(member_losses, nonmember_losses):
    """AUC of the loss-threshold membership-inference attack.

    The attack calls a sample a member when its loss is low, so the AUC is
    ``P(l_nonmember > l_member) + P(tie) / 2`` over all pairs (Mann-Whitney).
    ``0.5`` means members are indistinguishable from held-out data.

    Examples
    --------
    >>> membership_auc([0.1, 0.2], [0.3, 0.4])
    1.0
    """
    from scipy.stats import rankdata

    a = np.asarray(member_losses, dtype=float)
    b = np.asarray(nonmember_losses, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("membership_auc needs at least one member and one "
                         "non-member loss")
    ranks = rankdata(np.concatenate([b, a]))
    u = ranks[: b.size].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


@dataclass(frozen=True, eq=False)
class UnlearnResult:
    """Outcome of one unlearning run.

    Attributes
    ----------
    W, W_start : ndarray
        Final and starting weights.
    steps : int
        Steps completed.
    escaped : bool
        ``||W_t - W_start||^2 >= K ||W_1 - W_start||^2`` at some step (or, with
        a ``perturbation``, the twin separation grew ``K``-fold).
    escape_step : int
        First such step (``-1`` if none).
    diverged : bool
        The run blew up numerically and was stopped before step
        ``diverge_step`` (``-1`` if it did not).
    diverge_step : int
    ref_dist : float
        ``||W_1 - W_start||`` (or ``||delta_0||`` with a perturbation).
    history : xarray.Dataset
        Per record step: ``dist`` (``||W_t - W_start||``), ``growth``
        (``dist^2 / ref_dist^2``, or the squared twin separation over
        ``||delta_0||^2``), ``forget_loss``, ``forget_acc``,
        ``retain_loss``, ``retain_acc``, ``test_loss``, ``test_acc`` and
        ``mia_auc`` (forget vs held-out test losses; ``nan`` without a test set).
        Accuracies are against the observed labels.
    """

    W: np.ndarray
    W_start: np.ndarray
    steps: int
    escaped: bool
    escape_step: int
    diverged: bool
    diverge_step: int
    ref_dist: float
    _records: dict = field(repr=False)
    _attrs: dict = field(repr=False)

    @cached_property
    def history(self):
        import xarray as xr

        r = self._records
        data = {k: ("step", np.asarray(v)) for k, v in r.items() if k != "step"}
        return xr.Dataset(data, coords={"step": np.asarray(r["step"], dtype=np.int64)},
                          attrs=dict(self._attrs))


def unlearn(model, W, data, forget_idx, *, alpha, eta, batch=None, forget_batch=None,
            steps, scheme="without", seed=0, escape_factor=1e3, retain_idx=None,
            test=None, loss="logistic", record_every=None, stop_on_escape=False,
            perturbation=None, method="auto"):
    """Descent-ascent unlearning from trained weights ``W`` (THEORY section 3).

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    W : ndarray
        Starting (trained) weights.
    data : SignalNoise
        The training set the model was trained on.
    forget_idx : array_like of int
        Indices of the forget set.
    alpha : float
        Ascent weight in ``[0, 1]``.
    eta : float
        Learning rate ``> 0``.
    batch : int, optional
        Retain batch size ``B_r`` (default: the whole retain set).
    forget_batch : int, optional
        Forget batch size ``B_f``. Default: the retain sampling fraction,
        ``max(1, round(B n_f / n_r))`` (the whole forget set when the retain
        batch is the whole retain set), as everywhere in simlab.
    steps : int
        Number of steps.
    scheme : {"without", "with", "bernoulli"}
        Sampling scheme of both minibatches (THEORY section 2).
    seed : int
        Seeds the retain and forget minibatch streams (independent).
    escape_factor : float
        ``K > 1`` of the escape criterion (module docstring).
    retain_idx : array_like of int, optional
        Retain indices (default: all samples not in ``forget``).
    test : SignalNoise, optional
        Held-out data for ``test_*`` metrics and the membership AUC.
    loss : {"logistic", "squared"}
    record_every : int, optional
        Default ``max(1, steps // 100)``; step 0, an early stop (escape with
        ``stop_on_escape`` or divergence) and the last step are always recorded.
    stop_on_escape : bool
        Stop at the escape step.
    perturbation : float, optional
        ``eps > 0``: judge escape by the separation of a perturbed twin run
        (module docstring; resolution ``record_every``). ``None`` (default):
        by the displacement from ``W_start`` relative to the first step.
    method : {"auto", "gram", "weight"}
        As in :func:`simlab.dynamics.train.train`.

    Returns
    -------
    UnlearnResult

    See Also
    --------
    simlab.predict.predict_unlearning : the Hessian-based prediction at ``W``.
    simlab.dynamics.linearized : the linearized dynamics.

    Examples
    --------
    >>> from simlab.data import signal_noise_pair
    >>> from simlab.models import CNN
    >>> from simlab.dynamics.train import train
    >>> tr, te = signal_noise_pair(20, 100, 50, mu_norm=5.0, seed=0)
    >>> model = CNN(50, 4)
    >>> W = train(model, tr, eta=0.1, steps=100).W
    >>> res = unlearn(model, W, tr, [0, 1], alpha=0.5, eta=0.1, steps=20, test=te)
    >>> float(res.history.dist[0]), res.steps
    (0.0, 20)
    """
    check_model_data(model, data)
    if test is not None:
        check_model_data(model, test, "test")
    Wk = model.kernel_weights(W).copy()
    n = data.n
    retain, forget = check_split(retain_idx, forget_idx, n)
    n_r, n_f = retain.size, forget.size
    alpha = check_alpha(alpha)
    eta = check_eta(eta, "eta")
    steps = check_int(steps, "steps", low=0)
    scheme = check_scheme(scheme)
    seed = check_seed(seed)
    lid = loss_code(loss)
    batch = n_r if batch is None else check_batch(batch, n_r, "batch")
    forget_batch = check_forget_batch(forget_batch, batch, n_r, n_f)
    K = check_escape_factor(escape_factor)
    record_every = (max(1, steps // 100) if record_every is None
                    else check_int(record_every, "record_every", low=1))
    method = _train._choose_method(method, n, [model.d], 1)

    Xp = data.X.reshape(2 * n, model.d)
    starts = [Wk]
    if perturbation is not None:
        eps = check_positive(perturbation, "perturbation")
        rng_p = np.random.default_rng([seed, _streams.UNLEARN_PERTURBATION])
        delta0 = rng_p.standard_normal((Wk.shape[0], 2 * n)) @ Xp
        scale = np.linalg.norm(Wk) or 1.0
        delta0 *= eps * scale / np.linalg.norm(delta0)
        starts.append(Wk + delta0)
        ref2 = float(np.sum(delta0 * delta0))
    n_run = len(starts)
    runner = _train._Runner(model.kernel_args, [Xp] * n_run,
                            np.repeat(data.y[None], n_run, axis=0),
                            starts, np.full(n_run, eta), lid, method,
                            escape_factor=K if perturbation is None else np.inf)
    marks = _train._schedule(steps, record_every, None)
    runner.test_setup([None if test is None else test.X.reshape(2 * test.n, test.d)]
                      + [None] * (n_run - 1), len(marks) + 1)
    rng_r = np.random.default_rng([seed, _streams.UNLEARN_RETAIN_BATCHES])
    rng_f = np.random.default_rng([seed, _streams.UNLEARN_FORGET_BATCHES])

    keys = ["step", "dist", "growth", "forget_loss", "forget_acc", "retain_loss",
            "retain_acc", "test_loss", "test_acc", "mia_auc"]
    rec = {k: [] for k in keys}
    twin_escape = [-1]

    def record(t):
        if rec["step"] and rec["step"][-1] == t:
            return
        f = runner.f_train()[0]
        lo = kernels.losses(f, data.y, lid)
        ok = data.y * f > 0
        d2 = max(runner.dist2(0), 0.0)
        rec["step"].append(t)
        rec["dist"].append(np.sqrt(d2))
        if perturbation is None:
            r2 = runner.track[0, 1]
            rec["growth"].append(d2 / r2 if r2 > 0 else 0.0)
        else:
            g = max(runner.sep2(0, 1), 0.0) / ref2
            rec["growth"].append(g)
            if twin_escape[0] < 0 and g >= K:
                twin_escape[0] = t
        rec["forget_loss"].append(float(lo[forget].mean()))
        rec["forget_acc"].append(float(ok[forget].mean()))
        rec["retain_loss"].append(float(lo[retain].mean()))
        rec["retain_acc"].append(float(ok[retain].mean()))
        ft = runner.f_test(0)
        if ft is None:
            rec["test_loss"].append(np.nan)
            rec["test_acc"].append(np.nan)
            rec["mia_auc"].append(np.nan)
        else:
            lt = kernels.losses(ft, test.y, lid)
            rec["test_loss"].append(float(lt.mean()))
            rec["test_acc"].append(float(np.mean(test.y * ft > 0)))
            rec["mia_auc"].append(membership_auc(lo[forget], lt))

    def escaped_at():
        return int(runner.track[0, 3]) if perturbation is None else twin_escape[0]

    record(0)
    live = np.ones(n_run, dtype=np.bool_)
    chunk = max(1, _train._CHUNK_ENTRIES // n)
    t = 0
    diverge_step = -1
    stop_kernel = stop_on_escape and perturbation is None
    for mark in marks:
        while t < mark:
            S = min(chunk, mark - t)
            w = np.zeros((S, n))
            if alpha < 1.0:
                w[:, retain] = (1.0 - alpha) * _train.batch_weights(
                    rng_r, S, n_r, batch, scheme)
            if alpha > 0.0:
                w[:, forget] = -alpha * _train.batch_weights(
                    rng_f, S, n_f, forget_batch, scheme)
            wts = np.repeat(w[None], n_run, axis=0)
            done = int(runner.advance(wts, S, t, live, stop_kernel).min())
            if done < S:
                t += done
                if not (stop_kernel and runner.track[0, 3] == t):
                    diverge_step = t
                break
            t += S
        if t < mark:          # stopped early: escape or divergence
            record(t)
            break
        if mark % record_every == 0 or mark == steps:
            record(mark)
            if stop_on_escape and escaped_at() >= 0:
                break
    esc = escaped_at()
    attrs = dict(model=repr(model), alpha=alpha, eta=eta, batch=batch,
                 forget_batch=forget_batch, scheme=scheme, loss=loss, seed=seed,
                 escape_factor=K, n_retain=n_r, n_forget=n_f, method=method,
                 criterion="displacement" if perturbation is None else "twin",
                 perturbation=np.nan if perturbation is None else eps,
                 escaped=int(esc >= 0), escape_step=esc,
                 diverged=int(diverge_step >= 0), diverge_step=diverge_step)
    ref = runner.track[0, 1] if perturbation is None else ref2
    return UnlearnResult(
        W=runner.weights(0).reshape(model.shape), W_start=Wk.reshape(model.shape),
        steps=t, escaped=esc >= 0, escape_step=esc, diverged=diverge_step >= 0,
        diverge_step=diverge_step, ref_dist=float(np.sqrt(ref)),
        _records=rec, _attrs=attrs)


@dataclass(frozen=True, eq=False)
class TwinRun:
    """One twin pair of :func:`unlearn_twins`.

    Descent-ascent unlearning of ``data`` from ``W`` and from ``W + delta``
    with the same minibatches (retain: all samples not in ``forget_idx``).

    Attributes
    ----------
    data : SignalNoise
    W : ndarray, shape ``model.shape``
        Start of the reference run (the trained weights).
    delta : ndarray, shape ``model.shape``
        Perturbation of the twin (nonzero).
    forget_idx : ndarray of int
    alpha, eta : float
        Ascent weight and learning rate.
    batch, forget_batch : int
        Retain and forget minibatch sizes.
    rng : numpy.random.Generator
        Draws this pair's minibatches (retain then forget weights per segment
        of ``check_every`` steps).
    """

    data: SignalNoise
    W: np.ndarray
    delta: np.ndarray
    forget_idx: np.ndarray
    alpha: float
    eta: float
    batch: int
    forget_batch: int
    rng: np.random.Generator


def unlearn_twins(model, runs, *, horizon, scheme="without", escape_factor=1e3,
                  check_every=10, loss="squared", method="auto"):
    """Escape of many twin unlearning runs in one compiled call.

    Every :class:`TwinRun` is unlearned twice on the real network, from ``W``
    and from ``W + delta``, with the same minibatches; all ``2 len(runs)``
    configurations advance together (``prange`` over them). A pair has escaped
    at the first check step ``t <= horizon`` with
    ``||W'_t - W_t||^2 >= escape_factor ||delta||^2``, or when either twin
    diverges numerically (a pre-activation non-finite or above ``1e100``);
    escaped pairs stop. This is the finite-horizon escape criterion of THEORY
    section 4 measured on the real network (a typical-behaviour question when
    scored by the majority of pairs).

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    runs : sequence of TwinRun
        Pairs on data sets with the same ``n`` (any parameters per pair).
    horizon : int
        Number of steps ``T``.
    scheme : {"without", "with", "bernoulli"}
    escape_factor : float
    check_every : int
        Steps between separation checks.
    loss : {"squared", "logistic"}
    method : {"auto", "gram", "weight"}

    Returns
    -------
    escaped : ndarray of bool, shape ``(len(runs),)``
    growth : ndarray of float, shape ``(len(runs),)``
        ``||W'_t - W_t||^2 / ||delta||^2`` at escape or at the horizon
        (``inf`` after a numerical blow-up).
    """
    check_model(model)
    if len(runs) == 0:
        raise ValueError("runs must not be empty")
    T = check_int(horizon, "horizon", low=1)
    every = check_int(check_every, "check_every", low=1)
    scheme = check_scheme(scheme)
    K = check_escape_factor(escape_factor)
    lid = loss_code(loss)
    n = runs[0].data.n
    W0s, Xps, ys, etas, ref2, splits = [], [], [], [], [], []
    for r in runs:
        check_model_data(model, r.data, "runs[].data")
        if r.data.n != n:
            raise ValueError(f"runs[].data: every run needs a data set with n={n}")
        W = model.kernel_weights(r.W)
        delta = model.kernel_weights(r.delta, "delta")
        ref = float(np.sum(delta * delta))
        if ref == 0.0:
            raise ValueError("delta must be nonzero")
        retain, forget = check_split(None, r.forget_idx, n)
        splits.append((retain, forget,
                       check_batch(r.batch, retain.size, "batch"),
                       check_batch(r.forget_batch, forget.size, "forget_batch"),
                       check_alpha(r.alpha)))
        Xp = r.data.X.reshape(2 * n, model.d)
        W0s += [W, W + delta]
        Xps += [Xp, Xp]
        ys += [r.data.y, r.data.y]
        eta = check_eta(r.eta)
        etas += [eta, eta]
        ref2.append(ref)
    k = len(runs)
    method = _train._choose_method(method, n, [model.d], 2 * k)
    runner = _train._Runner(model.kernel_args, Xps, np.stack(ys), W0s,
                            np.array(etas), lid, method)
    live = np.ones(2 * k, dtype=np.bool_)
    escaped = np.zeros(k, dtype=bool)
    growth = np.full(k, np.nan)
    t = 0
    while t < T and live.any():
        S = min(every, T - t)
        wts = np.zeros((2 * k, S, n))
        for j, (r, (retain, forget, B, Bf, alpha)) in enumerate(
                zip(runs, splits, strict=True)):
            wts[2 * j][:, retain] = (1.0 - alpha) * _train.batch_weights(
                r.rng, S, retain.size, B, scheme)
            wts[2 * j][:, forget] = -alpha * _train.batch_weights(
                r.rng, S, forget.size, Bf, scheme)
            wts[2 * j + 1] = wts[2 * j]
        done = runner.advance(wts, S, t, live)
        t += S
        for j in np.flatnonzero(live[0::2] | live[1::2]):
            if done[2 * j] < S or done[2 * j + 1] < S:      # numerical blow-up
                escaped[j] = True
                growth[j] = np.inf
            else:
                growth[j] = max(runner.sep2(2 * j, 2 * j + 1), 0.0) / ref2[j]
                escaped[j] = growth[j] >= K
            if escaped[j]:
                live[2 * j: 2 * j + 2] = False
    return escaped, growth
