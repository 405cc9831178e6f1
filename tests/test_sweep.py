"""Sweep specs, grid expansion, resumable store, Dask backend (issue: sweeps)."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import numpy.testing as npt
import pytest
import xarray as xr

from simlab.sweep import (
    SpecError,
    StoreLockedError,
    estimate,
    open_store,
    parse_spec,
    run_sweep,
)
from simlab.sweep import cells as cells_mod
from simlab.sweep import run as run_mod

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


CNN_BASE = 'experiment = "cnn-train"\n[fixed]\nd = 30\nmu_norm = 1.0\n'
CNN_LR = "eta"


@pytest.mark.parametrize("bad, match", [
    (SPEC.replace("eta = 0.5", "eta = -0.5"),
     r"^<spec>:8: fixed.eta: eta must be > 0, got -0.5$"),
    (SPEC.replace("eta = 0.5", "eta = inf"),
     r"^<spec>:8: fixed.eta: eta must be finite"),
    (SPEC.replace("eta = 0.5\n", "") + 'eta = { logspace = [-2, 400, 3] }\n',
     r"^<spec>:14: axes.eta: eta must be "),     # 1e199 or inf: too large
    (SPEC.replace("[1, 3, 6]", "[0, 50]"),
     r"^<spec>:14: axes.batch: batch must be >= 1, got 0$"),
    (SPEC.replace("[1, 3, 6]", "[1, 50]"),
     r"^<spec>:14: axes.batch: batch = 50 exceeds n = 12 .*needs batch <= n"),
    (SPEC.replace("range = [1, 13, 5]", "range = [1, 20, 5]"),
     r"^<spec>:13: axes.s: s = 16 exceeds n = 12"),
    (SPEC.replace("batch = { values = [1, 3, 6] }", "")
     + "[[zip]]\nbatch = [1, 20]\nforget_batch = [1, 2]\n",
     r"^<spec>:16: zip.batch: batch = 20 exceeds n = 12"),
    (SPEC.replace("trajectories = 3", "trajectories = 0"),
     r"^<spec>:10: fixed.trajectories: trajectories must be >= 1, got 0$"),
    (SPEC.replace("steps = 100", "steps = 100\nescape_factor = 1.0"),
     r"^<spec>:10: fixed.escape_factor: escape_factor must be > 1"),
    (SPEC + "alpha = { values = [0.0, 1.5] }\n",
     r"^<spec>:15: axes.alpha: alpha must lie in \[0, 1\], got 1.5$"),
    (SPEC.replace("eta = 0.5", "lr = 0.5"),
     r"^<spec>:8: fixed.lr: parameter 'lr' is now called 'eta'"),
    ("batch_size = 0\n" + SPEC, r"^<spec>:1: batch_size: must be a positive integer"),
    ("batch_size = true\n" + SPEC, r"^<spec>:1: batch_size: must be a positive int"),
    (SPEC.replace("range = [1, 13, 5]", "range = [1, 1000000000]"),
     r"^<spec>:13: axes.s: 999999999 values, more than a sweep may hold"),
    (SPEC.replace("replicates = 2", "replicates = 2000000"),
     r"^<spec>:12: axes: the grid has 18000000 cells"),
    (CNN_BASE + f"{CNN_LR} = -1.0\n",
     rf"^<spec>:5: fixed.{CNN_LR}: {CNN_LR} must be > 0"),
    (CNN_BASE + "p_flip = 0.5\n",
     r"^<spec>:5: fixed.p_flip: p_flip must lie in \[0, 0.5\)"),
    (CNN_BASE + "steps = 0\n", r"^<spec>:5: fixed.steps: steps must be >= 1"),
    (CNN_BASE.replace("d = 30", "d = 1"), r"^<spec>:3: fixed.d: d must be >= 2"),
])
def test_spec_value_errors_name_field_and_line(bad, match):
    """Values the library would refuse at run time are refused in the spec,
    naming file:line, field and the rule."""
    with pytest.raises(SpecError, match=match):
        parse_spec(bad)


def test_bad_spec_or_batch_size_creates_nothing(tmp_path, capsys):
    """A spec error or a batch size <= 0 stops the run before anything is
    written: no store, no lock file (also through `simlab sweep`)."""
    from simlab import cli

    bad = SPEC.replace("eta = 0.5", "eta = -0.5")
    with pytest.raises(SpecError, match="eta must be > 0"):
        run_sweep(bad, tmp_path / "a.zarr")
    for bs in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            run_sweep(SPEC, tmp_path / "a.zarr", batch_size=bs)
    spec = tmp_path / "spec.toml"
    spec.write_text(bad)
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "b.zarr")]) == 2
    assert f"{spec}:8: fixed.eta: eta must be > 0" in capsys.readouterr().err
    spec.write_text(SPEC)
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "c.zarr"),
                     "--batch-size", "0"]) == 2
    assert "batch_size must be a positive integer" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["spec.toml"]


def _partial_store(store, batches, batch_size=4):
    """Run SPEC into ``store`` and interrupt it after ``batches`` batches."""
    exp = cells_mod.CELL_EXPERIMENTS["linearized-dial"]
    real, calls = exp.evaluate, []

    def flaky(params_list, seeds, backend="cpu"):
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(len(params_list))
        return real(params_list, seeds, backend)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exp, "evaluate", staticmethod(flaky))
        with pytest.raises(KeyboardInterrupt):
            run_sweep(SPEC, store, batch_size=batch_size)


def test_estimate_counts_cells_and_batches(tmp_path, monkeypatch):
    """Cell and batch counts equal what a run does (batches never mix batch
    keys; a resumed store counts only pending cells); nothing is written."""
    e = estimate(SPEC, batch_size=4, sample=0)
    assert (e.n_cells, e.n_done, e.n_batches, e.seconds) == (18, 0, 5, None)
    assert e.summary() == "18 cells (0 done, 18 to run) in 5 batches of up to 4"
    two = SPEC.replace("steps = 100\n", "") + "steps = { values = [0, 100] }\n"
    e2 = estimate(two, tmp_path / "absent.zarr", batch_size=4, sample=0)
    assert (e2.n_cells, e2.n_batches) == (36, 2 * math.ceil(18 / 4))
    assert not (tmp_path / "absent.zarr").exists()
    exp = cells_mod.CELL_EXPERIMENTS["linearized-dial"]
    real, calls = exp.evaluate, []

    def counting(params_list, seeds, backend="cpu"):
        calls.append(len(params_list))
        return real(params_list, seeds, backend)

    with monkeypatch.context() as mp:
        mp.setattr(exp, "evaluate", staticmethod(counting))
        run_sweep(two, tmp_path / "two.zarr", batch_size=4)
    assert len(calls) == e2.n_batches and sum(calls) == 36
    _partial_store(tmp_path / "p.zarr", batches=2)
    e3 = estimate(SPEC, tmp_path / "p.zarr", batch_size=4, sample=0)
    assert (e3.n_done, e3.n_batches) == (8, math.ceil(10 / 4))
    assert estimate(SPEC, tmp_path / "p.zarr", restart=True, sample=0).n_done == 0
    with pytest.raises(ValueError, match="different sweep"):
        estimate(SPEC.replace("seed = 7", "seed = 8"), tmp_path / "p.zarr", sample=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        estimate(SPEC, batch_size=0)


def test_estimate_extrapolates_in_steps(monkeypatch):
    """With a cell cost of exactly ``a + b * steps`` seconds (fake clock), the
    estimate equals the sum over all cells, although no sample cell runs
    more than 1024 steps and the grid holds 10**6-step cells."""
    exp = cells_mod.CELL_EXPERIMENTS["linearized-dial"]
    a, b, now, seen = 0.01, 1e-4, [0.0], []

    def fake(params_list, seeds, backend="cpu"):
        for p in params_list:
            now[0] += a + b * p["steps"]
            seen.append(p["steps"])
        return {m: np.full(len(params_list), np.nan) for m in exp.METRICS}

    monkeypatch.setattr(exp, "evaluate", staticmethod(fake))
    monkeypatch.setattr(run_mod, "_clock", lambda: now[0])
    spec = (SPEC.replace("steps = 100\n", "")
            + "steps = { values = [10, 1000, 1000000] }\n")
    e = estimate(spec, sample=8)
    assert (e.n_cells, e.sample) == (54, 8)
    # each steps value occurs in 54 / 3 = 18 cells
    assert e.seconds == pytest.approx(54 * a + b * 18 * (10 + 1000 + 10**6),
                                      rel=1e-9)
    assert max(seen) <= 1024
    assert "estimated run time 30 min (from 8 timed sample cells)" in e.summary()


def test_plot_refuses_store_without_finished_cells(tmp_path):
    """`plot` on a store (or a selection) with no finished cell is an error,
    and so is a selection off the axis; no empty figure is written."""
    from simlab import cli
    from simlab.sweep.plot import plot_store

    store = open_store(parse_spec(SPEC), tmp_path / "e.zarr")
    with xr.open_zarr(store) as ds:
        with pytest.raises(ValueError, match=r"no finished cell yet \(0/18 done\)"):
            plot_store(ds, var="rho", x="batch", y="s")
    png = tmp_path / "e.png"
    assert cli.main(["plot", str(store), "--var", "rho", "--x", "batch",
                     "-o", str(png)]) == 2
    assert not png.exists()
    _partial_store(tmp_path / "p.zarr", batches=2)   # 8 cells: s = 1, (s = 6, B = 1)
    with xr.open_zarr(tmp_path / "p.zarr") as ds:
        plot_store(ds, var="rho", x="batch", sel={"s": "6"})
        with pytest.raises(ValueError, match=r"sel: no finished cell where"):
            plot_store(ds, var="rho", x="batch", sel={"s": "11"})
        with pytest.raises(ValueError, match=r"sel: s='7' is not on the axis"):
            plot_store(ds, var="rho", x="batch", sel={"s": "7"})


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


def test_store_under_old_parameter_names_says_what_changed(tmp_path):
    """A store written before the ``lr`` -> ``eta`` rename is refused with a
    message naming the rename (not only "different sweep")."""
    import json

    import zarr

    store = tmp_path / "old.zarr"
    run_sweep(SPEC, store, batch_size=18)
    group = zarr.open_group(str(store), mode="r+")
    old = json.loads(group.attrs["spec"])
    old["fixed"]["lr"] = old["fixed"].pop("eta")        # as an older simlab wrote it
    group.attrs["spec"] = json.dumps(old)
    group.attrs["spec_hash"] = "0" * 16
    zarr.consolidate_metadata(str(store))
    with pytest.raises(ValueError, match="'lr' is now 'eta'"):
        run_sweep(SPEC, store)
    with pytest.raises(ValueError, match="different sweep"):   # no rename involved
        run_sweep(SPEC.replace("seed = 7", "seed = 8"), tmp_path / "s.zarr")
        run_sweep(SPEC.replace("seed = 7", "seed = 9"), tmp_path / "s.zarr")


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


def _sweep_cmd(spec_path, store, *extra):
    return [sys.executable, "-m", "simlab", "sweep", str(spec_path), "--out",
            str(store), "--quiet", "--batch-size", "2", *extra]


def _env(hook=None):
    env = {k: v for k, v in os.environ.items() if k != run_mod.HOOK_ENV}
    if hook:
        env[run_mod.HOOK_ENV] = hook
    return env


def _run(cmd, hook=None):
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(hook),
                          timeout=300)


def _done(store):
    with xr.open_zarr(store) as ds:
        return int(ds["done"].sum())


def test_sigkill_at_every_creation_point_and_mid_run(tmp_path):
    """SIGKILL `simlab sweep` (deterministically, via the hook) at each named
    point of store creation, then after 6 committed cells: the store is absent
    until complete, never half-made; the same command then finishes the sweep,
    recomputing none of the 6 cells, and the result equals an uninterrupted
    in-process run; no debris is left beside the store."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    store = tmp_path / "k.zarr"
    cmd = _sweep_cmd(spec, store)
    for point in ("create:locked", "create:aside", "create:unconsolidated",
                  "create:written"):
        out = _run(cmd, f"kill@{point}")
        assert out.returncode == -signal.SIGKILL, (point, out.stderr)
        assert not store.exists(), point
    # the last one died with a complete store aside, not yet renamed
    assert run_mod._leftovers(store)
    out = _run(cmd, "kill@create:renamed")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert not run_mod._leftovers(store)          # debris of earlier kills cleared
    with xr.open_zarr(store) as ds:               # complete, nothing computed
        assert ds.attrs["spec_hash"] == parse_spec(SPEC).hash()
        assert set(ds.data_vars) == {"rho", "critical_lr", "escape_fraction",
                                     "done", "seed"}
        assert int(ds["done"].sum()) == 0
    out = _run(cmd, "kill@cells:6")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert _done(store) == 6                      # 3 batches of 2 committed
    out = _run(cmd)
    assert out.returncode == 0, out.stderr
    first = [ln for ln in out.stderr.splitlines() if ln.startswith("[sweep]")][0]
    assert first.split()[1] == "8/18", first      # resumed after 6, next batch of 2
    resumed = xr.open_zarr(store).load()
    fresh = run_sweep(SPEC, tmp_path / "fresh.zarr", batch_size=7).load()
    xr.testing.assert_identical(resumed.drop_attrs(), fresh.drop_attrs())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh.zarr", "fresh.zarr.lock", "k.zarr", "k.zarr.lock", "spec.toml"]


