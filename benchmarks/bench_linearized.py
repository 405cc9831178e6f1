"""Benchmark the linearized simulator against a source-style NumPy loop.

The workload is the coherence-dial "Hessian test" heatmap of THEORY section 7:
``coherence_dial(n=40, s)`` with ``s`` and the batch size ``B`` each on an
8-point grid over 1..40, 8 trajectories per cell, 1000 steps, ``eta = 0.5``,
``"without"`` sampling and escape factor ``K = 1e3``. Both implementations stop
a trajectory when it escapes (``|delta|^2 >= K |delta_0|^2``), in the same run:

* **NumPy baseline**, in the style of the source's reference scripts: per step
  ``rng.choice(n, B, replace=False)``, the dense batch Hessian as a sum of
  dense ``H_i``, ``delta = delta - eta * Hb @ delta``;
* **simlab**: :func:`simlab.simulate.linearized_grid`, every cell and
  trajectory in one compiled call (rank-one factors, and also dense Hessians
  for a like-for-like comparison).

JIT warm-up (compilation, or loading Numba's on-disk cache) is timed separately
and excluded; simlab's times are the best of three runs, with all Numba threads
and with one thread (the machine may be shared, and the NumPy loop uses one
core); the ratio of CPU times (one thread each) is printed as well, since it
does not depend on what else runs on the machine. Escape fractions are
compared statistically (they use different random streams): per cell with
Fisher's exact test, and over the grid with a z-score of the summed
differences. A run without stopping on escape is timed
too.

Usage::

    python benchmarks/bench_linearized.py            # full grid
    python benchmarks/bench_linearized.py --quick    # 4 x 4 grid, 300 steps
    python benchmarks/bench_linearized.py --no-cache # measure a cold compile
"""

import argparse
import os
import sys
import time


