"""User-defined sweep cells (issue 13 item 4): a cell in a user's module runs
through ``simlab sweep`` on cpu and Dask, resumes after SIGKILL, reports a raising
cell without losing finished ones, and refuses to resume after its source changed."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from simlab.sweep import CellError, SpecError, StoreError, parse_spec, run_sweep
from simlab.sweep import run as run_mod

HERE = Path(__file__).parent

SQUARE = """\
experiment = "user_cells:noisy_square"
seed = 3
replicates = 2
[axes]
x = { values = [0.0, 1.0, 2.0, 3.0] }
"""


def _expected_square(spec):
    """Direct per-cell computation from the documented seeds: one 63-bit seed
    per cell from ``SeedSequence(seed)`` (spec.py), all distinct."""
    state = np.random.SeedSequence(spec.seed).generate_state(spec.n_cells,
                                                             dtype=np.uint64)
    seeds = (state >> np.uint64(1)).astype(np.int64)
    assert np.unique(seeds).size == seeds.size
    seeds = seeds.reshape(spec.shape)
    xs = np.array([0.0, 1.0, 2.0, 3.0])
    mean = np.array([[np.random.default_rng(int(s)).standard_normal(100).mean()
                      for s in row] for row in seeds])
    return mean, np.repeat((xs ** 2)[:, None], spec.replicates, axis=1)


def test_decorated_function_cells_on_cpu(tmp_path):
    spec = parse_spec(SQUARE)
    ds = run_sweep(spec, tmp_path / "s.zarr", batch_size=3).load()
    mean, x2 = _expected_square(spec)
    np.testing.assert_array_equal(ds["mean"].values, mean)
    np.testing.assert_array_equal(ds["x2"].values, x2)
    sha = hashlib.sha256((HERE / "user_cells.py").read_bytes()).hexdigest()
    assert ds.attrs["experiment_source_sha256"] == sha
    assert ds.attrs["experiment_module"] == "user_cells"


def test_protocol_class_and_choices(tmp_path):
    spec = parse_spec('experiment = "user_cells:Quadratic"\n[axes]\n'
                      'a = { values = [1.0, 2.0] }\n'
                      'sign = { values = ["plus", "minus"] }')
    ds = run_sweep(spec, tmp_path / "q.zarr").load()
    np.testing.assert_array_equal(ds["value"].values[..., 0],
                                  [[1.0, -1.0], [4.0, -4.0]])
    with pytest.raises(SpecError, match="sign.*must be one of"):
        parse_spec('experiment = "user_cells:Quadratic"\n[fixed]\na = 1.0\n'
                   'sign = "times"')


@pytest.mark.parametrize("ref, match", [
    ("no_such_module_xyz:f", "cannot import"),
    ("user_cells:missing", "has no attribute"),
    ("math:pi", "does not follow the cell protocol"),
    ("not a reference", "unknown experiment"),
])
def test_bad_references_are_spec_errors(ref, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(f'experiment = "{ref}"')


def test_raising_cell_reported_and_finished_cells_kept(tmp_path):
    spec = parse_spec(SQUARE.replace("2.0, 3.0", "-1.0, 3.0"))
    store = tmp_path / "r.zarr"
    with pytest.raises(CellError) as info:
        run_sweep(spec, store, batch_size=4)
    err = info.value
    assert len(err.failures) == 2                      # x = -1, both replicates
    assert all(f["params"]["x"] == -1.0 for f in err.failures)
    assert "x must be >= 0" in str(err) and "'x': -1.0" in str(err)
    assert err.saved == 6
    with xr.open_zarr(store) as ds:
        done = ds["done"].values
        assert done.sum() == 6 and not done[2].any()
        np.testing.assert_array_equal(ds["x2"].values[[0, 1, 3]],
                                      [[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]])
    with pytest.raises(CellError) as again:           # resume retries only those
        run_sweep(spec, store)
    assert again.value.saved == 0 and len(again.value.failures) == 2


def _cli(spec_path, store, hook=None):
    env = {k: v for k, v in os.environ.items() if k != run_mod.HOOK_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if hook:
        env[run_mod.HOOK_ENV] = hook
    return subprocess.run([sys.executable, "-m", "simlab", "sweep", str(spec_path),
                           "--out", str(store), "--quiet", "--batch-size", "2"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_resumes_user_cells_after_sigkill(tmp_path):
    spec_path = tmp_path / "user.toml"
    spec_path.write_text(SQUARE)
    store = tmp_path / "k.zarr"
    out = _cli(spec_path, store, "kill@cells:4")
    assert out.returncode == -9
    with xr.open_zarr(store) as ds:
        assert int(ds["done"].sum()) == 4
    out = _cli(spec_path, store)
    assert out.returncode == 0, out.stderr
    mean, x2 = _expected_square(parse_spec(SQUARE))
    with xr.open_zarr(store) as ds:
        np.testing.assert_array_equal(ds["mean"].values, mean)
        np.testing.assert_array_equal(ds["x2"].values, x2)


@pytest.mark.slow
def test_cli_reports_raising_cell_exit_1(tmp_path):
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(SQUARE.replace("2.0, 3.0", "-1.0, 3.0"))
    out = _cli(spec_path, tmp_path / "b.zarr")
    assert out.returncode == 1
    assert "2 cell(s) raised; 6 finished cell(s)" in out.stderr
    assert "Traceback" not in out.stderr


def test_changed_source_refused_unless_restart(tmp_path, monkeypatch):
    shutil.copy(HERE / "user_cells.py", tmp_path / "user_cells_copy.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = SQUARE.replace("user_cells:", "user_cells_copy:")
    store = tmp_path / "c.zarr"
    first = run_sweep(parse_spec(text), store).load()
    calls = []
    real = run_mod._evaluate_reporting
    monkeypatch.setattr(run_mod, "_evaluate_reporting",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    again = run_sweep(parse_spec(text), store).load()  # same source: resumes
    assert calls == []                                 # every cell was done
    xr.testing.assert_identical(first.drop_attrs(), again.drop_attrs())
    with open(tmp_path / "user_cells_copy.py", "a") as f:
        f.write("\n# edited\n")
    with pytest.raises(StoreError, match="source of the cell experiment.*changed"):
        run_sweep(parse_spec(text), store)
    ds = run_sweep(parse_spec(text), store, restart=True)
    assert int(ds["done"].sum()) == 8


@pytest.mark.slow
def test_dask_runs_user_cells_like_cpu(tmp_path, dask_client):
    spec = parse_spec(SQUARE)
    cpu = run_sweep(spec, tmp_path / "cpu.zarr").load()
    dsk = run_sweep(spec, tmp_path / "dask.zarr", backend="dask", client=dask_client,
                    batch_size=3).load()
    xr.testing.assert_identical(cpu.drop_attrs(), dsk.drop_attrs())


@pytest.mark.slow
def test_dask_refuses_module_workers_cannot_import(tmp_path, dask_client, monkeypatch):
    # the workers started before this folder joined this process's path
    shutil.copy(HERE / "user_cells.py", tmp_path / "user_cells_local.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = parse_spec(SQUARE.replace("user_cells:", "user_cells_local:"))
    with pytest.raises(ValueError, match="cannot be imported on Dask workers"):
        run_sweep(spec, tmp_path / "w.zarr", backend="dask", client=dask_client)
