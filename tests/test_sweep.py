"""Sweep specs, grid expansion, resumable store, Dask backend (issue: sweeps)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import numpy.testing as npt
import pytest
import xarray as xr

from simlab.sweep import SpecError, parse_spec, run_sweep
from simlab.sweep import cells as cells_mod

SPEC = """\
experiment = "linearized-dial"
seed = 7
replicates = 2
metrics = ["rho", "critical_lr", "escape_fraction"]

[fixed]
n = 12
eta = 0.5
steps = 100
trajectories = 3

[axes]
s = { range = [1, 13, 5] }
batch = { values = [1, 3, 6] }
"""


def test_grid_expansion():
    spec = parse_spec(SPEC + 'alpha = { linspace = [0.0, 0.2, 3] }\n')
    assert spec.dims == ("s", "batch", "alpha", "replicate")
    assert spec.shape == (3, 3, 3, 2)
    p = spec.cell_params(np.ravel_multi_index((2, 1, 2, 1), spec.shape))
    assert (p["s"], p["batch"], p["alpha"], p["n"]) == (11, 3, 0.2, 12)
    assert p["scheme"] == "without"           # default filled in
    seeds = spec.cell_seeds()
    assert len(np.unique(seeds)) == spec.n_cells
    z = parse_spec(SPEC.replace("batch = { values = [1, 3, 6] }", "")
                   + '[[zip]]\nbatch = [1, 2]\nforget_batch = [2, 1]\n')
    assert z.dims == ("s", "batch+forget_batch", "replicate")
    assert z.cell_params(np.ravel_multi_index((0, 1, 0), z.shape))["forget_batch"] == 1
    lg = parse_spec(SPEC + 'alpha = { logspace = [-2, 0, 3] }\n')
    npt.assert_allclose(lg.axes[-1].params["alpha"], [0.01, 0.1, 1.0])


@pytest.mark.parametrize("bad, match", [
    (SPEC.replace("linearized-dial", "nope"), r"<spec>:1: experiment: unknown"),
    (SPEC.replace("eta = 0.5", "etaa = 0.5"), r"<spec>:8: fixed.etaa: unknown param"),
    (SPEC.replace("eta = 0.5", 'eta = "big"'), r":8: fixed.eta: .* must be float"),
    (SPEC.replace("[1, 3, 6]", "[]"), r":14: axes.batch: empty axis"),
    (SPEC.replace("range = [1, 13, 5]", "range = [5, 1]"), r"axes.s: empty axis"),
    (SPEC.replace('"rho",', '"rhoo",'), r":4: metrics: unknown metric 'rhoo'"),
    (SPEC.replace("seed = 7", "seed = -1"), r":2: seed"),
    (SPEC.replace("n = 12\n", ""), r"missing required parameters \['n'\]"),
    (SPEC + "[[zip]]\nalpha = [0.1]\nforget_batch = [1, 2]\n", r"differ in length"),
    ("bogus = 1\n" + SPEC, r"<spec>:1: bogus: unknown field"),
    (SPEC.replace("values = [1, 3, 6]", "values = [1, 3.5]"), r"must be int"),
    ("experiment = [", r"invalid TOML"),
])
def test_spec_errors_name_field_and_line(bad, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(bad)


def test_run_values_and_spec_change_refused(tmp_path):
    ds = run_sweep(SPEC, tmp_path / "s.zarr", batch_size=4)
    assert int(ds["done"].sum()) == ds["done"].size == 18
    # exact columns equal the closed form, replicates equal for exact metrics
    from simlab.theory import dial_spectral_radius

    npt.assert_allclose(ds["rho"].sel(s=6, batch=3, replicate=1),
                        dial_spectral_radius(12, 6, 0.5, 3, scheme="without"))
    again = xr.open_zarr(tmp_path / "s.zarr")
    assert again.attrs["spec_hash"] == ds.attrs["spec_hash"]
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(SPEC.replace("seed = 7", "seed = 8"), tmp_path / "s.zarr")
    run_sweep(SPEC.replace("seed = 7", "seed = 8"), tmp_path / "s.zarr", restart=True)


def test_resume_recomputes_nothing(tmp_path, monkeypatch):
    """Interrupt after two batches, resume, count evaluated cells; the result is
    identical to an uninterrupted run."""
    exp = cells_mod.CELL_EXPERIMENTS["linearized-dial"]
    real = exp.evaluate
    calls = []

    def flaky(params_list, seeds, backend="cpu"):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(params_list))
        return real(params_list, seeds, backend)

    monkeypatch.setattr(exp, "evaluate", staticmethod(flaky))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, tmp_path / "a.zarr", batch_size=4)
    assert int(xr.open_zarr(tmp_path / "a.zarr")["done"].sum()) == 8
    counted = []

    def counting(params_list, seeds, backend="cpu"):
        counted.append(len(params_list))
        return real(params_list, seeds, backend)

    monkeypatch.setattr(exp, "evaluate", staticmethod(counting))
    a = run_sweep(SPEC, tmp_path / "a.zarr", batch_size=4).load()
    assert sum(counted) == 18 - 8
    b = run_sweep(SPEC, tmp_path / "b.zarr", batch_size=5).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


KILL_SPEC = """\
experiment = "linearized-dial"
seed = 1
metrics = ["rho", "escape_fraction", "lyapunov_median"]
[fixed]
n = 30
eta = 0.5
steps = 4000
trajectories = 4
[axes]
s = { range = [1, 31] }
batch = { values = [1, 2, 4, 8, 16, 30] }
"""


def test_sigkill_and_resume(tmp_path):
    """SIGKILL a running `simlab sweep`, rerun the same command: the store is
    complete, uncorrupted and identical to an uninterrupted in-process run."""
    spec = tmp_path / "spec.toml"
    spec.write_text(KILL_SPEC)
    store = tmp_path / "k.zarr"
    cmd = [sys.executable, "-m", "simlab", "sweep", str(spec), "--out", str(store),
           "--quiet", "--batch-size", "2"]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # metadata not yet consolidated
                done = int(xr.open_zarr(store)["done"].sum())
        except Exception:   # store being created
            continue
        if done >= 6:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = done
            break
    assert killed_at is not None and killed_at < 180, "run was not interrupted"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    first = [ln for ln in out.stderr.splitlines() if ln.startswith("[sweep]")][0]
    assert int(first.split()[1].split("/")[0]) > killed_at   # resumed, not redone
    resumed = xr.open_zarr(store).load()
    assert int(resumed["done"].sum()) == 180
    fresh = run_sweep(KILL_SPEC, tmp_path / "fresh.zarr", batch_size=7).load()
    xr.testing.assert_identical(resumed.drop_attrs(), fresh.drop_attrs())


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_equals_cpu(tmp_path, dask_client):
    cpu = run_sweep(SPEC, tmp_path / "cpu.zarr", batch_size=4).load()
    dsk = run_sweep(SPEC, tmp_path / "dask.zarr", backend="dask", client=dask_client,
                    batch_size=3).load()
    xr.testing.assert_identical(cpu.drop_attrs(), dsk.drop_attrs())   # bit-identical


def test_dask_worker_killed_mid_sweep(tmp_path, dask_client):
    """Kill a Dask worker process while the sweep runs: Dask reschedules its
    batches, no cell is lost, and the store equals an in-process run."""
    import threading

    store = tmp_path / "killed.zarr"
    spec = KILL_SPEC.replace("range = [1, 31]", "range = [1, 31, 3]")
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.05)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    done = int(xr.open_zarr(store)["done"].sum())
            except Exception:
                continue
            if done >= 2:
                victim = sorted(dask_client.scheduler_info()["workers"])[0]
                killed.append((done, victim))
                try:    # the worker dies mid-call, so the call itself fails
                    dask_client.run(os._exit, 1, workers=[victim])
                except Exception:
                    pass
                return

    thread = threading.Thread(target=killer)
    thread.start()
    ds = run_sweep(spec, store, backend="dask", client=dask_client,
                   batch_size=2).load()
    thread.join()
    assert killed and killed[0][0] < 60, "no worker was killed mid-sweep"
    # the victim is gone (its nanny starts a replacement at a new address)
    assert killed[0][1] not in dask_client.scheduler_info()["workers"]
    assert int(ds["done"].sum()) == 60
    ref = run_sweep(spec, tmp_path / "ref.zarr", batch_size=60).load()
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())


def test_backend_errors(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        run_sweep(SPEC, tmp_path / "x.zarr", backend="gpu")
    with pytest.raises(ValueError, match="client"):
        run_sweep(SPEC, tmp_path / "x.zarr", backend="dask")


def test_plot_store(tmp_path):
    from simlab.sweep.plot import plot_store

    ds = run_sweep(SPEC, tmp_path / "p.zarr")
    plot_store(ds, var="rho", x="batch", y="s")
    plot_store(ds, var="rho", x="batch", sel={"s": "6"})
    with pytest.raises(ValueError, match="var"):
        plot_store(ds, var="nope", x="batch")
    with pytest.raises(ValueError, match="x"):
        plot_store(ds, var="rho", x="nope")


def test_cli_sweep_and_plot(tmp_path):
    from simlab import cli

    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "c.zarr"),
                     "--quiet"]) == 0
    assert cli.main(["plot", str(tmp_path / "c.zarr"), "--var", "rho", "--x", "batch",
                     "--y", "s", "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").exists()
    spec.write_text(textwrap.dedent(SPEC).replace("eta = 0.5", "eta = 'x'"))
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "d.zarr")]) == 2


def test_shipped_specs_are_valid():
    from pathlib import Path

    from simlab.sweep import load_spec

    specs = sorted((Path(__import__("simlab").__file__).parent / "sweep" / "specs")
                   .glob("*.toml"))
    assert specs
    for path in specs:
        assert load_spec(path).n_cells > 0


CNN_SPEC = """
experiment = "cnn-train"
seed = 1
replicates = 2
[fixed]
n = 10
m = 4
steps = 40
n_test = 40
[axes]
d = { values = [30, 60] }
mu_norm = { values = [0.5, 5.0] }
"""


def test_cnn_train_cells_do_not_depend_on_batching(tmp_path):
    """Cells batched together (one train_many call) equal cells run alone; a
    strong signal is learned (clean test error 0) and a weak one is not."""
    a = run_sweep(CNN_SPEC, tmp_path / "a.zarr", batch_size=8).load()
    b = run_sweep(CNN_SPEC, tmp_path / "b.zarr", batch_size=1).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert float(a["test_error_clean"].sel(mu_norm=5.0).max()) == 0.0
    assert float(a["test_error_clean"].sel(mu_norm=0.5).min()) > 0.2
