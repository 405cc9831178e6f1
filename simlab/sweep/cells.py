"""Cell experiments: what one grid point of a sweep computes.

Each cell experiment declares its parameters (type, allowed values), their
defaults (``None`` = required), the metrics it returns, and
``evaluate(params_list, seeds, backend) -> {metric: ndarray}`` which computes a
whole batch of cells at once (so a batch is one compiled call, not one per cell).
Backends: ``"cpu"`` (Numba ``prange``) and ``"cuda"`` (numba-cuda kernels with
the same step bodies); the Dask backend ships batches of ``"cpu"`` work.
"""

import numpy as np

from ..curvature import coherence_dial, random_rank_one
from ..stability import critical_lr, spectral_radius
from ..theory import dial_critical_lr, dial_spectral_radius

SCHEMES = ("bernoulli", "with", "without")


def _simulator(backend):
    from ..simulate import grid_simulator

    return grid_simulator(backend)


_MC_METRICS = ("escape_fraction", "lyapunov_median", "ms_growth_mc")


def _simulate(configs, p0, backend):
    """Monte-Carlo metrics of a batch sharing ``steps``/``trajectories``/``K``
    (``steps = 0`` skips the simulation: NaN)."""
    if p0["steps"] == 0:
        return {m: np.full(len(configs), np.nan) for m in _MC_METRICS}
    res = _simulator(backend)(
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
                "scheme": "bernoulli", "family_seed": 0, "steps": 1000,
                "trajectories": 10, "escape_factor": 1e3}
    METRICS = ("rho", "critical_lr_rel", "escape_fraction", "lyapunov_median",
               "ms_growth_mc")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        configs, rho, crit = [], [], []
        for p, s in zip(params_list, seeds):
            G = random_rank_one(p["n"], p["p"], seed=p["family_seed"])
            lam = np.linalg.eigvalsh(G @ G.T / p["n"])[-1]
            eta = p["eta_rel"] * 2.0 / lam
            configs.append(dict(retain=G, eta=eta, batch=p["batch"],
                                scheme=p["scheme"], seed=int(s)))
            rho.append(spectral_radius(G, eta, p["batch"], scheme=p["scheme"]))
            crit.append(critical_lr(G, p["batch"], scheme=p["scheme"]) * lam / 2.0)
        out = {"rho": np.array(rho), "critical_lr_rel": np.array(crit)}
        out.update(_simulate(configs, params_list[0], backend))
        return out

    batch_key = LinearizedDial.batch_key


#: Name -> cell experiment class.
CELL_EXPERIMENTS = {
    "linearized-dial": LinearizedDial,
    "linearized-random": LinearizedRandom,
}


def get_cell_experiment(name):
    """The cell experiment registered as ``name``."""
    if name not in CELL_EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: "
                         f"{sorted(CELL_EXPERIMENTS)}")
    return CELL_EXPERIMENTS[name]
