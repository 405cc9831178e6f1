"""Benchmark CNN training (simlab.dynamics.train) against a PyTorch CPU loop.

Two workloads, in the paper setting of THEORY section 8 / the benign-overfitting
experiment (``n = 20``, ``m = 10``, ``sigma_p = 1``, ``p_flip = 0.1``,
``sigma_0 = 0.01``, ``eta = 0.1``, full-batch GD, logistic loss, float64):

1. **One configuration**, ``d in {200, 500, 1000}``, 300 GD steps:
   :func:`simlab.dynamics.train.train` against a well-written PyTorch loop
   (matmul form, autograd, in-place update), median of several repeats. simlab
   is timed as users call it (every default, so history recorded every
   ``steps // 100`` steps, no test set), with sparse recording
   (``record_every=steps``), and in the weight-space form (sparse) for
   reference; the ratio is PyTorch's time over simlab's.
2. **Phase-diagram sweep**: many ``(d, ||mu||, seed)`` configurations, each
   trained and evaluated on a held-out set, by one
   :func:`simlab.dynamics.train.train_many` call (``prange`` over
   configurations) against a PyTorch loop over the same configurations.
   Reported as throughput (configurations per second).

Each implementation runs in its own worker process started by this script
(same invocation), so that PyTorch's and Numba's OpenMP thread pools do not
spin against each other on a small machine. Data generation is excluded from
all timings; JIT warm-up (compilation, or loading Numba's on-disk cache) and
PyTorch's first call are timed separately and excluded. PyTorch is timed with
one intra-op thread and with its default thread count, and the faster is used.
``--torch-python`` runs the PyTorch worker with another interpreter (one that
has ``torch``; it must also import ``numpy`` and ``simlab``).

Usage::

    python benchmarks/bench_cnn.py            # full
    python benchmarks/bench_cnn.py --quick    # smaller sweep, fewer repeats
    python benchmarks/bench_cnn.py --torch-python /path/to/venv/bin/python
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

N, M, SIGMA_P, P_FLIP, SIGMA0, LR = 20, 10, 1.0, 0.1, 0.01, 0.1


def _machine():
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()}"


def _sweep_grid(quick):
    import numpy as np

    d = [100, 250, 630, 1600] if quick else [100, 160, 250, 400, 630, 1000, 1600]
    mu = np.geomspace(0.6, 10.0, 6 if quick else 10).tolist()
    seeds = [0, 1] if quick else [0, 1, 2]
    return d, mu, seeds


def _sweep_data(quick, n_test=200):
    from simlab.data import rescale_signal, signal_noise_pair
    from simlab.models import CNN

    d_vals, mu_vals, seeds = _sweep_grid(quick)
    models, datas, tests, sd = [], [], [], []
    for d in d_vals:
        for s in seeds:
            tr, te = signal_noise_pair(N, n_test, d, mu_norm=1.0, sigma_p=SIGMA_P,
                                       p_flip=P_FLIP, seed=s)
            for mu in mu_vals:
                models.append(CNN(d, M))
                datas.append(rescale_signal(tr, mu))
                tests.append(rescale_signal(te, mu))
                sd.append(s)
    return models, datas, tests, sd


def _median(repeats, fn, *args, **kwargs):
    """Median wall time of ``repeats`` calls ``fn(*args, **kwargs)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    times.sort()
    k = len(times) // 2
    return times[k] if len(times) % 2 else 0.5 * (times[k - 1] + times[k])


# --------------------------------------------------------------------------
# workers
# --------------------------------------------------------------------------