def test_sigkill_during_restart_keeps_old_or_new(tmp_path):
    """A restart killed before the swap leaves the old store intact; killed
    between moving the old one aside and renaming the new one in, it leaves no
    store (never a mix); restarting again completes the new sweep and clears
    the debris."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("seed = 7", "seed = 8"))
    store = tmp_path / "r.zarr"
    old = run_sweep(SPEC, store, batch_size=9).load()
    cmd = _sweep_cmd(spec, store, "--restart")
    out = _run(cmd, "kill@create:written")
    assert out.returncode == -signal.SIGKILL, out.stderr
    xr.testing.assert_identical(xr.open_zarr(store).load(), old)
    out = _run(cmd, "kill@create:swapped")
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert not store.exists()
    new = run_sweep(spec.read_text(), store, restart=True, batch_size=9).load()
    assert new.attrs["spec_hash"] == parse_spec(spec.read_text()).hash()
    assert int(new["done"].sum()) == 18
    assert not run_mod._leftovers(store)


@pytest.mark.parametrize("point", ["create:written", "cells:4"])
def test_second_writer_refused_when_subprocess_first(tmp_path, monkeypatch, point):
    """A `simlab sweep` process stopped (SIGSTOP, deterministically) while it
    holds the store, during creation or after 4 cells: a second writer in this
    process is refused with StoreLockedError and changes nothing; the first
    then finishes, and a later run here computes nothing more."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    store = tmp_path / "w.zarr"
    proc = subprocess.Popen(_sweep_cmd(spec, store), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(f"stop@{point}"))
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        with pytest.raises(StoreLockedError, match=r"w\.zarr is being written by "
                           r"another simlab sweep"):
            run_sweep(SPEC, store, batch_size=2)
        with pytest.raises(StoreLockedError):
            open_store(parse_spec(SPEC), store)
        if point.startswith("create"):
            assert not store.exists()
        else:
            assert _done(store) == 4
    finally:
        proc.send_signal(signal.SIGCONT)
        try:
            _, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    exp = cells_mod.CELL_EXPERIMENTS["linearized-dial"]
    real, calls = exp.evaluate, []

    def counting(params_list, seeds, backend="cpu"):
        calls.append(len(params_list))
        return real(params_list, seeds, backend)

    monkeypatch.setattr(exp, "evaluate", staticmethod(counting))
    ds = run_sweep(SPEC, store, batch_size=2).load()
    assert calls == [] and int(ds["done"].sum()) == 18


