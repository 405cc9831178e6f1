"""Throughput of the ``cuda`` backend against the 2-core ``cpu`` backend (issue 8 §7).

One prepared script for a short GPU lease. On the paper-size Hessian-test sweep
(:mod:`simlab.experiments.hessian_test`: 2 modes x 100 coherences x 49 batch
sizes = 9800 cells, 10 trajectories x 1000 steps each) and the paper-size
benign-overfitting grid (:mod:`simlab.experiments.benign_overfitting`: 9 d x 22
||mu|| x 5 seeds = 990 training runs of 1000 GD steps) it

1. warms up (JIT-compiles) both backends on a tiny grid of each experiment and
   reports those times separately -- they never enter a throughput;
2. runs the ``cpu`` backend (Numba limited to ``--cpu-threads``, default 2) and
   the ``cuda`` backend on a fixed *slice* of each grid with identical seeds and
   checks that the two agree (below);
3. runs the ``cuda`` backend on the whole paper-size grid;
4. prints throughput in cells/s (a cell is one Hessian-test configuration with
   all its trajectories, or one training run) and the ratio
   ``cuda (whole grid) / cpu (slice)``, next to the target of 20x.

Everything goes through the experiments' own ``run(..., simulate=/train=)``
(their cell builders, seeds and post-processing) with the drivers from
:func:`simlab.dynamics.backends.get_kernel`; a timer around the driver call
measures what a user of ``--backend`` gets per cell: host preparation,
transfers and kernel (the experiments' post-processing is not timed). No sweep
store is involved: the script needs numba, numba-cuda, numpy, scipy and xarray
only and runs from the source tree without installing simlab. It hides zarr,
dask and distributed before importing anything (``sys.modules[name] = None``,
which is what Python and xarray see when a package is not installed), so a
run on a machine that has them still proves that nothing here needs them.

The slices are regular sub-grids with the cost mix of the whole grid, so that
cells/s on the slice estimates cells/s on the grid: Hessian test ``s in {11,
51, 91}`` (mean dimension ``p = n - s + 1`` as over all ``s``) x ``B in 1, 5,
..., 49`` (mean ``B`` 25 as over all ``B``) = 78 cells; benign overfitting
every ``d`` x every fifth ``||mu||`` x seed 0 = 45 runs (the cost of a run
depends on ``d`` only). ``--quick`` does the same on the experiments' quick
grids (Hessian test ``s in {4, 8, 17}`` x six ``B``; every ``d`` x every fourth
``||mu||``); there the slice is a sample, not a cost-matched one.

The Hessian-test slices avoid the cells where a step can cancel a component of
``delta``: a factor ``1 - eta (2n/s)(k_r - alpha k_f)/B`` that is 0 for some
counts ``0 <= k_r, k_f <= B`` of batch samples on one axis
(:func:`cancelling_cells`; 1371 of the 9800 paper cells). There the result is
rounding noise, which FMA contraction changes.

Agreement. Both backends consume identical random streams and run the same
step code (:mod:`simlab._jit`), so on the CUDA simulator every number must be
*exactly* equal. On a real GPU the compiler contracts ``a*b + c`` into fused
multiply-adds, which changes the last bit of some roundings (a relative 1e-16
per operation); over 1000 steps of non-degenerate dynamics that accumulates to
far below 1e-9 relative (an estimate, not yet measured on a GPU), while any
real fault -- indexing, random stream, sampling -- shows as an O(1)
difference. So the script allows:

* linearized (per trajectory): Lyapunov exponents within 1e-9 relative plus
  1e-12 absolute (a per-step rate near the frontier is ~0); recorded
  ``log |delta_t|^2`` within 1e-9 absolute (= 1e-9 relative on the squared
  norm); final directions within 1e-9; ``ms_growth`` within 1e-9 relative;
  escape steps identical except for a trajectory whose ``log |delta_t|^2``
  (re-simulated on the CPU with ``record_every=1``) lies within 1e-9 of
  ``log K`` at the disputed step; the median-Lyapunov verdict identical unless
  the median is within 1e-12 of 0. Escape fractions and verdicts then follow.
* training (per run): same steps and divergence flag; final weights and every
  final history metric within 1e-9 relative (plus 1e-15 absolute for metrics
  that are 0 up to rounding); accuracies identical except for samples whose
  output ``|f|`` is within 1e-9 of ``max |f|`` of the decision boundary.

Usage::

    python benchmarks/bench_gpu.py            # paper size (estimated 2-4 min)
    python benchmarks/bench_gpu.py --quick    # the experiments' quick grids
    python benchmarks/bench_gpu.py --overhead # also the grids at steps=1
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu.py --toy   # no GPU needed

The last line is ``RESULT {json}`` with every number; the line
``agreement: OK ...`` (or ``FAIL``) states the cross-check. Exit status: 0 when
the backends agree, 1 when they do not, 2 without a CUDA device. ``--toy``
shrinks everything to a few cells for the simulator (``tests/test_bench_gpu.py``);
its timings are meaningless.

BLAS is pinned to one thread (unless ``OPENBLAS_NUM_THREADS`` is set): the host
side works on many tiny matrices, and on a 2-core machine threaded OpenBLAS
beside Numba's threads made the cpu slices 4-7x slower (measured: Hessian-test
slice 3.1 vs 20.8 cells/s), so pinning gives the faster, conservative baseline.
Measured on an NVIDIA H200 (16-core host, cpu backend on 2 Numba threads of
it; paper size, 2026-11-27; numba 0.68.0, numba-cuda 0.30.4, numpy 2.4.6):

* Hessian test: cpu slice 709 cells/s, cuda slice 971 cells/s, cuda grid 9800
  cells in 1.47 s = 6655 cells/s: **9.4x**, below the 20x target. The grid at
  ``steps=1`` took 1.24 s (84 %): the cuda run is bound by host preparation
  (~0.13 ms per cell: cell set-up and validation in Python; the bases are
  cached per family), not by the kernel (~0.24 s for the whole grid).
* Benign overfitting: cpu slice 94 runs/s, cuda slice 5.0 runs/s, cuda grid
  990 runs in 108.6 s = 9.1 runs/s: **0.1x**, the device is 10x *slower*
  than two CPU threads. Host share 8 % (8.75 s at ``steps=1``): the kernel is
  the bottleneck. One thread per configuration runs 500 steps of one
  configuration in 0.42 s (0.8 ms per step of ~40 000 multiply-adds on
  per-thread scratch in global memory: latency-bound), and 990
  configurations in one launch take 4.8 s (208 runs/s against 271 runs/s for
  two CPU threads). The experiment launches 22 configurations per call. A
  kernel worth its device needs a block per configuration (threads over the
  2n Gram columns, ``G`` in shared memory) and one launch per grid.
* Agreement on the slices: Lyapunov exponents 4e-16, ``log |delta|^2``
  8.6e-14, directions 8.8e-14 relative, escape steps and verdicts identical;
  training weights 1.7e-10 relative, every metric <= 6.5e-16. FMA contraction
  stays far inside the 1e-9 tolerance.
* JIT warm-up (excluded from the rates): cpu 28.5 s (Hessian test) and 64.7 s
  (benign overfitting); cuda 6.7 s and 3.8 s.
* numba-cuda 0.30.4 does not import under numpy 2.5 (``np.row_stack`` is
  gone); the ``cuda`` and ``test`` extras pin ``numpy<2.5``.

Benign overfitting calls ``train_many``
once per ``(d, seed)`` with its 22 ``||mu||`` values, and the cuda backend runs
one thread per configuration: the measurement shows what the experiment as
written gets from the device, not the device's limit.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

#: Not on the GPU machines: hidden, as if not installed (module docstring).
HIDDEN = ("zarr", "dask", "distributed")

#: Tolerances on a real GPU (module docstring); the simulator must match exactly.
RTOL = 1e-9          # relative, every continuous result
LOG_ATOL = 1e-9      # absolute on log |delta|^2 (relative on the squared norm)
LYAP_ATOL = 1e-12    # absolute on a per-step Lyapunov exponent
METRIC_ATOL = 1e-15  # absolute floor for training metrics that are 0 up to rounding
MARGIN = 1e-9        # escape threshold / decision boundary: "within rounding"
TARGET = 20.0        # cuda (whole grid) / cpu (slice, 2 threads)


def sizes(size):
    """Per experiment: ``quick`` flag and overrides of the grid, slice, warm-up."""
    from simlab.experiments import benign_overfitting as bo

    warm_h = dict(n=6, s=[1, 3], batch=[1, 2], steps=10, trajectories=2)
    warm_b = dict(n=6, m=2, d=[12], mu=[1.0, 3.0], seeds=1, steps=5, n_test=10,
                  bootstrap=0)
    if size == "toy":
        toy_h = dict(n=6, steps=30, trajectories=3)
        toy_b = dict(n=6, m=2, d=[12, 16, 20], steps=8, n_test=10, bootstrap=0)
        return {
            "hessian-test": dict(quick=True, warm=warm_h,
                                 grid=dict(toy_h, s=[1, 3, 6], batch=[1, 2, 4]),
                                 slice=dict(toy_h, s=[2, 5], batch=[1, 2])),
            "benign-overfitting": dict(quick=True, warm=warm_b,
                                       grid=dict(toy_b, mu=[0.5, 2.0, 4.0], seeds=2),
                                       slice=dict(toy_b, mu=[0.5, 4.0], seeds=1)),
        }
    # The Hessian-test warm-up is the slice itself: a tiny grid runs on the
    # calling thread (``simulate_serial``) and leaves the threaded driver
    # (``simulate_many``) to be compiled inside the timed cpu slice (seen on
    # the first GPU run: 16 compilations, 28.5 s instead of ~4 s).
    if size == "quick":
        h_slice = dict(s=[4, 8, 17], batch=[1, 3, 8, 17, 33, 49])
        return {
            "hessian-test": dict(quick=True, warm=h_slice, grid={}, slice=h_slice),
            "benign-overfitting": dict(quick=True, warm=warm_b, grid={},
                                       slice=dict(mu=bo.QUICK["mu"][::4], seeds=1,
                                                  bootstrap=0)),
        }
    h_slice = dict(s=[11, 51, 91], batch=list(range(1, 50, 4)))
    return {
        "hessian-test": dict(quick=False, warm=h_slice, grid={}, slice=h_slice),
        "benign-overfitting": dict(quick=False, warm=warm_b, grid={},
                                   slice=dict(mu=bo.FULL["mu"][::5], seeds=1,
                                              bootstrap=0)),
    }


def cancelling_cells(n, eta, alpha, s_vals, b_vals):
    """Hessian-test cells ``(mode, s, B)`` where a step can cancel a component.

    On ``coherence_dial(n, s)`` every sample has curvature ``2n/s`` along one
    axis, so a step multiplies the component on an axis by ``1 - eta (2n/s)
    (k_r - alpha k_f) / B``, with ``k_r`` (``k_f``) the retain (forget) batch
    samples on that axis (``alpha = 0`` for SGD).
    """
    out = []
    for s in s_vals:
        c = 2.0 * n * eta / s
        for B in b_vals:
            for mode, a in (("sgd", 0.0), ("unlearn", alpha)):
                k_f = range(B + 1) if a else (0,)
                if any(abs(B - c * (kr - a * kf)) <= 1e-9 * B
                       for kr in range(B + 1) for kf in k_f):
                    out.append((mode, s, B))
    return out


class Timed:
    """Wraps a driver: sums wall time and cells, optionally keeps the calls."""

    def __init__(self, driver, keep=False):
        self.driver, self.keep = driver, keep
        self.seconds, self.cells, self.calls = 0.0, 0, []

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.driver(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.cells += len(out)
        if self.keep:
            self.calls.append((args, kwargs, out))
        return out


@contextlib.contextmanager
def compile_counter():
    """Counts the functions Numba compiles (CPU and CUDA) inside the block.

    A compilation runs compiler passes; loading from the on-disk cache or
    reusing an in-memory overload runs none. Counted: distinct
    (function, argument types) seen in pass events.
    """
    import numba.core.event as ev

    kinds = [(ev, "numba:run_pass")]
    with contextlib.suppress(ImportError):
        import numba.cuda.core.event as cev
        if cev is not ev:
            kinds.append((cev, "numba-cuda:run_pass"))
    box = [0]
    with contextlib.ExitStack() as stack:
        recs = [stack.enter_context(m.install_recorder(k)) for m, k in kinds]
        yield box
    box[0] = len({(e.data["qualname"], e.data["args"])
                  for r in recs for _, e in r.buffer if e.is_start})


def run_experiment(name, backend, quick, overrides, seed, keep=False):
    """One ``run`` of experiment ``name`` with a timed ``backend`` driver."""
    from simlab.dynamics.backends import get_kernel
    from simlab.experiments import benign_overfitting, hessian_test

    if name == "hessian-test":
        timer = Timed(get_kernel("linearized_grid", backend), keep)
        ds = hessian_test.run(quick=quick, seed=seed, simulate=timer, **overrides)
    else:
        timer = Timed(get_kernel("train_many", backend), keep)
        ds = benign_overfitting.run(quick=quick, seed=seed, train=timer, **overrides)
    return timer, ds


# ------------------------------------------------------------------ agreement
def _close(x, y, rtol, atol):
    """(all within tolerance, largest relative difference) of two arrays."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    fx, fy = np.isfinite(x), np.isfinite(y)
    if not (np.array_equal(fx, fy) and np.array_equal(x[~fx], y[~fy], equal_nan=True)):
        return False, math.inf
    x, y = x[fx], y[fy]
    if x.size == 0:
        return True, 0.0
    diff = np.abs(x - y)
    scale = np.maximum(np.abs(x), np.abs(y))
    ok = bool(np.all(diff <= rtol * scale + atol))
    rel = diff / np.where(scale > 0, scale, 1.0)
    return ok, float(rel.max())