def worker_simlab(args):
    from simlab.data import signal_noise_pair
    from simlab.dynamics.train import train, train_many
    from simlab.models import CNN

    out = {"single": {}, "single_default": {}, "single_weight": {}}
    t0 = time.perf_counter()
    tr, te = signal_noise_pair(N, 10, 50, mu_norm=2.0, p_flip=P_FLIP, seed=0)
    train(CNN(50, M), tr, test=te, eta=LR, steps=3)
    train(CNN(50, M), tr, eta=LR, steps=300)
    train(CNN(50, M), tr, eta=LR, steps=3, method="weight")
    train_many(CNN(50, M), [tr, tr], tests=[te, te], eta=LR, steps=3)
    out["warmup_s"] = time.perf_counter() - t0
    weights = {}
    for d in args.dims:
        tr, _ = signal_noise_pair(N, 10, d, mu_norm=2.0, p_flip=P_FLIP, seed=0)
        model = CNN(d, M)
        kw = dict(eta=LR, steps=args.steps, sigma0=SIGMA0, seed=0)
        # as users call it: every default (records every steps // 100 steps)
        out["single_default"][d] = _median(args.repeats, train, model, tr, **kw)
        out["single"][d] = _median(args.repeats, train, model, tr,
                                   record_every=args.steps, **kw)
        out["single_weight"][d] = _median(args.repeats, train, model, tr,
                                          method="weight", record_every=args.steps,
                                          **kw)
        res = train(model, tr, record_every=args.steps, **kw)
        if not (train(model, tr, **kw).W == res.W).all():
            raise RuntimeError("the default and sparse-recording runs differ")
        weights[d] = (res.W0.tolist(), res.W.tolist())
    models, datas, tests, sd = _sweep_data(args.quick)
    t0 = time.perf_counter()
    res = train_many(models, datas, tests=tests, eta=LR, steps=args.steps,
                     sigma0=SIGMA0, seeds=sd, record_every=args.steps)
    out["sweep_s"] = time.perf_counter() - t0
    out["sweep_configs"] = len(datas)
    out["sweep_test_err"] = [1 - r.history.test_acc_clean.values[-1] for r in res]
    out["weights"] = weights
    import numba

    out["numba_threads"] = numba.get_num_threads()
    out["threading_layer"] = numba.threading_layer()
    json.dump(out, sys.stdout, default=float)
    return 0


def _torch_train(torch, X2, y, W0, steps, n, m):
    sgn = torch.cat([torch.ones(m), -torch.ones(m)]).to(torch.float64) / m
    W = W0.clone().requires_grad_(True)
    for _ in range(steps):
        Z = X2 @ W.T                                       # (2n, 2m)
        f = torch.relu(Z).view(n, 2, 2 * m).sum(dim=1) @ sgn
        loss = torch.nn.functional.softplus(-y * f).mean()
        (g,) = torch.autograd.grad(loss, W)
        with torch.no_grad():
            W -= LR * g
    return W.detach()


def worker_torch(args):
    import numpy as np
    import torch

    from simlab.data import signal_noise_pair

    out = {"single": {}, "threads": {}}
    with open(args.weights) as fh:
        ref = json.load(fh)
    default_threads = torch.get_num_threads()
    agree = {}
    t0 = time.perf_counter()
    tr, _ = signal_noise_pair(N, 10, 50, mu_norm=2.0, p_flip=P_FLIP, seed=0)
    X2 = torch.tensor(tr.X.reshape(2 * N, 50))
    _torch_train(torch, X2, torch.tensor(tr.y),
                 torch.zeros(2 * M, 50, dtype=torch.float64), 3, N, M)
    out["warmup_s"] = time.perf_counter() - t0
    for d in args.dims:
        tr, _ = signal_noise_pair(N, 10, d, mu_norm=2.0, p_flip=P_FLIP, seed=0)
        X2 = torch.tensor(tr.X.reshape(2 * N, d))
        y = torch.tensor(tr.y)
        W0 = torch.tensor(np.array(ref[str(d)][0]).reshape(2 * M, d))
        best = float("inf")
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            t = _median(args.repeats, _torch_train, torch, X2, y, W0, args.steps, N, M)
            if t < best:
                best, out["threads"][d] = t, threads
        out["single"][d] = best
        W = _torch_train(torch, X2, y, W0, args.steps, N, M).numpy()
        agree[d] = float(np.abs(W - np.array(ref[str(d)][1]).reshape(2 * M, d)).max())
    out["max_abs_diff_vs_simlab"] = agree
    models, datas, tests, sd = _sweep_data(args.quick)
    torch.set_num_threads(out["threads"][args.dims[0]])
    prepared = []
    for mod, tr, te, s in zip(models, datas, tests, sd, strict=True):
        W0 = torch.tensor(mod.init(SIGMA0, s).reshape(2 * M, mod.d))
        prepared.append((torch.tensor(tr.X.reshape(2 * N, mod.d)), torch.tensor(tr.y),
                         W0, torch.tensor(te.X.reshape(-1, mod.d)),
                         torch.tensor(te.y_clean), te.n))
    errs = []
    sgn = torch.cat([torch.ones(M), -torch.ones(M)]).to(torch.float64) / M
    t0 = time.perf_counter()
    for X2, y, W0, Xt, yt, nt in prepared:
        W = _torch_train(torch, X2, y, W0, args.steps, N, M)
        with torch.no_grad():
            ft = torch.relu(Xt @ W.T).view(nt, 2, 2 * M).sum(dim=1) @ sgn
            errs.append(float((yt * ft <= 0).double().mean()))
    out["sweep_s"] = time.perf_counter() - t0
    out["sweep_configs"] = len(prepared)
    out["sweep_test_err"] = errs
    out["torch_version"] = torch.__version__
    json.dump(out, sys.stdout, default=float)
    return 0