@pytest.mark.parametrize("point", ["create:written", "cells"])
def test_second_writer_refused_when_this_process_first(tmp_path, monkeypatch, point):
    """While this process holds the store (during creation, or after its first
    commit), `simlab sweep` on the same store exits 2 with one line naming the
    store; this run then completes undisturbed."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    store = tmp_path / "w.zarr"
    second = []
    real = run_mod._checkpoint

    def hook(where, committed=0, before=0):
        if where == point and not second:
            second.append(_run(_sweep_cmd(spec, store)))
        real(where, committed, before)

    monkeypatch.setattr(run_mod, "_checkpoint", hook)
    ds = run_sweep(SPEC, store, batch_size=2).load()
    (out,) = second
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "w.zarr is being written by another simlab sweep" \
        in lines[0], out.stderr
    ref = run_sweep(SPEC, tmp_path / "ref.zarr", batch_size=5).load()
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())


def test_dask_equals_cpu(tmp_path, dask_client):
    cpu = run_sweep(SPEC, tmp_path / "cpu.zarr", batch_size=4).load()
    dsk = run_sweep(SPEC, tmp_path / "dask.zarr", backend="dask", client=dask_client,
                    batch_size=3).load()
    xr.testing.assert_identical(cpu.drop_attrs(), dsk.drop_attrs())   # bit-identical


DASK_SPEC = """\
experiment = "linearized-dial"
seed = 1
metrics = ["rho", "escape_fraction", "lyapunov_median"]
[fixed]
n = 30
eta = 0.5
steps = 1000
trajectories = 4
[axes]
s = { range = [1, 31, 3] }
batch = { values = [1, 2, 4, 8, 16, 30] }
"""


def test_dask_worker_killed_mid_sweep(tmp_path, dask_client, monkeypatch):
    """Kill a Dask worker process right after the first batch is committed
    (28 of 30 batches still pending): Dask reschedules its work, no cell is
    lost, and the store equals an in-process run."""
    store = tmp_path / "killed.zarr"
    killed = []
    real = run_mod._checkpoint

    def hook(where, committed=0, before=0):
        if where == "cells" and not killed:
            victim = sorted(dask_client.scheduler_info()["workers"])[0]
            killed.append((committed, victim))
            try:    # the worker dies mid-call, so the call itself fails
                dask_client.run(os._exit, 1, workers=[victim])
            except Exception:
                pass
        real(where, committed, before)

    monkeypatch.setattr(run_mod, "_checkpoint", hook)
    ds = run_sweep(DASK_SPEC, store, backend="dask", client=dask_client,
                   batch_size=2).load()
    assert killed and killed[0][0] == 2
    # the victim is gone (its nanny starts a replacement at a new address)
    assert killed[0][1] not in dask_client.scheduler_info()["workers"]
    assert int(ds["done"].sum()) == 60
    ref = run_sweep(DASK_SPEC, tmp_path / "ref.zarr", batch_size=60).load()
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