def compare_linearized(cpu, gpu, exact):
    """Cross-check two kept ``linearized_grid`` calls (same configs, seeds)."""
    import numpy as np

    from simlab.dynamics.backends import get_kernel

    rtol, log_atol, lyap_atol = ((0.0, 0.0, 0.0) if exact
                                 else (RTOL, LOG_ATOL, LYAP_ATOL))
    (args, kw, res_c), (_, _, res_g) = cpu.calls[0], gpu.calls[0]
    configs, log_K = args[0], math.log(kw["escape_factor"])
    worst = {"lyapunov": 0.0, "log_sq_norm": 0.0, "direction": 0.0, "ms_growth": 0.0}
    bad, near_threshold, frac_diff, flips = [], 0, 0.0, 0
    escaped = sum(int(a.escaped.sum()) for a in res_c)
    trajectories = sum(a.escaped.size for a in res_c)
    growing = sum(int(np.median(a.lyapunov) > 0) for a in res_c)
    for c, (a, b) in enumerate(zip(res_c, res_g, strict=True)):
        checks = {"lyapunov": _close(a.lyapunov, b.lyapunov, rtol, lyap_atol),
                  "log_sq_norm": _close(a.log_sq_norm, b.log_sq_norm, 0.0, log_atol),
                  "direction": _close(a.direction, b.direction, 0.0, log_atol),
                  "ms_growth": _close(a.ms_growth, b.ms_growth, rtol, 0.0)}
        for k, (ok, rel) in checks.items():
            worst[k] = max(worst[k], rel)
            if not ok:
                bad.append(f"cell {c}: {k}")
        differ = np.flatnonzero(a.escape_step != b.escape_step)
        if differ.size and exact:
            bad.append(f"cell {c}: escape steps")
        elif differ.size:
            # re-simulate on the CPU, recording every step: the disputed crossing
            # must lie within rounding of the threshold
            ref = get_kernel("linearized", "cpu")(
                **configs[c], seed=a.seed, steps=kw["steps"],
                trajectories=kw["trajectories"], escape_factor=kw["escape_factor"],
                record_every=1, stop_on_escape=False)
            if not np.array_equal(ref.escape_step, a.escape_step):
                bad.append(f"cell {c}: cpu re-simulation differs from the cpu run")
                continue
            for j in differ:
                t = min(int(s) for s in (a.escape_step[j], b.escape_step[j]) if s >= 0)
                if abs(ref.log_sq_norm[j, t] - log_K) <= MARGIN * max(1.0, log_K):
                    near_threshold += 1
                else:
                    bad.append(f"cell {c}: escape step of trajectory {j}")
        frac_diff = max(frac_diff, abs(a.escape_fraction - b.escape_fraction))
        flips += (a.escape_fraction > 0.5) != (b.escape_fraction > 0.5)
        ma, mb = float(np.median(a.lyapunov)), float(np.median(b.lyapunov))
        if (ma > 0) != (mb > 0) and max(abs(ma), abs(mb)) > lyap_atol:
            bad.append(f"cell {c}: Lyapunov verdict")
    return dict(cells=len(res_c), ok=not bad, problems=bad[:10], worst_rel=worst,
                escaped=f"{escaped}/{trajectories}",
                lyapunov_positive=f"{growing}/{len(res_c)}",
                escape_near_threshold=near_threshold,
                max_escape_fraction_diff=frac_diff,
                escape_verdict_flips=int(flips))


