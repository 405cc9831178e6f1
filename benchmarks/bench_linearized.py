"""Benchmark the linearized simulator against a source-style NumPy loop.

The workload is the coherence-dial "Hessian test" heatmap of THEORY section 7:
``coherence_dial(n, s)`` for ``n = 40`` and ``n = 100`` with ``s`` and the
batch size ``B`` each on an 8-point grid over 1..n, 8 trajectories per cell,
1000 steps, ``eta = 0.5``, ``"without"`` sampling and escape factor
``K = 1e3``. Every implementation stops a trajectory when it escapes
(``|delta|^2 >= K |delta_0|^2``), all in the same run:

* **NumPy baseline**, in the style of the source's reference scripts: per step
  ``rng.choice(n, B, replace=False)``, the dense batch Hessian as a sum of
  dense ``H_i``, ``delta = delta - eta * Hb @ delta``;
* **simlab, per call**: the loop as users write it, one
  :func:`simlab.simulate.linearized` call per cell (validation, set-up and
  result assembly included);
* **simlab, batched**: :func:`simlab.simulate.linearized_grid`, every cell in
  one call, with all Numba threads and with one;
* the batched run with dense ``H_i`` (like for like with the baseline) and with
  rotated factors ``g_i Q`` (``Q`` a random orthogonal matrix: the same
  dynamics in rotated coordinates, but dense rows, so the sparse storage the
  dial's one-nonzero rows get is not used: the generic rank-one speed).

JIT warm-up (compilation, or loading Numba's on-disk cache) is timed separately
and excluded. simlab's times are the best of three runs. Ratios are printed
for wall time and for CPU time (``time.process_time``, all threads of the
process): on a shared machine the CPU-time ratio is the one to trust, since it
does not depend on what else runs. Escape fractions are compared
statistically (the implementations use different random streams): per cell
with Fisher's exact test, and over the grid with a z-score of the summed
differences.

Usage::

    python benchmarks/bench_linearized.py            # n = 40 and n = 100
    python benchmarks/bench_linearized.py --n 40     # one size
    python benchmarks/bench_linearized.py --quick    # 4 x 4 grid, 300 steps
    python benchmarks/bench_linearized.py --no-cache # measure a cold compile
"""

import argparse
import os
import sys
import time


def _grid(quick, n):
    import numpy as np

    m = 4 if quick else 8
    vals = np.unique(np.round(np.linspace(1, n, m)).astype(int)).tolist()
    return vals, vals


def numpy_escape_steps(H, eta, B, K, steps, trajectories, rng):
    """Source-style loop for one cell; escape step per trajectory (-1 if none)."""
    import numpy as np

    n, p, _ = H.shape
    out = np.full(trajectories, -1)
    for k in range(trajectories):
        delta = rng.standard_normal(p)
        sq0 = delta @ delta
        for t in range(1, steps + 1):
            idx = rng.choice(n, B, replace=False)
            Hb = H[idx].sum(axis=0) / B
            delta = delta - eta * Hb @ delta
            if delta @ delta >= K * sq0:
                out[k] = t
                break
    return out


