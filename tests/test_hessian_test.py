"""The Hessian-test heatmap's aggregation (simlab.experiments.hessian_test).

``run`` summarizes thousands of cells with vectorized operations (a reshape of
the results in configuration order, medians over a stacked array, the closed
forms over all batch sizes at once); this checks them against the per-cell
definitions on a small grid, bit for bit (deterministic: fixed seed).
"""

import numpy as np

from simlab.curvature import coherence_dial
from simlab.dynamics.linearized import linearized_grid
from simlab.experiments import hessian_test
from simlab.theory import dial_critical_lr, dial_spectral_radius


def test_grid_summaries_equal_per_cell_values():
    kw = dict(n=12, s=[1, 3, 12], batch=[1, 2, 5, 12], trajectories=5, steps=60)
    ds = hessian_test.run(quick=True, seed=3, **kw)
    p = dict(hessian_test.QUICK, **kw)
    configs, where = [], []
    for i, a in enumerate((0.0, p["alpha"])):
        for j, s in enumerate(kw["s"]):
            H = coherence_dial(12, s)
            for m, B in enumerate(kw["batch"]):
                cfg = dict(retain=H, eta=p["eta"], batch=B, scheme=p["scheme"])
                if a:
                    cfg.update(forget=H, forget_batch=B, alpha=a)
                configs.append(cfg)
                where.append((i, j, m, s, B, a))
    res = linearized_grid(configs, steps=60, trajectories=5, seed=3,
                          escape_factor=p["escape_factor"], stop_on_escape=False,
                          record_every=max(1, 60 // 50))
    for (i, j, m, s, B, a), r in zip(where, res, strict=True):
        assert ds["escape_fraction"].values[i, j, m] == r.escape_fraction
        assert ds["lyapunov_median"].values[i, j, m] == np.median(r.lyapunov)
        assert ds["ms_growth_mc"].values[i, j, m] == r.ms_growth
        assert ds["rho"].values[i, j, m] == dial_spectral_radius(
            12, s, p["eta"], B, scheme=p["scheme"], alpha=a)
        assert ds["critical_lr"].values[i, j, m] == dial_critical_lr(
            12, s, B, scheme=p["scheme"], alpha=a)
