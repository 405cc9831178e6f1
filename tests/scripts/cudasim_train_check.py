"""Run under NUMBA_ENABLE_CUDASIM=1: ``gpu_train_many`` vs the CPU ``train_many``.

Prints one JSON line with the largest absolute differences over the final
weights, coefficients and every history variable; tests/test_gpu_train.py runs
it in a subprocess (the simulator must be enabled before numba imports).
"""

import json
import sys

import numpy as np

from simlab import config
from simlab.data import signal_noise_pair
from simlab.dynamics.gpu_train import gpu_train_many
from simlab.dynamics.train import train_many
from simlab.models import CNN, Linear

config.THREADS_PER_BLOCK = int(sys.argv[1]) if len(sys.argv) > 1 else 2

pairs = [signal_noise_pair(5, 4, 7, mu_norm=mu, p_flip=0.2, seed=s)
         for s, mu in [(0, 3.0), (1, 5.0), (2, 1.0)]]
train_sets = [p[0] for p in pairs]
test_sets = [p[1] for p in pairs]
cases = {
    # full-batch GD, per-config learning rates and seeds
    "cnn_gd": (CNN(7, 2), dict(eta=[0.5, 1.0, 2.0], steps=12, seeds=[1, 2, 3])),
    # SGD with replacement, ReLU^3 (pow), one configuration diverges
    "cnn_q3_sgd": (CNN(7, 2, q=3), dict(eta=0.3, steps=10, batch=2, scheme="with",
                                        seeds=[4, 5, 6], sigma0=0.3)),
    # linear model, squared loss, Bernoulli minibatches
    "linear_sgd": (Linear(7), dict(eta=0.2, steps=9, batch=3, scheme="bernoulli",
                                   loss="squared", seeds=7)),
    # divergence detection (stops early), without-replacement minibatches
    "cnn_diverge": (CNN(7, 2, q=2), dict(eta=[50.0, 0.05, 400.0], steps=8, batch=3,
                                         seeds=[1, 1, 2], sigma0=1.0,
                                         loss="squared")),
}
worst = {}
worst_rel = {}
same_steps = True
diverged = 0
for name, (model, kw) in cases.items():
    cpu = train_many(model, train_sets, tests=test_sets, method="gram",
                     record_every=3, **kw)
    gpu = gpu_train_many(model, train_sets, tests=test_sets, record_every=3, **kw)
    w = r = 0.0
    for a, b in zip(cpu, gpu, strict=True):
        same_steps &= a.steps == b.steps and a.diverged == b.diverged
        diverged += a.diverged
        pairs_ = [(a.W, b.W), (a.coef, b.coef), (a.gamma, b.gamma), (a.rho, b.rho)]
        pairs_ += [(a.history[v].values, b.history[v].values)
                   for v in a.history.data_vars]
        same_steps &= bool(np.array_equal(a.history.step, b.history.step))
        for x, y in pairs_:
            fin = np.isfinite(x)
            same_steps &= bool(np.array_equal(fin, np.isfinite(y)))
            same_steps &= bool(np.array_equal(x[~fin], y[~fin], equal_nan=True))
            if fin.any():
                diff = float(np.max(np.abs(x[fin] - y[fin])))
                w = max(w, diff)
                r = max(r, diff / max(float(np.max(np.abs(x[fin]))), 1e-300))
    worst[name] = w
    worst_rel[name] = r

# a single configuration also goes through the kernel
one_c = train_many(CNN(7, 3), train_sets[:1], eta=1.0, steps=6, batch=2, seeds=3,
                   method="gram")[0]
one_g = gpu_train_many(CNN(7, 3), train_sets[:1], eta=1.0, steps=6, batch=2,
                       seeds=3)[0]
worst["single"] = float(np.max(np.abs(one_c.W - one_g.W)))

# the benign-overfitting figure through --backend cuda, on a tiny grid
from simlab.experiments import benign_overfitting  # noqa: E402

tiny = dict(d=[12, 16], mu=[0.5, 4.0], seeds=1, steps=8, n_test=10, n=6, m=2,
            bootstrap=0)
bo_cpu = benign_overfitting.run(quick=True, backend="cpu", **tiny)
bo_gpu = benign_overfitting.run(quick=True, backend="cuda", **tiny)
worst["benign_overfitting"] = float(np.nanmax(np.abs(
    bo_cpu["test_error_clean"].values - bo_gpu["test_error_clean"].values)))

# the cnn-train sweep cells through the runner's cuda backend
import tempfile  # noqa: E402

from simlab.sweep import run_sweep  # noqa: E402

spec = """
experiment = "cnn-train"
seed = 2
[fixed]
n = 6
m = 2
steps = 6
n_test = 8
[axes]
d = { values = [10, 14] }
mu_norm = { values = [0.5, 3.0] }
"""
tmp = tempfile.mkdtemp()
sw_c = run_sweep(spec, f"{tmp}/c.zarr").load()
sw_g = run_sweep(spec, f"{tmp}/g.zarr", backend="cuda").load()
worst["sweep_cnn_train"] = max(float(np.nanmax(np.abs(sw_c[v].values - sw_g[v].values)))
                               for v in ("test_error_clean", "train_loss", "rho_max"))
print(json.dumps({"worst": worst, "worst_rel": worst_rel,
                  "same_steps": bool(same_steps), "diverged": int(diverged)}))
