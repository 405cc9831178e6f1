"""Time rho(T) for a rank-one family with n = 200, p = 10^4 (issue target: < 1 s).

Also times critical_lr (generalized eigenproblem and secular form) on the same
family. No p^2 x p^2 (or even p x p) matrix is ever formed: the Gram reduction
brings the problem to r <= n coordinates and Lanczos is matrix-free.

    python benchmarks/bench_radius.py [--n 200] [--p 10000] [--repeat 3]
"""

import argparse
import platform
import time

import numpy as np

from simlab.curvature import random_rank_one
from simlab.stability import critical_lr, spectral_radius


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--p", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    G = random_rank_one(args.n, args.p, seed=0) / np.sqrt(args.p)
    lam = np.linalg.eigvalsh(G @ G.T / args.n)[-1]
    eta = 0.5 / lam
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"n={args.n}, p={args.p}, B={args.batch}, eta={eta:.4g}")
    for scheme in ("bernoulli", "with", "without"):
        t, rho = best_of(lambda s=scheme: spectral_radius(G, eta, args.batch, scheme=s),
                         args.repeat)
        print(f"spectral_radius [{scheme:9s}] rho={rho:.10f}  {t:.3f} s")
    t, e1 = best_of(lambda: critical_lr(G, args.batch), args.repeat)
    print(f"critical_lr geneig  [bernoulli] eta*={e1:.10g}  {t:.3f} s")
    t, e2 = best_of(lambda: critical_lr(G, args.batch, method="secular"), 1)
    print(f"critical_lr secular [bernoulli] eta*={e2:.10g}  {t:.3f} s  "
          f"(rel. diff {abs(e1 - e2) / e1:.1e})")


if __name__ == "__main__":
    main()
