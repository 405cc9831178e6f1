"""GD/SGD training of the nonlinear two-patch models (THEORY section 8).

:func:`train` runs one configuration, :func:`train_many` a stack of independent
configurations (data sets, dimensions, learning rates, seeds) in parallel across
cores with a ``prange`` driver. Both use the step bodies of
:mod:`simlab.dynamics._train_step` (compiled here for the CPU), in one of two
exact forms of the update:

* ``method="gram"``: filters stay in ``W_0 + span(training patches)``, so the
  state is the coefficient matrix ``C`` and the pre-activations ``Z = Z_0 + C G``
  with the patch Gram matrix ``G``; a step costs ``O(m B n)`` whatever ``d``.
* ``method="weight"``: the plain update of ``W``, ``O(m B d)`` per step.

Randomness (initialisation, minibatches) is drawn on the host from explicit
seeds and passed to the kernels as per-step sample weights, so both methods,
and any record schedule, give the same trajectory.

History records cost little: in Gram form the kernel itself stops at each
record step and keeps what the metrics need (``f`` from ``Z``, ``C``, and
``||W - W_0||^2`` from ``C`` and ``G``), so a run with many records is still
one call, and :class:`_History` turns a block of records into metrics with a
few vectorised calls, the same arithmetic per record as one at a time.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import _streams
from .._jit import compile_family
from .._validation import (
    check_batch,
    check_eta,
    check_int,
    check_scheme,
    check_seed,
)
from ..data import SignalNoise
from ..models import kernels as K
from ..models.two_patch import (
    TwoPatchModel,
    check_model,
    check_model_data,
    kernel_sharpness,
    loss_code,
)
from . import _train_step as TS

__all__ = ["train", "train_many", "TrainResult", "memorization_scores",
           "batch_weights"]

_METHODS = ("auto", "gram", "weight")


#: The training step bodies and drivers compiled for the CPU (lazily).
_cpu = compile_family(TS.bodies(TS.DEVICE_FUNCTIONS + TS.CPU_FUNCTIONS), "cpu",
                      drivers=TS.bodies(TS.DRIVERS))

#: Largest number of ``(step, sample)`` weights drawn per segment and config stack.
_CHUNK_ENTRIES = 4_000_000


# --------------------------------------------------------------------------
# minibatch weights (host-side randomness)
# --------------------------------------------------------------------------

def batch_weights(rng, steps, n, batch, scheme):
    """Per-step sample weights of one set, shape ``(steps, n)``.

    Row ``t`` holds ``multiplicity_i / B`` for the minibatch of step ``t``, so that
    ``sum_i w_ti grad l_i`` is the minibatch gradient of THEORY section 2:

    - ``"without"``: a uniform ``B``-subset;
    - ``"with"``: ``B`` uniform draws with replacement (multiplicities add up);
    - ``"bernoulli"``: each sample kept independently with probability ``B/n``,
      the sum divided by ``B``.

    Consumes the generator sequentially, so splitting ``steps`` into chunks
    gives the same weights.
    """
    w = np.zeros((steps, n))
    if scheme == "without":
        idx = np.argpartition(rng.random((steps, n)), batch - 1, axis=1)[:, :batch]
        np.put_along_axis(w, idx, 1.0 / batch, axis=1)
    elif scheme == "with":
        idx = rng.integers(0, n, size=(steps, batch))
        rows = np.repeat(np.arange(steps), batch)
        np.add.at(w, (rows, idx.ravel()), 1.0 / batch)
    else:
        w[rng.random((steps, n)) < batch / n] = 1.0 / batch
    return w


# --------------------------------------------------------------------------
# the stacked state shared by train and unlearn
# --------------------------------------------------------------------------

class _Runner:
    """State of a stack of configurations sharing ``n``, ``J``, ``m``, ``q``.

    Parameters
    ----------
    kargs : tuple ``(J, m, act_id, q)``
    Xps : list of (2n, d_c) training patches
    ys : (n_cfg, n) labels used by the loss
    W0s : list of (K, d_c) starting weights
    etas : (n_cfg,) learning rates
    lid : loss id
    method : "gram" or "weight"
    escape_factor : float
    driver : callable, optional
        Replaces the Gram-form stack driver ``gram_run_many`` (same
        arguments), e.g. the CUDA launcher of :mod:`simlab.dynamics.gpu_train`;
        it then also runs a single configuration.
    """

    def __init__(self, kargs, Xps, ys, W0s, etas, lid, method, escape_factor=np.inf,
                 driver=None):
        if driver is not None and method != "gram":
            raise ValueError("a custom driver needs method='gram'")
        self.kargs = kargs
        self.lid = lid
        self.method = method
        self.driver = driver
        self.Xps = Xps
        self.W0s = W0s
        self.y = np.ascontiguousarray(ys, dtype=np.float64)
        self.eta = np.ascontiguousarray(etas, dtype=np.float64)
        n_cfg = len(Xps)
        Kf = W0s[0].shape[0]
        n2 = Xps[0].shape[0]
        self.C = np.zeros((n_cfg, Kf, n2))
        self.track = np.zeros((n_cfg, 4))
        self.track[:, 2] = escape_factor
        self.track[:, 3] = -1.0
        if method == "gram":
            self.G = np.stack([K.abt(X, X) for X in Xps])
            self.Z0 = np.stack([K.abt(W, X) for W, X in zip(W0s, Xps, strict=True)])
            self.Z = self.Z0.copy()
        else:
            dmax = max(X.shape[1] for X in Xps)
            self.dmax = dmax
            self.Xpad = np.zeros((n_cfg, n2, dmax))
            self.W0pad = np.zeros((n_cfg, Kf, dmax))
            for c, (W, X) in enumerate(zip(W0s, Xps, strict=True)):
                self.Xpad[c, :, : X.shape[1]] = X
                self.W0pad[c, :, : X.shape[1]] = W
            self.W = self.W0pad.copy()

    @property
    def n_cfg(self):
        return self.C.shape[0]

    def advance(self, wts, nsteps, t0, live, stop_on_escape=False):
        """Run ``nsteps`` steps on the live configurations; return steps done.

        A single configuration calls the serial kernel directly (no thread
        launch).
        """
        done = np.zeros(self.n_cfg, dtype=np.int64)
        J, m, act_id, q = self.kargs
        if self.method == "gram":
            args = (self.Z, self.C, self.G, self.Z0)
            one, many = _cpu.gram_run, self.driver or _cpu.gram_run_many
        else:
            args = (self.W, self.C, self.Xpad, self.W0pad)
            one, many = _cpu.weight_run, _cpu.weight_run_many
        if self.n_cfg == 1 and self.driver is None:
            if live[0]:
                done[0] = one(*(a[0] for a in args), wts[0], nsteps, self.eta[0],
                              self.y[0], J, m, act_id, q, self.lid, self.track[0],
                              t0, stop_on_escape)
        else:
            many(*args, wts, nsteps, self.eta, self.y, J, m, act_id, q, self.lid,
                 self.track, t0, stop_on_escape, live, done)
        return done

    def advance_recording(self, wts, nsteps, t0, live, rec_at, F, Cs, D2):
        """:meth:`advance` (Gram form, CPU driver) that records on the way.

        After global step ``t0 + rec_at[r]`` configuration ``c`` stores its
        training outputs in ``F[c, r]``, its coefficients in ``Cs[c, r]`` and
        ``||W - W_0||^2`` in ``D2[c, r]`` (see ``_train_step.gram_record``).
        """
        done = np.zeros(self.n_cfg, dtype=np.int64)
        J, m, act_id, q = self.kargs
        if self.n_cfg == 1:
            if live[0]:
                done[0] = _cpu.gram_record(
                    self.Z[0], self.C[0], self.G[0], self.Z0[0], wts[0], nsteps,
                    self.eta[0], self.y[0], J, m, act_id, q, self.lid, self.track[0],
                    t0, rec_at, F[0], Cs[0], D2[0])
        else:
            _cpu.gram_record_many(self.Z, self.C, self.G, self.Z0, wts, nsteps,
                                  self.eta, self.y, J, m, act_id, q, self.lid,
                                  self.track, t0, rec_at, F, Cs, D2, live, done)
        return done

    def weights(self, c):
        """Current weights ``(K, d_c)`` of configuration ``c``."""
        if self.method == "gram":
            return K.add_ab(self.W0s[c], self.C[c], self.Xps[c])
        return self.W[c, :, : self.Xps[c].shape[1]].copy()

    def preacts(self):
        """Training pre-activations ``(n_cfg, K, 2n)``."""
        if self.method == "gram":
            return self.Z
        return np.matmul(self.W, self.Xpad.transpose(0, 2, 1))

    def f_train(self):
        J, m, act_id, q = self.kargs
        Z = np.ascontiguousarray(self.preacts())
        if self.n_cfg == 1:
            return K.f_all(Z[0], J, m, act_id, q)[None]
        return _cpu.f_many(Z, J, m, act_id, q)

    def test_setup(self, Xpts, n_records):
        """Prepare the test pre-activations for ``n_records`` evaluations.

        Gram form can cache ``W_0 X_t^T`` and ``Xp X_t^T`` (``(2n + K) d`` per
        test patch once, then ``K 2n`` per record) instead of recomputing
        ``W X_t^T`` (``K d`` per record); the cheaper route is taken.
        """
        self._test = []
        Kf, n2 = self.C.shape[1], self.C.shape[2]
        for c, Xt in enumerate(Xpts):
            if Xt is None:
                self._test.append(None)
                continue
            d = Xt.shape[1]
            cached = (n2 + Kf) * d + n_records * Kf * n2
            if self.method == "gram" and cached < n_records * Kf * d:
                self._test.append(("gram", K.abt(self.W0s[c], Xt),
                                   K.abt(self.Xps[c], Xt)))
            else:
                self._test.append(("direct", Xt))

    def f_test(self, c, C=None):
        """Test outputs of configuration ``c``, now or (Gram form) at the
        coefficients ``C``."""
        t = self._test[c]
        if t is None:
            return None
        J, m, act_id, q = self.kargs
        C = self.C[c] if C is None else C
        if t[0] == "gram":
            Zt = K.add_ab(t[1], C, t[2])
        elif self.method == "gram":
            Zt = K.abt(K.add_ab(self.W0s[c], C, self.Xps[c]), t[1])
        else:
            Zt = K.abt(self.weights(c), t[1])
        return K.f_all(np.ascontiguousarray(Zt), J, m, act_id, q)

    def sep2(self, a, b):
        """Exact ``||W_b - W_a||^2`` between two configurations on the same data."""
        if self.method != "gram":
            return float(np.sum((self.W[b] - self.W[a]) ** 2))
        D0 = self.W0s[b] - self.W0s[a]
        P = K.abt(D0, self.Xps[a])
        dC = self.C[b] - self.C[a]
        return float(np.sum(D0 * D0) + 2.0 * np.sum(dC * P)
                     + np.einsum("ik,kl,il->", dC, self.G[a], dC))

    def dist2(self, c):
        """Exact ``||W - W_0||^2`` of configuration ``c``."""
        if self.method == "gram":
            out = np.empty(1)
            _cpu.quad_records(self.C[c][None], self.G[c], 1, out)
            return float(out[0])
        return float(np.sum((self.W[c] - self.W0pad[c]) ** 2))


def _choose_method(method, n, ds, n_cfg):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method != "auto":
        return method
    gram_bytes = 8 * (2 * n) ** 2 * n_cfg
    return "gram" if n <= 2 * min(ds) and gram_bytes <= 2**31 else "weight"


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def _decomposition(C, sig, nsq, J, m):
    """``gamma (J, m)``, ``rho (J, m, n)`` from patch coefficients ``C (K, 2n)``."""
    signs = np.repeat([1.0, -1.0][:J], m)
    gamma = (signs * (C @ sig)).reshape(J, m)
    rho = (C[:, 1::2] * nsq).reshape(J, m, -1)
    return gamma, rho


class _History:
    """Per-configuration history records, computed a block of records at a time.

    A record is a snapshot of what the metrics need: the training outputs
    ``f``, the patch coefficients ``C`` (signal/noise decomposition, and the
    test outputs in Gram form), ``||W - W_0||^2`` and, when the weights are not
    in Gram form, the test outputs. The metrics of a block are computed in a few
    vectorised NumPy calls, each the same per-record arithmetic as one record at
    a time, so the numbers do not depend on how records are grouped.
    """

    _KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_acc_clean",
             "gamma_max", "rho_max", "rho_min", "dist")

    def __init__(self, runner, datasets, tests, lid, sig, nsq, J, m, with_sharpness):
        self.runner = runner
        self.datasets = datasets
        self.tests = tests
        self.lid = lid
        self.sig = sig
        self.nsq = nsq
        self.signs = np.repeat([1.0, -1.0][:J], m)
        self.with_sharpness = with_sharpness
        n_cfg = len(datasets)
        self._blocks = [{k: [] for k in ("step",) + self._KEYS} for _ in range(n_cfg)]
        self._sharp = [([], []) for _ in range(n_cfg)]

    def take(self, c, t, f):
        """Record configuration ``c`` at step ``t`` from the runner's state
        (``f``: its current training outputs)."""
        runner = self.runner
        C = runner.C[c]
        ft = None
        if self.tests[c] is not None:
            ft = runner.f_test(c)[None]
        self.add(c, np.array([t]), f[None], C[None], np.array([runner.dist2(c)]), ft)

    def add(self, c, steps, F, Cs, D2, FT=None):
        """Records of configuration ``c`` at ``steps`` ``(R,)`` from the outputs
        ``F (R, n)``, coefficients ``Cs (R, K, 2n)`` and ``D2 (R,)`` (and test
        outputs ``FT``, computed from ``Cs`` when not given)."""
        R = len(steps)
        if R == 0:
            return
        b = self._blocks[c]
        y = self.datasets[c].y
        n = y.shape[0]
        b["step"].append(np.asarray(steps, dtype=np.int64))
        b["train_loss"].append(
            K.losses(F.ravel(), np.tile(y, R), self.lid).reshape(R, n).mean(axis=1))
        b["train_acc"].append(np.mean(y * F > 0, axis=1))
        te = self.tests[c]
        if te is None:
            nan = np.full(R, np.nan)
            b["test_loss"].append(nan)
            b["test_acc"].append(nan)
            b["test_acc_clean"].append(nan)
        else:
            if FT is None:
                FT = np.stack([self.runner.f_test(c, Cs[r]) for r in range(R)])
            nt = te.y.shape[0]
            b["test_loss"].append(K.losses(FT.ravel(), np.tile(te.y, R), self.lid)
                                  .reshape(R, nt).mean(axis=1))
            b["test_acc"].append(np.mean(te.y * FT > 0, axis=1))
            b["test_acc_clean"].append(np.full(R, np.nan) if te.y_clean is None
                                       else np.mean(te.y_clean * FT > 0, axis=1))
        # gamma, rho: _decomposition of each record, reduced
        b["gamma_max"].append((self.signs * (Cs @ self.sig[c])).max(axis=1))
        rho = (Cs[:, :, 1::2] * self.nsq[c]).reshape(R, -1)
        b["rho_max"].append(rho.max(axis=1))
        b["rho_min"].append(rho.min(axis=1))
        D2 = np.asarray(D2, dtype=np.float64)
        b["dist"].append(np.sqrt(np.where(D2 < 0.0, 0.0, D2)))

    def sharpness(self, c, t, value):
        self._sharp[c][0].append(t)
        self._sharp[c][1].append(value)

    def records(self, c):
        """The records of configuration ``c``: name -> 1-D array."""
        b = self._blocks[c]
        out = {k: np.concatenate(v) for k, v in b.items()}
        if self.with_sharpness:
            out["sharpness_step"] = np.asarray(self._sharp[c][0], dtype=np.int64)
            out["sharpness"] = np.asarray(self._sharp[c][1], dtype=np.float64)
        return out


def memorization_scores(rho, y):
    """Per-sample noise memorization ``max_r y_i s_j rho_{j,r,i}``, ``j`` = own class.

    For the CNN this is the largest coefficient of ``xi_i`` in the filters of the
    sample's own (observed) class; for the linear model ``y_i rho_i``.

    Parameters
    ----------
    rho : ndarray (J, m, n)
    y : ndarray (n,)
    """
    rho = np.asarray(rho, dtype=float)
    y = np.asarray(y, dtype=float)
    if rho.shape[0] == 1:
        return (y * rho[0]).max(axis=0)
    own = np.where(y > 0, 0, 1)
    return rho[own, :, np.arange(y.size)].max(axis=1)


# --------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TrainResult:
    """Outcome of one training run.

    Attributes
    ----------
    W, W0 : ndarray
        Final and initial weights (model shape).
    coef : ndarray (J, m, n, 2)
        ``W - W0 = sum_{i,p} coef[..., i, p] X[i, p]`` filter by filter.
    gamma : ndarray (J, m)
        Signal-learning coefficients at the end (THEORY section 8; ``nan`` when
        ``mu`` is unknown).
    rho : ndarray (J, m, n)
        Noise-memorization coefficients at the end.
    steps : int
        Steps completed (``< requested`` only when the run diverged).
    diverged : bool
        A pre-activation became non-finite or exceeded ``1e100``; the run
        stopped before that step and every reported number is finite.
    history : xarray.Dataset
        Per record step: ``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc``, ``test_acc_clean`` (test accuracy against clean labels),
        ``gamma_max``, ``rho_max``, ``rho_min``, ``dist`` (``||W - W0||``) and,
        on its own coordinate ``sharpness_step``, ``sharpness``
        (``lambda_max`` of the training-loss Hessian).
    """

    W: np.ndarray
    W0: np.ndarray
    coef: np.ndarray
    gamma: np.ndarray
    rho: np.ndarray
    steps: int
    diverged: bool
    y: np.ndarray = field(repr=False)
    _records: dict = field(repr=False)
    _attrs: dict = field(repr=False)

    @property
    def memorization(self):
        """Per-sample memorization score (see :func:`memorization_scores`)."""
        return memorization_scores(self.rho, self.y)

    @cached_property
    def history(self):
        import xarray as xr

        r = self._records
        data = {k: ("step", np.asarray(v)) for k, v in r.items()
                if k not in ("step", "sharpness_step", "sharpness")}
        coords = {"step": np.asarray(r["step"], dtype=np.int64)}
        if "sharpness" in r:
            data["sharpness"] = ("sharpness_step", np.asarray(r["sharpness"]))
            coords["sharpness_step"] = np.asarray(r["sharpness_step"], dtype=np.int64)
        return xr.Dataset(data, coords=coords, attrs=dict(self._attrs))


# --------------------------------------------------------------------------
# public drivers
# --------------------------------------------------------------------------

def _check_model_data(models, datasets, tests):
    if isinstance(datasets, SignalNoise):
        raise ValueError("datasets must be a sequence of SignalNoise (use train() "
                         "for one data set)")
    datasets = list(datasets)
    if not datasets:
        raise ValueError("datasets must not be empty")
    if isinstance(models, TwoPatchModel):
        models = [models] * len(datasets)
    elif not isinstance(models, list | tuple):
        check_model(models)             # a clear error for None, a string, ...
    models = list(models)
    if len(models) != len(datasets):
        raise ValueError(f"model: got {len(models)} models for {len(datasets)} "
                         "data sets")
    ref = models[0]
    for mod in models:
        check_model(mod)
        if (mod.J, mod.m, mod.act_id, mod.q) != (ref.J, ref.m, ref.act_id, ref.q):
            raise ValueError("model: all configurations must share the "
                             "architecture (classes, m, activation, q)")
    n = None
    for k, (mod, data) in enumerate(zip(models, datasets, strict=True)):
        check_model_data(mod, data, f"data (entry {k})")
        if n is not None and data.n != n:
            raise ValueError("data: all configurations must have the same n")
        n = data.n
    if tests is None:
        tests = [None] * len(datasets)
    elif isinstance(tests, SignalNoise):
        tests = [tests] * len(datasets)
    tests = list(tests)
    if len(tests) != len(datasets):
        raise ValueError(f"test: got {len(tests)} test sets for {len(datasets)} "
                         "data sets")
    for k, (mod, t) in enumerate(zip(models, tests, strict=True)):
        if t is not None and (not isinstance(t, SignalNoise) or t.d != mod.d):
            raise ValueError(f"test must be a SignalNoise with d={mod.d} (entry {k})")
    return models, datasets, tests


def _per_config(value, n_cfg, name, check):
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    if arr.size == 1:
        arr = np.repeat(arr, n_cfg)
    if arr.size != n_cfg:
        raise ValueError(f"{name} must be a scalar or have one entry per "
                         f"configuration ({n_cfg}), got {arr.size}")
    return [check(v, name) for v in arr]


def train(model, data, *, eta, steps, test=None, W0=None, sigma0=0.01, batch=None,
          scheme="without", loss="logistic", seed=0, record_every=None,
          sharpness_every=None, method="auto"):
    """Train ``model`` on ``data`` by full-batch GD or minibatch SGD.

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    data : SignalNoise
        Training set.
    eta : float
        Learning rate ``> 0``.
    steps : int
        Number of steps ``>= 0``.
    test : SignalNoise, optional
        Held-out set for ``test_*`` metrics (``nan`` without it).
    W0 : ndarray, optional
        Initial weights; default ``model.init(sigma0, seed)``.
    sigma0 : float
        Initialisation scale when ``W0`` is not given.
    batch : int, optional
        Minibatch size ``B``; ``None`` is full-batch GD.
    scheme : {"without", "with", "bernoulli"}
        Minibatch sampling (THEORY section 2); ignored for GD.
    loss : {"logistic", "squared"}
    seed : int
        Seeds the initialisation (``model.init(sigma0, seed)``) and, through an
        independent stream, the minibatches.
    record_every : int, optional
        Record metrics every this many steps (default ``max(1, steps // 100)``);
        step 0 and the last step are always recorded.
    sharpness_every : int, optional
        Also record ``lambda_max(H)`` every this many steps (Lanczos on
        Hessian-vector products); off by default.
    method : {"auto", "gram", "weight"}
        Exact update form (module docstring); ``auto`` picks ``gram`` when
        ``n <= 2 d``.

    Returns
    -------
    TrainResult

    See Also
    --------
    train_many : many configurations in parallel.
    simlab.dynamics.unlearn.unlearn : descent-ascent from the trained weights.

    Notes
    -----
    THEORY section 8 (model, loss, signal/noise decomposition) and section 10
    (sharpness tracking).

    Examples
    --------
    >>> from simlab.data import signal_noise_pair
    >>> from simlab.models import CNN
    >>> tr, te = signal_noise_pair(20, 100, 50, mu_norm=5.0, seed=0)
    >>> res = train(CNN(50, 4), tr, test=te, eta=0.1, steps=50)
    >>> bool(res.history.train_loss[-1] < res.history.train_loss[0])
    True
    """
    return train_many(model, [data], tests=None if test is None else [test],
                      eta=eta, steps=steps, W0=None if W0 is None else [W0],
                      sigma0=sigma0, batch=batch, scheme=scheme, loss=loss,
                      seeds=[seed], record_every=record_every,
                      sharpness_every=sharpness_every, method=method)[0]


def train_many(model, datasets, *, eta, steps, tests=None, W0=None, sigma0=0.01,
               batch=None, scheme="without", loss="logistic", seeds=0,
               record_every=None, sharpness_every=None, method="auto"):
    """Train many independent configurations in parallel (``prange`` over them).

    Parameters
    ----------
    model : model or sequence of models
        One model for all, or one per data set (dimensions may differ; the
        architecture must not).
    datasets : sequence of SignalNoise
        Training sets, all with the same ``n``.
    eta : float or sequence of float
        One learning rate or one per configuration.
    tests : SignalNoise or sequence, optional
        Held-out sets (one per configuration).
    W0 : sequence of ndarray, optional
        Initial weights per configuration.
    seeds : int or sequence of int
        Per-configuration seeds (a single int is used for every configuration,
        which gives common initialisations across, e.g., a signal sweep).
    steps, sigma0, batch, scheme, loss, record_every, sharpness_every, method
        As in :func:`train`.

    Returns
    -------
    list of TrainResult
        In the order of ``datasets``; identical to separate :func:`train` calls.
    """
    return _train_many(model, datasets, eta=eta, steps=steps, tests=tests, W0=W0,
                       sigma0=sigma0, batch=batch, scheme=scheme, loss=loss,
                       seeds=seeds, record_every=record_every,
                       sharpness_every=sharpness_every, method=method)


def _train_many(model, datasets, *, eta, steps, tests, W0, sigma0, batch, scheme,
                loss, seeds, record_every, sharpness_every, method, driver=None):
    """:func:`train_many`; ``driver`` replaces the Gram-form stack driver (see
    :class:`_Runner`; only with ``method="gram"``)."""
    models, datasets, tests = _check_model_data(model, datasets, tests)
    n_cfg = len(datasets)
    n = datasets[0].n
    lid = loss_code(loss)
    steps = check_int(steps, "steps", low=0)
    etas = np.array(_per_config(eta, n_cfg, "eta", lambda v, nm: check_eta(v, nm)))
    seeds = _per_config(seeds, n_cfg, "seeds", lambda v, nm: check_seed(v, nm))
    scheme = check_scheme(scheme)       # checked even when GD does not sample
    if batch is not None:
        batch = check_batch(batch, n)
    record_every = (max(1, steps // 100) if record_every is None
                    else check_int(record_every, "record_every", low=1))
    if sharpness_every is not None:
        sharpness_every = check_int(sharpness_every, "sharpness_every", low=1)
    if W0 is None:
        W0 = [mod.init(sigma0, s) for mod, s in zip(models, seeds, strict=True)]
    else:
        W0 = list(W0)
        if len(W0) != n_cfg:
            raise ValueError(f"W0 must hold one array per configuration ({n_cfg})")
    W0k = [mod.kernel_weights(w, "W0").copy()
           for mod, w in zip(models, W0, strict=True)]
    method = _choose_method(method, n, [m.d for m in models], n_cfg)
    kargs = models[0].kernel_args
    Xps = [d.X.reshape(2 * n, d.d) for d in datasets]
    runner = _Runner(kargs, Xps, np.stack([d.y for d in datasets]), W0k, etas, lid,
                     method, driver=driver)
    marks = _schedule(steps, record_every, sharpness_every)
    runner.test_setup([None if t is None else t.X.reshape(2 * t.n, t.d)
                       for t in tests], len(marks) + 1)
    sig = [np.full(2 * n, np.nan) if d.mu is None else Xp @ d.mu
           for d, Xp in zip(datasets, Xps, strict=True)]
    nsq = [np.einsum("ij,ij->i", d.noise, d.noise) for d in datasets]
    J, m = kargs[0], kargs[1]

    book = _History(runner, datasets, tests, lid, sig, nsq, J, m,
                    sharpness_every is not None)

    def record_sharpness(c, t):
        Wc = np.ascontiguousarray(runner.weights(c))
        book.sharpness(c, t, kernel_sharpness(Wc, Xps[c], datasets[c].y, kargs,
                                              lid, 1e-10, 0))

    # The CPU Gram-form kernel records on its own way through a segment, so the
    # host stops only where it has work (sharpness) and per chunk of minibatch
    # weights or of records; otherwise it stops at every mark and records.
    inside = method == "gram" and driver is None
    is_rec = {mk for mk in marks if mk % record_every == 0 or mk == steps}
    is_sharp = ({mk for mk in marks if mk % sharpness_every == 0 or mk == steps}
                if sharpness_every is not None else set())
    stops = sorted(is_sharp | {steps}) if inside and steps > 0 else marks
    rec_marks = np.array(sorted(is_rec), dtype=np.int64)
    if inside:
        Kf, n2 = runner.C.shape[1], runner.C.shape[2]
        cap = max(1, min(len(rec_marks), _CHUNK_ENTRIES // (n_cfg * Kf * n2)))
        F = np.empty((n_cfg, cap, n))
        Cs = np.empty((n_cfg, cap, Kf, n2))
        D2 = np.empty((n_cfg, cap))

    rngs = [np.random.default_rng([s, _streams.TRAIN_BATCHES]) for s in seeds]
    live = np.ones(n_cfg, dtype=np.bool_)
    stopped = np.full(n_cfg, steps, dtype=np.int64)
    chunk = max(1, _CHUNK_ENTRIES // (n * n_cfg))
    t = 0
    fcache = runner.f_train()
    for c in range(n_cfg):
        book.take(c, 0, fcache[c])
        if sharpness_every is not None:
            record_sharpness(c, 0)
    for stop in stops:
        while t < stop and live.any():
            S = min(chunk, stop - t)
            if inside:
                lo = np.searchsorted(rec_marks, t, side="right")
                hi = np.searchsorted(rec_marks, t + S, side="right")
                if hi - lo > cap:
                    hi = lo + cap
                    S = int(rec_marks[hi - 1]) - t
                rec_at = rec_marks[lo:hi] - t
            if batch is None:
                wts = np.full((n_cfg, 1, n), 1.0 / n)
            else:
                wts = np.stack([batch_weights(r, S, n, batch, scheme) for r in rngs])
            if inside:
                done = runner.advance_recording(wts, S, t, live, rec_at, F, Cs, D2)
                for c in np.flatnonzero(live):
                    k = np.searchsorted(rec_at, done[c], side="right")
                    book.add(c, t + rec_at[:k], F[c, :k], Cs[c, :k], D2[c, :k])
            else:
                done = runner.advance(wts, S, t, live)
            ended = np.flatnonzero(live & (done < S))
            if ended.size:
                fcache = runner.f_train()
            for c in ended:
                live[c] = False
                stopped[c] = t + done[c]
                book.take(c, int(stopped[c]), fcache[c])
            t += S
        if not live.any():
            break
        if not inside and stop in is_rec:
            fcache = runner.f_train()
            for c in np.flatnonzero(live):
                book.take(c, stop, fcache[c])
        if stop in is_sharp:
            for c in np.flatnonzero(live):
                record_sharpness(c, stop)
    recs = [book.records(c) for c in range(n_cfg)]

    results = []
    for c, mod in enumerate(models):
        g, rh = _decomposition(runner.C[c], sig[c], nsq[c], J, m)
        attrs = dict(model=repr(mod), eta=float(etas[c]), steps=steps,
                     batch=-1 if batch is None else batch,
                     scheme="gd" if batch is None else scheme, loss=loss,
                     seed=seeds[c], method=method,
                     diverged=int(stopped[c] < steps), steps_done=int(stopped[c]))
        results.append(TrainResult(
            W=runner.weights(c).reshape(mod.shape), W0=W0k[c].reshape(mod.shape),
            coef=runner.C[c].reshape(J, m, n, 2).copy(), gamma=g, rho=rh,
            steps=int(stopped[c]), diverged=bool(stopped[c] < steps),
            y=datasets[c].y, _records=recs[c], _attrs=attrs))
    return results


def _schedule(steps, record_every, sharpness_every):
    """Sorted step marks (excluding 0) where something is recorded."""
    marks = set(range(record_every, steps + 1, record_every))
    if sharpness_every is not None:
        marks |= set(range(sharpness_every, steps + 1, sharpness_every))
    if steps > 0:
        marks.add(steps)
    return sorted(marks)
