"""benchmarks/bench_gpu.py runs end to end (issue 8 §7).

On the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, switched on before numba is
imported, hence a subprocess) at ``--toy`` size: the script must exit 0, find
the two backends *exactly* equal on the shared slice (the simulator runs the
same step code in float64 with the same operation order and the same random
streams, so any difference is a fault), compile nothing inside a timed phase,
and run with zarr/dask/distributed hidden as if not installed. The toy slice
is checked to be non-trivial: some trajectories escape and some do not.

The tolerant comparison used on a real GPU (FMA contraction) is exercised here
on CPU results with planted differences: it must pass identical results and
differences far below its tolerance, and flag differences above it.

A real GPU runs the ``--quick`` form (marked ``gpu`` and ``slow``); it is skipped
where the script reports no CUDA device.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def _run(args, env_extra, tmp_path, timeout):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "PYTHONPATH")}
    env.update(env_extra)
    # from another directory: the script must find simlab in the source tree
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=timeout)


def _bench():
    """The script as a module (its process setup runs only as ``__main__``)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(out):
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("RESULT "), out.stdout[-3000:]
    return lines, json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow    # ~100 s on 2 cores: the simulator runs every device step in Python
def test_bench_gpu_toy_on_simulator(tmp_path):
    pytest.importorskip("numba.cuda")
    out = _run(["--toy"], {"NUMBA_ENABLE_CUDASIM": "1"}, tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines, res = _result(out)
    assert any(line.startswith("agreement: OK (criterion: cpu and cuda exactly "
                               "equal (simulator))") for line in lines), \
        out.stdout[-2000:]
    assert res["simulator"] and res["size"] == "toy"
    assert res["compiles_in_timed"] == 0
    assert set(res["hidden_modules"]) == {"zarr", "dask", "distributed"}
    assert res["simlab_file"].startswith(str(ROOT))
    ht = res["experiments"]["hessian-test"]
    bo = res["experiments"]["benign-overfitting"]
    for r in (ht, bo):
        assert r["agreement"]["ok"] and not r["agreement"]["problems"]
        assert all(v == 0.0 for v in r["agreement"]["worst_rel"].values()), r
        assert r["cuda_grid"]["cells"] > r["cuda_slice"]["cells"] > 0
        assert r["cpu_slice"]["cells"] == r["cuda_slice"]["cells"]
        assert r["cuda_grid"]["cells_per_s"] > 0 and r["ratio"] > 0
    assert ht["cuda_grid"]["cells"] == 2 * 3 * 3            # modes x s x batch
    assert bo["cuda_grid"]["cells"] == 3 * 3 * 2            # d x mu x seeds
    escaped, total = map(int, ht["agreement"]["escaped"].split("/"))
    assert 0 < escaped < total
    assert ht["agreement"]["escape_near_threshold"] == 0
    assert bo["agreement"]["accuracy_near_boundary"] == 0


def test_bench_gpu_refuses_without_device(tmp_path):
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device (or the simulator) is available here")
    out = _run(["--toy"], {}, tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "no CUDA device" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.gpu
@pytest.mark.slow
def test_bench_gpu_quick_on_device(tmp_path):
    pytest.importorskip("numba.cuda")
    out = _run(["--quick"], {}, tmp_path, timeout=900)
    if out.returncode == 2 and "no CUDA device" in out.stderr:
        pytest.skip("no CUDA device")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines, res = _result(out)
    assert any(line.startswith("agreement: OK") for line in lines)
    assert not res["simulator"] and res["compiles_in_timed"] == 0


def _twin_calls(bench, name, overrides):
    """Two identical kept CPU runs of ``name`` (stand-ins for cpu and cuda)."""
    a, _ = bench.run_experiment(name, "cpu", True, overrides, 0, keep=True)
    b, _ = bench.run_experiment(name, "cpu", True, overrides, 0, keep=True)
    return a, b


def _replace_result(timer, call, cell, new):
    args, kw, out = timer.calls[call]
    out = list(out)
    out[cell] = new
    timer.calls[call] = (args, kw, out)


def test_tolerant_linearized_comparison():
    bench = _bench()
    tiny = dict(n=6, s=[2, 5], batch=[1, 2], steps=30, trajectories=3)
    cpu, gpu = _twin_calls(bench, "hessian-test", tiny)
    assert bench.compare_linearized(cpu, gpu, exact=False)["ok"]
    assert bench.compare_linearized(cpu, gpu, exact=True)["ok"]
    res = gpu.calls[0][2][1]
    # 1e-13 relative on the Lyapunov exponents: rounding-size, passes
    small = dataclasses.replace(res, lyapunov=res.lyapunov * (1 + 1e-13))
    _replace_result(gpu, 0, 1, small)
    assert bench.compare_linearized(cpu, gpu, exact=False)["ok"]
    assert not bench.compare_linearized(cpu, gpu, exact=True)["ok"]
    # 1e-6 relative: a real difference, flagged
    _replace_result(gpu, 0, 1, dataclasses.replace(
        res, lyapunov=res.lyapunov * (1 + 1e-6)))
    out = bench.compare_linearized(cpu, gpu, exact=False)
    assert not out["ok"] and "cell 1: lyapunov" in out["problems"]
    # an escape step moved by one step, far from the threshold: flagged after the
    # CPU re-simulation with record_every=1
    esc = res.escape_step.copy()
    esc[0] = 7 if esc[0] != 7 else 8
    _replace_result(gpu, 0, 1, dataclasses.replace(res, escape_step=esc))
    out = bench.compare_linearized(cpu, gpu, exact=False)
    assert not out["ok"] and "cell 1: escape step of trajectory 0" in out["problems"]
    assert out["escape_near_threshold"] == 0


def test_tolerant_training_comparison():
    bench = _bench()
    tiny = dict(n=6, m=2, d=[12], mu=[0.5, 4.0], seeds=1, steps=8, n_test=10,
                bootstrap=0)
    cpu, gpu = _twin_calls(bench, "benign-overfitting", tiny)
    assert bench.compare_training(cpu, gpu, exact=False)["ok"]
    res = gpu.calls[0][2][0]

    def with_final(var, factor=None, add=None):
        hist = res.history.copy(deep=True)
        v = hist[var].values
        v[-1] = v[-1] * factor if factor is not None else v[-1] + add
        return types.SimpleNamespace(W=res.W, steps=res.steps, diverged=res.diverged,
                                     history=hist)

    _replace_result(gpu, 0, 0, with_final("train_loss", factor=1 + 1e-13))
    assert bench.compare_training(cpu, gpu, exact=False)["ok"]
    _replace_result(gpu, 0, 0, with_final("train_loss", factor=1 + 1e-6))
    out = bench.compare_training(cpu, gpu, exact=False)
    assert not out["ok"] and "call 0, run 0: train_loss" in out["problems"]
    # one test sample flipped: no test output lies within 1e-9 of the boundary
    _replace_result(gpu, 0, 0, with_final("test_acc", add=-0.1))
    out = bench.compare_training(cpu, gpu, exact=False)
    assert not out["ok"] and "call 0, run 0: test_acc" in out["problems"]