def _run_worker(kind, argv, extra=(), python=None):
    cmd = [python or sys.executable, __file__, "--worker", kind, *argv, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", choices=["simlab", "torch"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dims", type=int, nargs="+", default=[200, 500, 1000])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--torch-python", default=None,
                   help="interpreter for the PyTorch worker (default: this one)")
    p.add_argument("--weights", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.worker == "simlab":
        return worker_simlab(args)
    if args.worker == "torch":
        return worker_torch(args)

    import numpy as np

    argv = [f"--steps={args.steps}", f"--repeats={args.repeats}", "--dims",
            *map(str, args.dims)] + (["--quick"] if args.quick else [])
    print(f"machine: {_machine()}")
    sim = _run_worker("simlab", argv)
    print(f"simlab: numba {sim['numba_threads']} threads "
          f"({sim['threading_layer']} layer), JIT warm-up {sim['warmup_s']:.2f} s "
          "(excluded)")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({str(k): v for k, v in sim["weights"].items()}, fh)
    try:
        tor = _run_worker("torch", argv, [f"--weights={fh.name}"],
                          python=args.torch_python)
    except RuntimeError as exc:
        if "No module named 'torch'" in str(exc):
            print("torch is not installed: no baseline (pip install torch)")
            return 0
        raise
    finally:
        os.unlink(fh.name)
    print(f"torch {tor['torch_version']}: first call {tor['warmup_s']:.2f} s "
          "(excluded)\n")
    print(f"1) one configuration: n={N}, m={M}, {args.steps} GD steps, float64, "
          f"median of {args.repeats}")
    print("   default = train() with every default (history every "
          f"{max(1, args.steps // 100)} steps); sparse = record_every={args.steps}")
    print(f"{'d':>6} {'default':>10} {'sparse':>10} {'weight':>10} {'torch':>10} "
          f"{'ratio':>7} {'(sparse)':>9} {'max|W diff|':>12}")
    ratios, ratios_sparse = [], []
    for d in args.dims:
        k = str(d)
        s0, s, w, t = (sim["single_default"][k], sim["single"][k],
                       sim["single_weight"][k], tor["single"][k])
        ratios.append(t / s0)
        ratios_sparse.append(t / s)
        print(f"{d:>6} {s0 * 1e3:>7.2f} ms {s * 1e3:>7.2f} ms {w * 1e3:>7.2f} ms "
              f"{t * 1e3:>7.2f} ms {t / s0:>6.1f}x {t / s:>8.1f}x "
              f"{tor['max_abs_diff_vs_simlab'][k]:>12.1e}   "
              f"(torch threads={tor['threads'][k]})")
    print(f"   minimum speed-up over d: {min(ratios):.1f}x at the defaults (target "
          f"10x), {min(ratios_sparse):.1f}x with sparse recording\n")
    c = sim["sweep_configs"]
    thr_s, thr_t = c / sim["sweep_s"], c / tor["sweep_s"]
    gap = np.abs(np.array(sim["sweep_test_err"]) - np.array(tor["sweep_test_err"]))
    print(f"2) phase-diagram sweep: {c} configurations x {args.steps} steps "
          "(+ held-out evaluation)")
    print(f"   simlab train_many: {sim['sweep_s']:.2f} s ({thr_s:.1f} configs/s)")
    print(f"   torch loop:        {tor['sweep_s']:.2f} s ({thr_t:.1f} configs/s)")
    print(f"   throughput ratio:  {thr_s / thr_t:.1f}x (target 20x); max test-error "
          f"difference between the two: {gap.max():.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