def compare_training(cpu, gpu, exact):
    """Cross-check the kept ``train_many`` calls of both backends."""
    import numpy as np

    rtol, atol = (0.0, 0.0) if exact else (RTOL, METRIC_ATOL)
    accuracy = {"train_acc": "train", "test_acc": "test", "test_acc_clean": "test"}
    worst, bad, runs, near_boundary = {"W": 0.0}, [], 0, 0
    for i, ((args, kw, res_c), (_, _, res_g)) in enumerate(
            zip(cpu.calls, gpu.calls, strict=True)):
        model, trains, tests = args[0], args[1], kw["tests"]
        for c, (a, b) in enumerate(zip(res_c, res_g, strict=True)):
            where = f"call {i}, run {c}"
            runs += 1
            if a.steps != b.steps or a.diverged != b.diverged:
                bad.append(f"{where}: steps/diverged")
                continue
            ok, rel = _close(a.W, b.W, 0.0, rtol * float(np.max(np.abs(a.W))))
            worst["W"] = max(worst["W"], rel)
            if not ok:
                bad.append(f"{where}: W")
            ha, hb = a.history, b.history
            for v in ha.data_vars:
                if ha[v].dims != ("step",):
                    continue
                x, y = float(ha[v].values[-1]), float(hb[v].values[-1])
                if v in accuracy:
                    if x == y:
                        continue
                    data = (trains if accuracy[v] == "train" else tests)[c]
                    f = model.forward(a.W, data.X)
                    tie = int(np.sum(np.abs(f) <= MARGIN * np.max(np.abs(f))))
                    if exact or abs(x - y) * len(f) > tie + 0.5:
                        bad.append(f"{where}: {v}")
                    else:
                        near_boundary += 1
                    continue
                ok, rel = _close(x, y, rtol, atol)
                worst[v] = max(worst.get(v, 0.0), rel)
                if not ok:
                    bad.append(f"{where}: {v}")
    return dict(runs=runs, ok=not bad, problems=bad[:10], worst_rel=worst,
                accuracy_near_boundary=near_boundary)


