"""Run under NUMBA_ENABLE_CUDASIM=1: CUDA kernels vs the CPU kernels.

Prints one JSON line with the largest differences; tests/test_gpu_linearized.py
runs it in a subprocess (the simulator must be enabled before numba imports).
"""

import json
import sys

import numpy as np

from simlab import config
from simlab.curvature import coherence_dial, random_psd, random_rank_one
from simlab.dynamics.gpu_linearized import gpu_linearized, gpu_linearized_grid
from simlab.dynamics.linearized import linearized, linearized_grid

config.THREADS_PER_BLOCK = int(sys.argv[1]) if len(sys.argv) > 1 else 4
np.seterr(over="ignore")   # simulated device code wraps uint64 like the GPU does

R = random_rank_one(6, 4, seed=1)
F = random_rank_one(3, 4, seed=2) * 0.5
D = random_psd(5, 3, seed=3)
DIAL = coherence_dial(8, 3)
RAGGED = DIAL * np.linspace(0.8, 1.2, 8)[:, None]      # one nonzero, unequal values
configs = [
    dict(retain=DIAL, eta=0.5, batch=2, scheme="without"),
    dict(retain=DIAL, eta=0.5, batch=3, scheme="without", forget=DIAL,
         forget_batch=2, alpha=0.3),
    dict(retain=RAGGED, eta=0.5, batch=2, scheme="without"),
    dict(retain=R, eta=0.05, batch=3, scheme="bernoulli", forget=F, forget_batch=2,
         alpha=0.2),
    dict(retain=D, eta=0.3, batch=1, scheme="with"),
    dict(retain=R, eta=2.0, batch=1, scheme="with", seed=11),   # escapes
]
kw = dict(steps=60, trajectories=5, seed=4, record_every=7)
cpu = linearized_grid(configs, **kw)
gpu = gpu_linearized_grid(configs, **kw)
worst = {"log_sq_norm": 0.0, "lyapunov": 0.0, "direction": 0.0}
same_escape = True
for a, b in zip(cpu, gpu):
    same_escape &= bool(np.array_equal(a.escape_step, b.escape_step))
    for k in worst:
        x, y = getattr(a, k), getattr(b, k)
        both = np.isfinite(x) & np.isfinite(y)
        same_nonfinite = bool(np.array_equal(np.isfinite(x), np.isfinite(y)))
        same_escape &= same_nonfinite
        if both.any():
            worst[k] = max(worst[k], float(np.max(np.abs(x[both] - y[both]))))
one_c = linearized(R, 0.1, 2, steps=30, trajectories=3, seed=9)
one_g = gpu_linearized(R, 0.1, 2, steps=30, trajectories=3, seed=9)
worst["single"] = float(np.max(np.abs(one_c.log_sq_norm - one_g.log_sq_norm)))

# the sweep runner's cuda backend on a tiny spec, against its cpu backend
from simlab.sweep import run_sweep  # noqa: E402

spec = """
experiment = "linearized-dial"
seed = 5
[fixed]
n = 6
eta = 0.5
steps = 40
trajectories = 3
[axes]
s = { values = [1, 6] }
batch = { values = [1, 3] }
alpha = { values = [0.0, 0.1] }
"""
out = sys.argv[2]
a = run_sweep(spec, f"{out}/cpu.zarr").load()
b = run_sweep(spec, f"{out}/cuda.zarr", backend="cuda").load()
sweep_equal = all(np.array_equal(a[v].values, b[v].values, equal_nan=True)
                  for v in a.data_vars)
print(json.dumps({"worst": worst, "same_escape": same_escape,
                  "escaped_any": bool(cpu[-1].escaped.any()),   # eta = 2.0
                  "sweep_equal": sweep_equal}))
