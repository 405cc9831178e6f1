"""Exact operators at scale: rho(T) and eta* for rank-one Gaussian families.

Issue targets (2 cores): n = 200 (p = 10^4) rho < 1 s; n = 1000 < 4 s and
n = 2000 < 15 s per call, over B in {1, 10, 100}, eta in {0.5, 0.9} eta*, the
three schemes, plain SGD and unlearning with a forget set inside the retain
span (the first n/10 retain samples duplicated, alpha = 0.05 < n_f/(n_r+n_f):
kappa_+ <= 0, so eta* > 0 and the iteration does real work). No p x p (let
alone p^2 x p^2) matrix is formed: the Gram reduction brings the problem to
r <= n coordinates and the Davidson eigensolver is matrix-free.

For each n it prints the time of every call (critical_lr, then spectral_radius
at 0.5 and 0.9 eta*), the worst call, and at the end the fitted exponent of
the worst time in n (log-log least squares). A warm-up call first compiles
(or loads) the Numba kernels; its time is printed separately. ``--check``
also computes every value with the previous solver (ARPACK Lanczos:
``method="lanczos"`` / ``"geneig-lanczos"``) and prints the largest relative
difference (target 1e-9). Timings depend on the load of the machine: say so
when quoting them.

    python benchmarks/bench_radius.py                     # n = 200 and 1000
    python benchmarks/bench_radius.py --n 200 1000 2000 --check
    python benchmarks/bench_radius.py --n 1000 --batch 10 --scheme without
"""

import argparse
import os
import platform
import time

import numpy as np

from simlab import config
from simlab.curvature import random_rank_one
from simlab.stability import critical_lr, kappa_plus, spectral_radius

SCHEMES = ("bernoulli", "with", "without")


def family(n, p, seed=0):
    """Rank-one Gaussian retain factors and a forget set of duplicates."""
    G = random_rank_one(n, p, seed=seed) / np.sqrt(p)
    return G, G[: max(1, n // 10)].copy()


def timed(fn, *args, **kwargs):
    """``((wall, cpu), out)``: wall-clock and CPU seconds of this process (on a
    loaded machine the CPU time is the better estimate of an idle run, as the
    exact operators run single-threaded BLAS)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - t0, time.process_time() - c0), out


def run_n(n, p, batches, schemes, fracs, alpha, check):
    G, F = family(n, p)
    rows = []
    cases = [("sgd", {})]
    if alpha > 0:
        cases.append(("unlearn", dict(forget=F, alpha=alpha)))
        print(f"  kappa_+ (alpha={alpha}) = "
              f"{kappa_plus(G, forget=F, alpha=alpha):.3e} (<= 0: eta* > 0)")
    for case, kw in cases:
        for B in batches:
            if B > n:
                continue
            for scheme in schemes:
                t, eta = timed(critical_lr, G, B, scheme=scheme, **kw)
                diff = 0.0
                if check:
                    ref = critical_lr(G, B, scheme=scheme, method="geneig-lanczos",
                                      **kw)
                    diff = abs(eta - ref) / ref
                rows.append((case, B, scheme, "eta*", eta, t, diff))
                for c in fracs:
                    t, rho = timed(spectral_radius, G, c * eta, B, scheme=scheme,
                                   **kw)
                    diff = 0.0
                    if check:
                        ref = spectral_radius(G, c * eta, B, scheme=scheme,
                                              method="lanczos", **kw)
                        diff = abs(rho - ref) / ref
                    rows.append((case, B, scheme, f"rho@{c}eta*", rho, t, diff))
                for r in rows[-1 - len(fracs):]:
                    print(f"  {r[0]:7s} B={r[1]:<4d} {r[2]:9s} {r[3]:12s} "
                          f"{r[4]:.12g}  wall {r[5][0]:7.3f} s  cpu {r[5][1]:7.3f} s"
                          + (f"  rel.diff {r[6]:.1e}" if check else ""), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--p", type=int, default=10_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--scheme", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    ap.add_argument("--eta", type=float, nargs="+", default=[0.5, 0.9],
                    help="learning rates as fractions of eta*")
    ap.add_argument("--alpha", type=float, default=0.05,
                    help="unlearning weight (0: SGD only)")
    ap.add_argument("--check", action="store_true",
                    help="compare with the Lanczos solver (slow)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads for r >= config.BLAS_THREADS_MIN_DIM "
                         "(default: config.BLAS_THREADS)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        config.BLAS_THREADS = args.threads
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; p={args.p}; "
          f"BLAS threads for r >= {config.BLAS_THREADS_MIN_DIM}: "
          f"{config.BLAS_THREADS or os.cpu_count()}")
    # Numba kernels of the packed products (double and single precision):
    # compiled, or loaded from the on-disk cache, outside the timings
    G, F = family(320, 3200)
    t, _ = timed(critical_lr, G, 10, forget=F, alpha=0.05)
    print(f"warm-up (Numba kernels, compile or cache load, on n = 320): "
          f"wall {t[0]:.3f} s", flush=True)
    worst = []
    for n in args.n:
        print(f"n={n}", flush=True)
        rows = run_n(n, args.p, args.batch, args.scheme, args.eta, args.alpha,
                     args.check)
        times = np.array([r[5] for r in rows])          # (calls, [wall, cpu])
        diff = max(r[6] for r in rows)
        worst.append(times.max(axis=0))
        print(f"n={n}: {len(rows)} calls, worst wall {times[:, 0].max():.3f} s "
              f"(cpu {times[:, 1].max():.3f} s), median wall "
              f"{np.median(times[:, 0]):.3f} s (cpu {np.median(times[:, 1]):.3f} s)"
              + (f", max rel.diff vs Lanczos {diff:.1e}" if args.check else ""),
              flush=True)
    if len(args.n) > 1:
        worst = np.array(worst)
        wall, cpu = (np.polyfit(np.log(args.n), np.log(worst[:, j]), 1)[0]
                     for j in (0, 1))
        print(f"worst time ~ n^{wall:.2f} (wall), n^{cpu:.2f} (cpu) over "
              f"n = {args.n}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