def _grid(quick):
    import numpy as np

    m = 4 if quick else 8
    vals = np.unique(np.round(np.linspace(1, 40, m)).astype(int)).tolist()
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 x 4 grid and 300 steps")
    parser.add_argument("--no-cache", action="store_true",
                        help="disable Numba's on-disk cache (time a cold compile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.no_cache:
        os.environ["SIMLAB_NUMBA_CACHE"] = "0"

    import numba
    import numpy as np
    from scipy import stats

    from simlab.curvature import coherence_dial, to_dense
    from simlab.dynamics import linearized as lin
    from simlab.simulate import linearized_grid

    n, eta, K, T = 40, 0.5, 1e3, 8
    steps = 300 if args.quick else 1000
    s_vals, b_vals = _grid(args.quick)
    cells = [(s, B) for s in s_vals for B in b_vals]
    factors = {s: coherence_dial(n, s) for s in s_vals}
    dense = {s: to_dense(factors[s]) for s in s_vals}

    def configs(rep):
        src = factors if rep == "rank-one" else dense
        return [{"retain": src[s], "eta": eta, "batch": B, "scheme": "without"}
                for s, B in cells]

    common = {"steps": steps, "trajectories": T, "escape_factor": K,
              "seed": args.seed}
    print(f"grid: s = {s_vals}, B = {b_vals} ({len(cells)} cells), "
          f"{T} trajectories, {steps} steps, eta = {eta}, K = {K:g}, n = {n}")
    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads, "
          f"threading layer: {numba.config.THREADING_LAYER}, "
          f"cache {'off' if args.no_cache else 'on'}")

    # --- JIT warm-up, excluded from the timings below
    t0 = time.perf_counter()
    linearized_grid(configs("rank-one")[:1], steps=2, trajectories=1)
    warm = time.perf_counter() - t0
    hits = sum(lin._simulate_many.stats.cache_hits.values())
    print(f"\nJIT warm-up (first call): {warm:.2f} s "
          f"({'loaded from cache' if hits else 'compiled'})")

    cpu = {}

    def best_of(fn, repeat=3, key=None):
        times, cpus = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        if key:
            cpu[key] = min(cpus)
        return min(times), out

    t_r1, res = best_of(lambda: linearized_grid(configs("rank-one"),
                                                stop_on_escape=True, **common))
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    t_r1_1, _ = best_of(lambda: linearized_grid(configs("rank-one"),
                                                stop_on_escape=True, **common),
                        key="simlab")
    numba.set_num_threads(threads)
    t_dn, res_dn = best_of(lambda: linearized_grid(configs("dense"),
                                                   stop_on_escape=True, **common))
    for a, b in zip(res, res_dn, strict=True):
        assert np.array_equal(a.escape_step, b.escape_step)

    rng = np.random.default_rng(args.seed + 1)
    t0, c0 = time.perf_counter(), time.process_time()
    np_steps = [numpy_escape_steps(dense[s], eta, B, K, steps, T, rng)
                for s, B in cells]
    t_np = time.perf_counter() - t0
    cpu["numpy"] = time.process_time() - c0

    t_free, res_free = best_of(lambda: linearized_grid(
        configs("rank-one"), stop_on_escape=False, **common))

    # Work actually done (steps run) by each implementation, stop on escape.
    work_sim = sum(np.where(r.escape_step >= 0, r.escape_step, steps).sum()
                   for r in res)
    work_np = sum(np.where(e >= 0, e, steps).sum() for e in np_steps)
    print("\nstop on escape (same grid, same settings):")
    print(f"  numpy loop            {t_np:9.3f} s   "
          f"{work_np / t_np / 1e3:9.1f} k steps/s")
    print(f"  simlab, rank-one      {t_r1:9.4f} s   "
          f"{work_sim / t_r1 / 1e6:9.2f} M steps/s   speed-up {t_np / t_r1:7.0f}x")
    print(f"    same, 1 thread      {t_r1_1:9.4f} s   "
          f"{work_sim / t_r1_1 / 1e6:9.2f} M steps/s   speed-up "
          f"{t_np / t_r1_1:7.0f}x")
    print(f"  simlab, dense H_i     {t_dn:9.4f} s   "
          f"{work_sim / t_dn / 1e6:9.2f} M steps/s   speed-up {t_np / t_dn:7.0f}x")
    print(f"  CPU time, numpy / simlab (1 thread): {cpu['numpy']:.3f} s / "
          f"{cpu['simlab']:.4f} s = {cpu['numpy'] / cpu['simlab']:.0f}x "
          f"(insensitive to other load on the machine)")
    total = len(cells) * T * steps
    print("no stop (every trajectory runs all steps):")
    print(f"  simlab, rank-one      {t_free:9.4f} s   "
          f"{total / t_free / 1e6:9.2f} M steps/s   "
          f"(numpy at its measured rate: ~{total / (work_np / t_np):.0f} s)")

    # --- agreement of escape fractions (different random streams)
    x_sim = np.array([r.escaped.sum() for r in res])
    x_np = np.array([(e >= 0).sum() for e in np_steps])
    pvals = np.array([stats.fisher_exact([[a, T - a], [b, T - b]]).pvalue
                      for a, b in zip(x_sim, x_np, strict=True)])
    pooled = (x_sim + x_np) / (2 * T)
    var = pooled * (1 - pooled) * 2 * T
    z = (x_sim - x_np).sum() / np.sqrt(max(var.sum(), 1e-300))
    agree_free = np.mean([np.array_equal(a.escaped, b.escaped)
                          for a, b in zip(res, res_free, strict=True)])
    print("\nescape fractions (simlab vs numpy, independent streams):")
    print(f"  pooled over the grid  {x_sim.sum() / (len(cells) * T):.4f} vs "
          f"{x_np.sum() / (len(cells) * T):.4f}   z = {z:+.2f} "
          f"(|z| < 3 expected for equal distributions)")
    print(f"  cells with Fisher p < 0.01: {(pvals < 0.01).sum()} of {len(cells)} "
          f"(about {0.01 * len(cells):.1f} expected by chance, fewer since the "
          f"test is conservative)")
    print(f"  mean |difference| per cell: {np.abs(x_sim - x_np).mean() / T:.3f}")
    print(f"  stop vs no-stop runs give the same escape flags in "
          f"{agree_free:.0%} of cells (same seeds, so this must be 100%)")
    print("\n  per-cell escape fraction, rows s, columns B  (simlab | numpy)")
    print("  s \\ B " + " ".join(f"{B:>9d}" for B in b_vals))
    for i, s in enumerate(s_vals):
        row = [f"{x_sim[i * len(b_vals) + j] / T:4.2f}|"
               f"{x_np[i * len(b_vals) + j] / T:4.2f}"
               for j in range(len(b_vals))]
        print(f"  {s:5d}  " + " ".join(f"{c:>9s}" for c in row))
    ok = t_np / t_r1 >= 100
    print(f"\nspeed-up {t_np / t_r1:.0f}x with {threads} threads, "
          f"{t_np / t_r1_1:.0f}x with 1 thread, "
          f"{cpu['numpy'] / cpu['simlab']:.0f}x in CPU time (target >= 100x "
          f"wall time): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
