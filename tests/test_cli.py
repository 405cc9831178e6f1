"""CLI and figure smoke tests (STYLE section 5, "Scripts")."""

import json

import numpy as np
import pytest
import xarray as xr

from simlab import cli
from simlab.experiments import hessian_test


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cuda_available"] in (True, False)
    assert info["numba_threads"] >= 1


def test_threshold(capsys):
    assert cli.main(["threshold", "--n", "20", "--s", "4", "--batch", "3",
                     "--scheme", "without"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "critical eta" in ln]
    vals = [float(ln.split()[-1]) for ln in lines]
    assert len(vals) == 2 and np.isclose(vals[0], vals[1], rtol=1e-9)


def test_unknown_experiment(capsys):
    assert cli.main(["reproduce", "no-such-figure", "--out", "unused"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_hessian_test_tiny(tmp_path):
    """A tiny grid through the whole pipeline: data, verdicts, plot, files."""
    ds = hessian_test.run(quick=True, s=[1, 4, 16], batch=[1, 4, 16], n=16,
                          steps=200, trajectories=4)
    assert set(ds.data_vars) >= {"escape_fraction", "rho", "lyapunov_median"}
    assert ds.attrs["operator_check_max_rel_err"] < 1e-9
    # s = 1, B = 1: rho far above 1 and every trajectory escapes
    assert ds["rho"].sel(mode="sgd", s=1, batch=1) > 2
    assert ds["escape_fraction"].sel(mode="sgd", s=1, batch=1) == 1.0
    # s = n = 16 with B = 16 is plain GD at eta = 0.5 < 1: stable, nothing escapes
    assert ds["rho"].sel(mode="sgd", s=16, batch=16) < 1
    assert ds["escape_fraction"].sel(mode="sgd", s=16, batch=16) == 0.0
    fig = hessian_test.plot(ds)
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert json.loads(ds.attrs["params"])["n"] == 16


def test_reproduce_writes_data_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(hessian_test, "QUICK", dict(
        hessian_test.QUICK, n=12, s=[1, 3, 12], batch=[1, 6], steps=100,
        trajectories=2))
    assert cli.main(["reproduce", "hessian-test", "--quick", "--out",
                     str(tmp_path)]) == 0
    for ext in ("png", "pdf", "nc"):
        assert (tmp_path / f"hessian-test.{ext}").exists()
    with xr.open_dataset(tmp_path / "hessian-test.nc") as ds:
        assert ds.attrs["seed"] == 0 and ds.attrs["simlab_version"]
        assert ds["escape_fraction"].shape == (2, 3, 2)
    assert "hessian-test" in (tmp_path / "README.md").read_text()


def test_bad_override():
    with pytest.raises(ValueError, match="unknown parameters"):
        hessian_test.run(quick=True, bogus=1)


def test_coherence_bound_experiment():
    from simlab.experiments import coherence_bound

    ds = coherence_bound.run(quick=True, families=25)
    assert ds.attrs["violations"] == 0
    assert ds["ratio"].size == 25
    assert float(ds["ratio"].min()) > 0
    coherence_bound.plot(ds)


@pytest.mark.parametrize("name", sorted(__import__("simlab.experiments",
                                                   fromlist=["REGISTRY"]).REGISTRY))
def test_every_catalogue_entry_runs_quick(name, tmp_path):
    """`simlab reproduce NAME --quick` works for every registered figure."""
    assert cli.main(["reproduce", name, "--quick", "--out", str(tmp_path)]) == 0
    with xr.open_dataset(tmp_path / f"{name}.nc") as ds:
        assert ds.attrs["summary"] and ds.attrs["quick"] == 1
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
