"""Overhead of the local Dask backend over the plain CPU backend (target < 10%).

A 200-cell `linearized-dial` sweep (n = 40, s x B = 40 x 5, 8 trajectories,
1000 steps, eta = 0.5, unlearning alpha = 0.1) run twice into fresh stores:
``--backend cpu`` (Numba prange in-process) and ``--backend dask`` on a
LocalCluster with one single-threaded worker per core (Numba limited to one
thread per worker so the two runs use the same cores). Both are warmed up first
(JIT compile, worker start); the cluster start-up time is reported separately.

    python benchmarks/bench_sweep.py
"""

import os
import tempfile
import time

SPEC = """
experiment = "linearized-dial"
seed = 0
metrics = ["rho", "escape_fraction", "lyapunov_median"]
[fixed]
n = 40
eta = 0.5
alpha = 0.1
steps = 1000
trajectories = 8
[axes]
s = {{ range = [1, 41] }}
batch = {{ values = [1, 3, 7, 15, 30] }}
"""


def main():
    from distributed import Client, LocalCluster

    from simlab.sweep import run_sweep

    cores = os.cpu_count()
    tmp = tempfile.mkdtemp()
    spec = SPEC.format()
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                           dashboard_address=None,
                           env={"NUMBA_NUM_THREADS": "1"})
    client = Client(cluster)
    t_start = time.perf_counter() - t0
    # warm-up: compile in this process and in every worker
    warm = spec.replace("range = [1, 41]", "range = [1, 3]")
    run_sweep(warm, f"{tmp}/w_cpu.zarr")
    run_sweep(warm, f"{tmp}/w_dask.zarr", backend="dask", client=client,
              batch_size=1)
    times = {}
    for backend in ("cpu", "dask"):
        best = float("inf")
        for rep in range(3):
            t0 = time.perf_counter()
            run_sweep(spec, f"{tmp}/{backend}{rep}.zarr", backend=backend,
                      client=client if backend == "dask" else None,
                      batch_size=100 if backend == "cpu" else 25)
            best = min(best, time.perf_counter() - t0)
        times[backend] = best
    client.close()
    cluster.close()
    print(f"cores: {cores}; LocalCluster start-up {t_start:.2f} s (not counted)")
    print(f"cpu  backend: {times['cpu']:.3f} s  (200 cells, best of 3)")
    print(f"dask backend: {times['dask']:.3f} s  (best of 3)")
    print(f"overhead: {100 * (times['dask'] / times['cpu'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
