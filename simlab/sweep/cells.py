"""Cell experiments: what one grid point of a sweep computes.

Each cell experiment declares its parameters (type, allowed values), their
defaults (``None`` = required), the metrics it returns, and
``evaluate(params_list, seeds, backend) -> {metric: ndarray}`` which computes a
whole batch of cells at once (so a batch is one compiled call, not one per cell).
Backends: ``"cpu"`` (Numba ``prange``) and ``"cuda"`` (numba-cuda kernels with
the same step bodies); the Dask backend ships batches of ``"cpu"`` work.
"""

import importlib

import numpy as np

from ..curvature import coherence_dial, random_rank_one, sharpness
from ..dynamics.backends import get_kernel
from ..stability import critical_lr, spectral_radius
from ..theory import dial_critical_lr, dial_spectral_radius

SCHEMES = ("bernoulli", "with", "without")


_MC_METRICS = ("escape_fraction", "lyapunov_median", "ms_growth_mc")


def _simulate(configs, p0, backend):
    """Monte-Carlo metrics of a batch sharing ``steps``/``trajectories``/``K``
    (``steps = 0`` skips the simulation: NaN)."""
    if p0["steps"] == 0:
        return {m: np.full(len(configs), np.nan) for m in _MC_METRICS}
    res = get_kernel("linearized_grid", backend)(
        configs, steps=p0["steps"], trajectories=p0["trajectories"],
        escape_factor=p0["escape_factor"], record_every=max(1, p0["steps"] // 50))
    return {
        "escape_fraction": np.array([r.escape_fraction for r in res]),
        "lyapunov_median": np.array([np.median(r.lyapunov) for r in res]),
        "ms_growth_mc": np.array([r.ms_growth for r in res]),
    }


class LinearizedDial:
    """Linearized SGD/unlearning on the coherence-dial family (THEORY 7).

    Retain and forget are both the dial family (the source's Hessian test);
    ``alpha = 0`` is SGD. Metrics: exact ``rho`` and ``critical_lr`` (closed
    form), Monte-Carlo escape fraction, median Lyapunov exponent, MC growth.
    """

    PARAMS = {"n": (int, None), "s": (int, None), "batch": (int, None),
              "forget_batch": (int, None), "eta": (float, None),
              "alpha": (float, None), "scheme": (str, SCHEMES),
              "steps": (int, None), "trajectories": (int, None),
              "escape_factor": (float, None)}
    DEFAULTS = {"n": None, "s": None, "batch": None, "forget_batch": 0,
                "eta": None, "alpha": 0.0, "scheme": "without", "steps": 1000,
                "trajectories": 10, "escape_factor": 1e3}
    METRICS = ("rho", "critical_lr", "escape_fraction", "lyapunov_median",
               "ms_growth_mc")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        configs, rho, eta_c = [], [], []
        for p in params_list:
            H = coherence_dial(p["n"], p["s"])
            fb = p["forget_batch"] or p["batch"]
            cfg = dict(retain=H, eta=p["eta"], batch=p["batch"], scheme=p["scheme"])
            if p["alpha"]:
                cfg.update(forget=H, forget_batch=fb, alpha=p["alpha"])
            configs.append(cfg)
            kw = dict(scheme=p["scheme"], alpha=p["alpha"], forget_batch=fb)
            rho.append(dial_spectral_radius(p["n"], p["s"], p["eta"], p["batch"], **kw))
            eta_c.append(dial_critical_lr(p["n"], p["s"], p["batch"], **kw))
        for cfg, s in zip(configs, seeds):
            cfg["seed"] = int(s)
        out = {"rho": np.array(rho), "critical_lr": np.array(eta_c)}
        out.update(_simulate(configs, params_list[0], backend))
        return out

    @staticmethod
    def batch_key(p):
        """Cells with equal keys can share one simulator call."""
        return (p["steps"], p["trajectories"], p["escape_factor"])


class LinearizedRandom:
    """Linearized SGD on a random Gaussian rank-one family, general operator.

    ``eta = eta_rel * 2 / lambda_max(H)`` so that ``eta_rel = 1`` is the GD
    threshold. The family is drawn from ``family_seed`` (not the cell seed), so
    replicates share the family and differ in the Monte Carlo.
    """

    PARAMS = {"n": (int, None), "p": (int, None), "batch": (int, None),
              "eta_rel": (float, None), "scheme": (str, SCHEMES),
              "family_seed": (int, None), "steps": (int, None),
              "trajectories": (int, None), "escape_factor": (float, None)}
    DEFAULTS = {"n": None, "p": None, "batch": None, "eta_rel": None,
                "scheme": "without", "family_seed": 0, "steps": 1000,
                "trajectories": 10, "escape_factor": 1e3}
    METRICS = ("rho", "critical_lr_rel", "escape_fraction", "lyapunov_median",
               "ms_growth_mc")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        configs, rho, crit = [], [], []
        for p, s in zip(params_list, seeds):
            G = random_rank_one(p["n"], p["p"], seed=p["family_seed"])
            lam = sharpness(G)
            eta = p["eta_rel"] * 2.0 / lam
            configs.append(dict(retain=G, eta=eta, batch=p["batch"],
                                scheme=p["scheme"], seed=int(s)))
            rho.append(spectral_radius(G, eta, p["batch"], scheme=p["scheme"]))
            crit.append(critical_lr(G, p["batch"], scheme=p["scheme"]) * lam / 2.0)
        out = {"rho": np.array(rho), "critical_lr_rel": np.array(crit)}
        out.update(_simulate(configs, params_list[0], backend))
        return out

    batch_key = LinearizedDial.batch_key


class CNNTrain:
    """Train the two-layer ReLU CNN on signal-plus-noise data (THEORY 8, 9.6).

    One cell = one training run (data and initialisation from the cell seed);
    metrics are the final clean/noisy test error, train loss, and the largest
    signal-learning and noise-memorization coefficients. Cells sharing
    ``(m, steps, n, n_test, sigma0)`` train in one ``train_many`` call (CPU ``prange``
    over configurations) or one ``gpu_train_many`` launch.
    """

    PARAMS = {"n": (int, None), "d": (int, None), "m": (int, None),
              "mu_norm": (float, None), "sigma_p": (float, None),
              "p_flip": (float, None), "sigma0": (float, None), "eta": (float, None),
              "steps": (int, None), "n_test": (int, None)}
    DEFAULTS = {"n": 20, "d": None, "m": 10, "mu_norm": None, "sigma_p": 1.0,
                "p_flip": 0.1, "sigma0": 0.01, "eta": 0.1, "steps": 300,
                "n_test": 500}
    METRICS = ("test_error_clean", "test_error", "train_loss", "gamma_max",
               "rho_max")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        from ..data import signal_noise_pair
        from ..models import CNN

        train_many = get_kernel("train_many", backend)
        models, trains, tests = [], [], []
        for p, s in zip(params_list, seeds):
            tr, te = signal_noise_pair(p["n"], p["n_test"], p["d"],
                                       mu_norm=p["mu_norm"], sigma_p=p["sigma_p"],
                                       p_flip=p["p_flip"], seed=int(s))
            models.append(CNN(p["d"], p["m"]))
            trains.append(tr)
            tests.append(te)
        p0 = params_list[0]
        res = train_many(models, trains, tests=tests,
                         eta=[p["eta"] for p in params_list], steps=p0["steps"],
                         sigma0=p0["sigma0"],
                         seeds=[int(s) for s in seeds], record_every=p0["steps"])

        def last(var):
            return np.array([r.history[var].values[-1] for r in res])

        return {"test_error_clean": 1.0 - last("test_acc_clean"),
                "test_error": 1.0 - last("test_acc"),
                "train_loss": last("train_loss"), "gamma_max": last("gamma_max"),
                "rho_max": last("rho_max")}

    @staticmethod
    def batch_key(p):
        return (p["m"], p["steps"], p["n"], p["n_test"], p["sigma0"])


#: Name -> cell experiment class.
#: Built-in cell experiments: name -> class, or ``"module:object"`` imported on
#: first use (so a figure's cell can live next to its figure module).
CELL_EXPERIMENTS = {
    "linearized-dial": LinearizedDial,
    "linearized-random": LinearizedRandom,
    "cnn-train": CNNTrain,
    "stable-minimum": "simlab.experiments.stable_minima:StableMinimum",
    "gd-sharpness": "simlab.experiments.edge_of_stability:GDSharpness",
    "label-noise": "simlab.experiments.label_noise_subspace:LabelNoiseCell",
    "memorization": "simlab.experiments.memorization_curvature:MemorizationCell",
}


def get_cell_experiment(name):
    """The cell experiment registered as ``name``, or a user's cell experiment
    named ``"package.module:object"`` (see :mod:`simlab.sweep.user`)."""
    if name not in CELL_EXPERIMENTS:
        from . import user

        if user.is_reference(name):
            return user.load(name)
        raise ValueError(f"unknown experiment {name!r}; known: "
                         f"{sorted(CELL_EXPERIMENTS)}, or a user cell experiment "
                         "'package.module:object'")
    exp = CELL_EXPERIMENTS[name]
    if isinstance(exp, str):
        module, _, obj = exp.partition(":")
        exp = getattr(importlib.import_module(module), obj)
    return exp