def _timed(fn):
    """``(wall, cpu, result)`` of one call; CPU time of all threads."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def best_of(fn, repeat=3):
    """Best wall and best CPU time of ``repeat`` calls, and the last result."""
    runs = [_timed(fn) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[-1][2]


def bench(n, args):
    """Time and compare every implementation on the ``n``-sample grid."""
    import numba
    import numpy as np
    from scipy import stats

    from simlab.curvature import coherence_dial, to_dense
    from simlab.simulate import linearized, linearized_grid

    eta, K, T = 0.5, 1e3, 8
    steps = 300 if args.quick else 1000
    s_vals, b_vals = _grid(args.quick, n)
    cells = [(s, B) for s in s_vals for B in b_vals]
    factors = {s: coherence_dial(n, s) for s in s_vals}
    dense = {s: to_dense(factors[s]) for s in s_vals}
    rot = np.random.default_rng(args.seed)
    rotated = {s: factors[s] @ np.linalg.qr(rot.standard_normal(
        (factors[s].shape[1],) * 2))[0] for s in s_vals}
    src = {"rank-one": factors, "dense": dense, "rotated": rotated}

    def configs(rep):
        return [{"retain": src[rep][s], "eta": eta, "batch": B, "scheme": "without"}
                for s, B in cells]

    common = {"steps": steps, "trajectories": T, "escape_factor": K,
              "stop_on_escape": True}
    print(f"\n=== n = {n}: s = {s_vals}, B = {b_vals} ({len(cells)} cells), "
          f"{T} trajectories, {steps} steps, eta = {eta}, K = {K:g}")

    def per_call():
        return [linearized(**cfg, seed=args.seed + c, **common)
                for c, cfg in enumerate(configs("rank-one"))]

    def grid(rep):
        return linearized_grid(configs(rep), seed=args.seed, **common)

    t = {}
    t["per call"] = best_of(per_call)
    res_call = t["per call"][2]
    t["batched"] = best_of(lambda: grid("rank-one"))
    res = t["batched"][2]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    t["batched, 1 thread"] = best_of(lambda: grid("rank-one"))
    t["per call, 1 thread"] = best_of(per_call)
    numba.set_num_threads(threads)
    t["batched, dense H_i"] = best_of(lambda: grid("dense"))
    t["batched, rotated g_i"] = best_of(lambda: grid("rotated"))
    for a, b in zip(res, t["batched, dense H_i"][2], strict=True):
        assert np.array_equal(a.escape_step, b.escape_step)
    for a, b in zip(res, t["batched, 1 thread"][2], strict=True):
        assert np.array_equal(a.escape_step, b.escape_step)

    rng = np.random.default_rng(args.seed + 1)
    t_np, c_np, np_steps = _timed(lambda: [
        numpy_escape_steps(dense[s], eta, B, K, steps, T, rng) for s, B in cells])

    work_np = sum(np.where(e >= 0, e, steps).sum() for e in np_steps)
    work_sim = sum(np.where(r.escape_step >= 0, r.escape_step, steps).sum()
                   for r in res)
    print(f"  {'':30s} {'wall s':>9s} {'CPU s':>9s} {'x numpy wall':>13s} "
          f"{'x numpy CPU':>12s} {'M steps/CPU s':>14s}")
    print(f"  {'numpy loop':30s} {t_np:9.3f} {c_np:9.3f} {'':13s} {'':12s} "
          f"{work_np / c_np / 1e6:14.4f}")
    ratios = {}
    for name, (wall, cpu, out) in t.items():
        work = (work_sim if "per call" not in name else
                sum(np.where(r.escape_step >= 0, r.escape_step, steps).sum()
                    for r in out))
        ratios[name] = (t_np / wall, c_np / cpu)
        print(f"  {'simlab, ' + name:30s} {wall:9.4f} {cpu:9.4f} "
              f"{t_np / wall:12.0f}x {c_np / cpu:11.0f}x {work / cpu / 1e6:14.2f}")

    # --- agreement of escape fractions (different random streams)
    x_np = np.array([(e >= 0).sum() for e in np_steps])
    for name, rs in (("batched", res), ("per call", res_call)):
        x_sim = np.array([r.escaped.sum() for r in rs])
        pvals = np.array([stats.fisher_exact([[a, T - a], [b, T - b]]).pvalue
                          for a, b in zip(x_sim, x_np, strict=True)])
        pooled = (x_sim + x_np) / (2 * T)
        var = pooled * (1 - pooled) * 2 * T
        z = (x_sim - x_np).sum() / np.sqrt(max(var.sum(), 1e-300))
        print(f"  escape fractions, simlab {name} vs numpy (independent streams): "
              f"pooled {x_sim.sum() / (len(cells) * T):.4f} vs "
              f"{x_np.sum() / (len(cells) * T):.4f}, z = {z:+.2f} (|z| < 3 "
              f"expected), cells with Fisher p < 0.01: {(pvals < 0.01).sum()} of "
              f"{len(cells)}")
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 x 4 grid and 300 steps")
    parser.add_argument("--n", type=int, nargs="+", default=[40, 100],
                        help="numbers of samples of the dial family")
    parser.add_argument("--no-cache", action="store_true",
                        help="disable Numba's on-disk cache (time a cold compile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.no_cache:
        os.environ["SIMLAB_NUMBA_CACHE"] = "0"

    import numba

    from simlab.curvature import coherence_dial
    from simlab.dynamics import linearized as lin
    from simlab.simulate import linearized_grid

    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads, "
          f"threading layer: {numba.config.THREADING_LAYER}, "
          f"cache {'off' if args.no_cache else 'on'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    # --- JIT warm-up (the plain and the fused family, serial and prange
    # drivers), excluded from the timings below
    cfg = [{"retain": coherence_dial(4, 2), "eta": 0.5, "batch": 1},
           {"retain": coherence_dial(4, 2), "eta": 0.5, "batch": 1,
            "scheme": "with"}]
    t0 = time.perf_counter()
    for c in cfg:
        linearized_grid([c], steps=2, trajectories=1)      # serial drivers
    for many, serial in lin._DRIVERS.values():
        many.compile(serial.signatures[0])
    warm = time.perf_counter() - t0
    hits = sum(sum(many.stats.cache_hits.values()) for many, _ in lin._DRIVERS.values())
    print(f"JIT warm-up (first call): {warm:.2f} s "
          f"({'loaded from cache' if hits else 'compiled'})")

    for n in args.n:
        ratios = bench(n, args)
        print(f"  n = {n}: per call {ratios['per call'][1]:.0f}x, batched "
              f"{ratios['batched'][1]:.0f}x ({threads_note(ratios)}) the numpy "
              f"loop in CPU time; target per call >= 100x: "
              f"{'met' if ratios['per call'][1] >= 100 else 'NOT met'}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return 0


def threads_note(ratios):
    """The one-thread ratio, for the summary line."""
    return f"{ratios['batched, 1 thread'][1]:.0f}x on one thread"


if __name__ == "__main__":
    sys.exit(main())