# ----------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true",
                       help="the experiments' quick grids instead of paper size")
    group.add_argument("--toy", action="store_true",
                       help="a few cells (for NUMBA_ENABLE_CUDASIM=1)")
    parser.add_argument("--cpu-threads", type=int, default=2,
                        help="Numba threads of the cpu backend (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overhead", action="store_true",
                        help="also time each cuda grid with steps=1 (what the "
                             "driver costs besides the dynamics)")
    parser.add_argument("--threads-per-block", type=int, default=None,
                        help="CUDA launch size (default: simlab.config, 4 on the "
                             "simulator)")
    args = parser.parse_args(argv)
    if args.cpu_threads < 1:
        parser.error("--cpu-threads must be >= 1")
    if args.threads_per_block is not None and args.threads_per_block < 1:
        parser.error("--threads-per-block must be >= 1")

    import numba

    import simlab
    from simlab import config

    try:
        from numba import cuda
    except ImportError:
        print("bench_gpu: numba-cuda is not installed", file=sys.stderr)
        return 2
    simulator = bool(numba.config.ENABLE_CUDASIM)
    if not cuda.is_available():
        print("bench_gpu: no CUDA device (set NUMBA_ENABLE_CUDASIM=1 and pass --toy "
              "to exercise the script on the simulator)", file=sys.stderr)
        return 2
    if simulator:
        # simulated device code wraps uint64 like the GPU does (in every thread)
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        config.THREADS_PER_BLOCK = args.threads_per_block or 4
    elif args.threads_per_block:
        config.THREADS_PER_BLOCK = args.threads_per_block
    try:
        device = "CUDA simulator" if simulator else cuda.get_current_device().name
        device = device.decode() if isinstance(device, bytes) else str(device)
    except Exception as exc:  # noqa: BLE001 - report, do not guess
        print(f"bench_gpu: cannot open the CUDA device: {exc}", file=sys.stderr)
        return 2
    cpu_threads = min(args.cpu_threads, numba.config.NUMBA_NUM_THREADS)
    size = "toy" if args.toy else "quick" if args.quick else "paper"
    plan = sizes(size)
    if size != "toy":   # exact on the simulator anyway; real GPUs need this
        from simlab.experiments import hessian_test

        p = plan["hessian-test"]
        params = {**(hessian_test.QUICK if p["quick"] else hessian_test.FULL),
                  **p["slice"]}
        bad = cancelling_cells(params["n"], params["eta"], params["alpha"],
                               params["s"], params["batch"])
        assert not bad, f"the Hessian-test slice holds cancelling cells {bad}"
    t_start = time.perf_counter()
    print(f"device: {device}; cpu backend: {cpu_threads} Numba thread(s) of "
          f"{os.cpu_count()} cores; size: {size}; threads/block "
          f"{config.THREADS_PER_BLOCK}", flush=True)

    def timed_phase(name, backend, quick, overrides, keep=False):
        numba.set_num_threads(cpu_threads if backend == "cpu" else
                              numba.config.NUMBA_NUM_THREADS)
        with compile_counter() as box:
            timer, ds = run_experiment(name, backend, quick, overrides, args.seed, keep)
        return timer, ds, box[0]

    result = {"device": device, "size": size, "cpu_threads": cpu_threads,
              "simulator": simulator, "simlab_file": simlab.__file__,
              "target_ratio": TARGET, "experiments": {}}
    compiles_in_timed = 0
    # 1. warm-up: compile every driver; timed, never mixed into throughput
    for name, p in plan.items():
        warm = {}
        for backend in ("cpu", "cuda"):
            t0 = time.perf_counter()
            _, _, n_comp = timed_phase(name, backend, p["quick"], p["warm"])
            warm[backend] = time.perf_counter() - t0
            warm[f"{backend}_compilations"] = n_comp
        result["experiments"][name] = {"warmup_s": warm}
        print(f"{name}: warm-up (JIT compile, excluded) cpu {warm['cpu']:.1f} s "
              f"({warm['cpu_compilations']} compilations), cuda {warm['cuda']:.1f} s "
              f"({warm['cuda_compilations']} compilations)", flush=True)
    # 2. the slice on both backends, and the cross-check
    agree = {}
    for name, p in plan.items():
        r = result["experiments"][name]
        runs = {}
        for backend in ("cpu", "cuda"):
            timer, _, n_comp = timed_phase(name, backend, p["quick"], p["slice"],
                                           keep=True)
            compiles_in_timed += n_comp
            runs[backend] = timer
            r[f"{backend}_slice"] = dict(cells=timer.cells, seconds=timer.seconds,
                                         cells_per_s=timer.cells / timer.seconds)
            print(f"{name}: {backend:4s} slice {timer.cells:6d} cells "
                  f"{timer.seconds:8.2f} s {timer.cells / timer.seconds:10.2f} cells/s",
                  flush=True)
        compare = compare_linearized if name == "hessian-test" else compare_training
        agree[name] = compare(runs["cpu"], runs["cuda"], exact=simulator)
        r["agreement"] = agree[name]
        print(f"{name}: slice cross-check {json.dumps(agree[name])}", flush=True)
    # 3. the whole grid on the cuda backend
    for name, p in plan.items():
        r = result["experiments"][name]
        timer, ds, n_comp = timed_phase(name, "cuda", p["quick"], p["grid"])
        compiles_in_timed += n_comp
        r["summary"] = ds.attrs.get("summary", "")
        rate = timer.cells / timer.seconds
        ratio = rate / r["cpu_slice"]["cells_per_s"]
        r["cuda_grid"] = dict(cells=timer.cells, seconds=timer.seconds,
                              cells_per_s=rate)
        r["ratio"] = ratio
        verdict = ("simulator: not a measurement" if simulator else
                   "meets" if ratio >= TARGET else "BELOW")
        print(f"{name}: cuda grid  {timer.cells:6d} cells {timer.seconds:8.2f} s "
              f"{rate:10.2f} cells/s; {r['summary']}", flush=True)
        print(f"{name}: ratio cuda (grid) / cpu (slice, {cpu_threads} threads) = "
              f"{ratio:.1f}x, target >= {TARGET:g}x ({verdict})", flush=True)
        if args.overhead:
            timer, _, n_comp = timed_phase(name, "cuda", p["quick"],
                                           dict(p["grid"], steps=1))
            compiles_in_timed += n_comp
            r["cuda_grid_one_step_s"] = timer.seconds
            share = timer.seconds / r["cuda_grid"]["seconds"]
            print(f"{name}: cuda grid, 1 step (host preparation, transfers, launch): "
                  f"{timer.seconds:.2f} s = {share:.0%} of the full run", flush=True)
    hidden = [m for m in HIDDEN if sys.modules.get(m) is None]
    result.update(compiles_in_timed=compiles_in_timed, hidden_modules=hidden,
                  wall_s=time.perf_counter() - t_start)
    if compiles_in_timed:
        print(f"WARNING: {compiles_in_timed} JIT compilation(s) inside timed phases; "
              "the throughputs above include compile time", flush=True)
    print(f"imports: ran with {', '.join(hidden) or 'nothing'} hidden (as if not "
          "installed)")
    ok = all(a["ok"] for a in agree.values())
    how = "exactly equal (simulator)" if simulator else (
        f"within {RTOL:g} relative (FMA contraction)")
    print(f"agreement: {'OK' if ok else 'FAIL'} (criterion: cpu and cuda {how}) on "
          + ", ".join(f"{n} {a.get('cells', a.get('runs'))} cells"
                      for n, a in agree.items()))
    print(f"total {result['wall_s']:.1f} s")
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if ok else 1


def _prepare_process():
    """Before anything imports numpy or xarray: one BLAS thread, hidden modules,
    simlab from this source tree."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    for name in HIDDEN:
        if sys.modules.get(name) is None:
            sys.modules[name] = None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


if __name__ == "__main__":
    _prepare_process()
    sys.exit(main())
