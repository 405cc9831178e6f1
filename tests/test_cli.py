"""CLI and figure smoke tests (STYLE section 5, "Scripts")."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from simlab import cli, experiments
from simlab.experiments import hessian_test


def test_info_json(capsys):
    import numba
    import scipy

    import simlab

    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["simlab"] == simlab.__version__
    assert (info["numpy"], info["scipy"], info["numba"]) == (
        np.__version__, scipy.__version__, numba.__version__)
    assert info["numba_threads"] == numba.config.NUMBA_NUM_THREADS >= 1


@pytest.mark.parametrize("env, expected", [("NUMBA_ENABLE_CUDASIM", True),
                                           ("NUMBA_DISABLE_CUDA", False)])
def test_info_reports_cuda_as_numba_sees_it(env, expected):
    """The simulator counts as a device and NUMBA_DISABLE_CUDA hides any GPU, so
    both answers are known in advance whatever machine runs the test."""
    out = subprocess.run([sys.executable, "-m", "simlab", "info", "--json"],
                         env={**os.environ, env: "1"}, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert json.loads(out)["cuda_available"] is expected


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


@pytest.mark.slow      # every figure at its quick size: ~30 s warm, minutes cold
@pytest.mark.parametrize("name", sorted(__import__("simlab.experiments",
                                                   fromlist=["REGISTRY"]).REGISTRY))
def test_every_catalogue_entry_runs_quick(name, tmp_path):
    """`simlab reproduce NAME --quick` works for every registered figure."""
    assert cli.main(["reproduce", name, "--quick", "--out", str(tmp_path)]) == 0
    with xr.open_dataset(tmp_path / f"{name}.nc") as ds:
        assert ds.attrs["summary"] and ds.attrs["quick"] == 1
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


# ---------------------------------------------------------------------------
# issue 8 section 5: a user mistake is one line on stderr and exit status 2
# ---------------------------------------------------------------------------

SPEC = """\
experiment = "linearized-dial"
seed = 7
replicates = 1
metrics = ["rho"]

[fixed]
n = 6
eta = 0.5
batch = 2
steps = 10
trajectories = 1

[axes]
s = { values = [1, 3] }
alpha = { linspace = [0.0, 0.2, 3] }
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished sweep store's layout, written directly (no simulation): plot
    only reads it."""
    root = tmp_path_factory.mktemp("store")
    shape = (2, 3, 1)
    ds = xr.Dataset(
        {"rho": (("s", "alpha", "replicate"), np.arange(6.0).reshape(shape)),
         "done": (("s", "alpha", "replicate"), np.ones(shape, np.int8)),
         "seed": (("s", "alpha", "replicate"), np.arange(6).reshape(shape))},
        coords={"s": [1, 3], "alpha": np.linspace(0.0, 0.2, 3), "replicate": [0]})
    ds.to_zarr(root / "s.zarr")
    (root / "spec.toml").write_text(SPEC)
    (root / "a-file").write_text("not a folder\n")
    return root


def _one_line_error(capsys, argv, *needles):
    """main(argv) exits 2 with exactly one stderr line containing ``needles``."""
    t0 = time.perf_counter()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0], time.perf_counter() - t0


def _cuda_device():
    from numba import cuda

    return bool(cuda.is_available())


@pytest.mark.parametrize("argv, needles", [
    (["plot", "{root}/missing.zarr", "--var", "rho", "--x", "s"],
     ["missing.zarr", "no such sweep store"]),
    (["plot", "{root}/a-file", "--var", "rho", "--x", "s"], ["not a sweep store"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "--sel", "alpha=0.3"],
     ["--sel alpha=0.3", "not on the alpha axis", "0.1"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "--sel", "beta=0.1"],
     ["--sel beta=0.1", "'beta' is not a dimension"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "--sel", "alpha"],
     ["--sel alpha", "DIM=VALUE"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "--sel", "alpha=x"],
     ["--sel alpha=x", "not a number"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "alpha", "--y", "alpha"],
     ["--x and --y", "'alpha'"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "--sel", "s=1"],
     ["--sel s=1", "already on the plot"]),
    (["plot", "{root}/s.zarr", "--var", "rhoo", "--x", "s"], ["var", "'rhoo'"]),
    (["plot", "{root}/s.zarr", "--var", "rho", "--x", "s", "-o",
      "{root}/a-file/out.png"], ["--output", "a-file is a file, not a folder"]),
    (["reproduce", "coherence-bound", "--quick", "--out", "{root}/a-file/figs"],
     ["--out", "a-file is a file, not a folder"]),
    (["reproduce", "coherence-bound", "--quick", "--out", "{root}/a-file"],
     ["--out", "is a file, not a folder"]),
    (["reproduce", "coherence-bound", "--quick", "--seed", "-1"],
     ["argument --seed", "must be >= 0, got -1"]),
    (["reproduce", "coherence-bound", "--backend", "cuda"],
     ["--backend cuda", "'coherence-bound' runs on the cpu backend only"]),
    (["reproduce", "no-such-figure"], ["unknown experiment 'no-such-figure'"]),
    (["threshold", "--n", "100000000", "--s", "1", "--batch", "3"],
     ["threshold --n 100000000", "memory"]),
    (["threshold", "--n", "10", "--s", "11", "--batch", "3"], ["--s must be <= --n"]),
    (["threshold", "--n", "0", "--s", "1", "--batch", "3"], ["argument --n"]),
    (["sweep", "{root}/missing.toml", "--out", "{root}/x.zarr"], ["missing.toml"]),
    (["sweep", "{root}/spec.toml", "--out", "{root}/a-file/x.zarr"],
     ["--out", "a-file is a file, not a folder"]),
    (["sweep", "{root}/spec.toml", "--out", "{root}/x.zarr", "--backend", "dask",
      "--scheduler-timeout", "0"], ["argument --scheduler-timeout", "> 0"]),
])
def test_user_mistake_is_one_line(capsys, store, argv, needles):
    argv = [a.format(root=store) for a in argv]
    _one_line_error(capsys, argv, *needles)
    assert not (store / "x.zarr").exists()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
@pytest.mark.parametrize("command", ["reproduce", "plot", "sweep"])
def test_unwritable_output_is_one_line(capsys, store, command):
    """/sys refuses new entries even to root (chmod would not, under root)."""
    target = "/sys/simlab-test-output"
    argv = {"reproduce": ["reproduce", "coherence-bound", "--quick", "--out", target],
            "plot": ["plot", str(store / "s.zarr"), "--var", "rho", "--x", "s",
                     "-o", target + ".png"],
            "sweep": ["sweep", str(store / "spec.toml"), "--out", target]}[command]
    line, _ = _one_line_error(capsys, argv, target)
    assert "not writable" in line or "not permitted" in line or "denied" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root")
def test_read_only_folder_is_one_line(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _one_line_error(capsys, ["reproduce", "coherence-bound", "--quick", "--out",
                                 str(ro / "figs")], "--out", "not writable")
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(_cuda_device(), reason="a CUDA device (or simulator) is present")
@pytest.mark.parametrize("command", ["reproduce", "sweep"])
def test_backend_cuda_without_gpu_is_one_line(capsys, store, command):
    argv = {"reproduce": ["reproduce", "hessian-test", "--quick", "--backend", "cuda",
                          "--out", str(store / "never")],
            "sweep": ["sweep", str(store / "spec.toml"), "--out",
                      str(store / "x.zarr"), "--backend", "cuda"]}[command]
    _one_line_error(capsys, argv, "--backend cuda", "no CUDA device")
    assert not (store / "never").exists() and not (store / "x.zarr").exists()


def test_unreachable_scheduler_times_out_when_asked(capsys, store):
    """Nothing listens on port 1: the chosen 1 s timeout, not 30 s, then one line."""
    pytest.importorskip("distributed")
    line, seconds = _one_line_error(
        capsys, ["sweep", str(store / "spec.toml"), "--out", str(store / "x.zarr"),
                 "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1",
                 "--scheduler-timeout", "1"],
        "--scheduler tcp://127.0.0.1:1", "cannot connect")
    assert seconds < 15           # 1 s timeout plus importing distributed
    assert not (store / "x.zarr").exists()


def test_threshold_size_check_allocates_nothing(capsys):
    """n = 1e8 would need petabytes: refused at once (well under a second of work)."""
    _, seconds = _one_line_error(
        capsys, ["threshold", "--n", "100000000", "--s", "1", "--batch", "3"], "PiB")
    assert seconds < 5


def test_sel_matches_stored_float(capsys, store, tmp_path):
    """`--sel alpha=0.1` finds linspace's 0.1 and plots that slice."""
    out = tmp_path / "p.png"
    assert cli.main(["plot", str(store / "s.zarr"), "--var", "rho", "--x", "s",
                     "--sel", "alpha=0.1", "-o", str(out)]) == 0
    assert out.stat().st_size > 1000 and capsys.readouterr().out.strip() == str(out)


def _numpy_bug(*args, **kwargs):
    return np.arange(3).reshape(2)       # ValueError raised inside numpy


def _test_raise(*args, **kwargs):
    raise ValueError("raised outside simlab")


@pytest.mark.parametrize("bug", [_numpy_bug, _test_raise])
def test_bug_keeps_its_traceback(monkeypatch, tmp_path, bug):
    """A ValueError that simlab's own checks did not raise is a bug, not a
    mistake: main() lets it through (traceback, exit 1)."""
    monkeypatch.setattr(hessian_test, "run", bug)
    with pytest.raises(ValueError):
        cli.main(["reproduce", "hessian-test", "--quick", "--out", str(tmp_path)])


@pytest.mark.parametrize("how", ["flag", "flag-after", "env"])
def test_debug_shows_traceback(monkeypatch, tmp_path, how):
    argv = ["plot", str(tmp_path / "missing.zarr"), "--var", "rho", "--x", "s"]
    if how == "flag":
        argv = ["--debug"] + argv
    elif how == "flag-after":
        argv = argv + ["--debug"]
    else:
        monkeypatch.setenv("SIMLAB_DEBUG", "1")
    with pytest.raises(cli.UsageError, match="no such sweep store"):
        cli.main(argv)


def test_console_one_line_and_debug_traceback(tmp_path):
    """The real process: one stderr line and status 2; SIMLAB_DEBUG=1 shows the
    traceback (status 1)."""
    cmd = [sys.executable, "-m", "simlab", "plot", str(tmp_path / "missing.zarr"),
           "--var", "rho", "--x", "s"]
    env = {k: v for k, v in os.environ.items() if k != "SIMLAB_DEBUG"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"simlab plot: error: {tmp_path / 'missing.zarr'}: no such sweep store"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**env, "SIMLAB_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert "UsageError" in r.stderr.splitlines()[-1]


def test_quick_run_leaves_paper_figures_alone(tmp_path, monkeypatch):
    """`simlab reproduce --quick` from a folder holding paper-size figures/
    writes to simlab-figures-quick/ and leaves figures/ byte-for-byte as it was."""
    monkeypatch.setattr(hessian_test, "QUICK", dict(
        hessian_test.QUICK, n=12, s=[1, 3, 12], batch=[1, 6], steps=100,
        trajectories=2))
    monkeypatch.chdir(tmp_path)
    paper = tmp_path / "figures"
    paper.mkdir()
    before = {"hessian-test.nc": b"paper-size data\n", "README.md": b"manifest\n"}
    for name, data in before.items():
        (paper / name).write_bytes(data)
    assert cli.main(["reproduce", "hessian-test", "--quick"]) == 0
    assert {p.name: p.read_bytes() for p in paper.iterdir()} == before
    quick = tmp_path / cli.QUICK_FIGURES
    with xr.open_dataset(quick / "hessian-test.nc") as ds:
        assert ds.attrs["quick"] == 1
    assert (quick / "hessian-test.png").exists()


def test_available_reports_a_broken_figure(monkeypatch, tmp_path, capsys):
    """A figure whose module fails to import is never skipped silently."""
    monkeypatch.setitem(experiments.REGISTRY, "broken",
                        "simlab.experiments._no_such_module")
    with pytest.raises(ImportError, match=r"broken \(No module named"):
        experiments.available()
    assert cli.main(["list"]) == 0
    assert "broken" in capsys.readouterr().out.split("unavailable")[0]
    # the manifest lists it as unavailable too
    monkeypatch.setattr(hessian_test, "QUICK", dict(
        hessian_test.QUICK, n=12, s=[1, 12], batch=[1, 6], steps=50,
        trajectories=1))
    assert cli.main(["reproduce", "hessian-test", "--quick", "--out",
                     str(tmp_path)]) == 0
    assert "| broken | `simlab reproduce broken` | unavailable:" in (
        tmp_path / "README.md").read_text()


def test_sweep_dry_run_counts_cells_and_writes_nothing(capsys, store, tmp_path):
    """`sweep --dry-run` prints the grid size and an estimate; no store appears."""
    out = tmp_path / "dry.zarr"
    assert cli.main(["sweep", str(store / "spec.toml"), "--out", str(out),
                     "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "6 cells (0 done, 6 to run)" in line and "estimated run time" in line
    assert not out.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------ simlab check


@pytest.fixture
def families_dir(tmp_path):
    """Good and malformed curvature files for ``simlab check``."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((6, 2, 5))
    Gf = np.einsum("fkm,mp->fkp", rng.standard_normal((2, 2, 12)),
                   G.reshape(-1, 5)) / 12
    np.savez(tmp_path / "retain.npz", factors=G)
    np.savez(tmp_path / "forget.npz", factors=Gf)
    np.save(tmp_path / "rank_one.npy", G[:, 0])
    np.save(tmp_path / "factors3d.npy", G)
    bad = {
        "vector.npy": np.ones(5),
        "four_d.npy": np.ones((2, 2, 2, 2)),
        "nan.npz": {"factors": np.where(G > 1.5, np.nan, G)},
        "inf.npy": np.full((3, 4), np.inf),
        "p7.npz": {"factors": rng.standard_normal((2, 2, 7))},
        "not_psd.npz": {"hessians": -np.eye(5)[None].repeat(3, 0)},
        "not_sym.npz": {"hessians": np.triu(np.ones((3, 5, 5)))},
        "not_square.npz": {"hessians": np.ones((3, 5, 4))},
        "complex.npy": np.ones((3, 4)) * 1j,
        "strings.npy": np.array([["a", "b"]]),
        "empty.npy": np.ones((0, 5)),
        "two_keys.npz": {"factors": G, "hessians": np.ones((1, 5, 5))},
        "wrong_key.npz": {"grads": G},
        "dense.npz": {"hessians": np.eye(5)[None].repeat(3, 0)},
    }
    for name, arr in bad.items():
        if name.endswith(".npz"):
            np.savez(tmp_path / name, **arr)
        else:
            np.save(tmp_path / name, arr)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object),
            allow_pickle=True)
    whole = (tmp_path / "rank_one.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    whole = (tmp_path / "retain.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "zero_bytes.npy").write_bytes(b"")
    (tmp_path / "zip_as.npy").write_bytes(whole)          # an .npz under .npy
    np.save(tmp_path / "low.npy", G[:2, 0])               # spans 2 of 5 dims
    np.save(tmp_path / "outside.npy", rng.standard_normal((2, 5)))
    (tmp_path / "retain.txt").write_text("1 2 3")
    return tmp_path


def test_check_table_and_json(capsys, families_dir):
    from simlab.check import check_family, load_pair

    argv = ["check", "--retain", str(families_dir / "retain.npz"), "--forget",
            str(families_dir / "forget.npz"), "--batch", "2", "--alpha", "0.1",
            "--eta-rel", "1.2", "--scheme", "with"]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert "divergent" in table and "s_1(S_rf)" in table and "k=2" in table
    assert cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    R, F = load_pair(families_dir / "retain.npz", families_dir / "forget.npz")
    ref = check_family(R, forget=F, batch=2, alpha=0.1, eta_rel=1.2, scheme="with")
    assert out["rho"] == ref.rho > 1 and out["critical_lr"] == ref.critical_lr
    assert out["verdict"] == "divergent" and out["k"] == 2 and out["n_forget"] == 2


@pytest.mark.parametrize("retain, extra, needles", [
    ("vector.npy", [], ["vector.npy", "shape (n, p)", "(5,)"]),
    ("four_d.npy", ["--kind", "factors"], ["four_d.npy", "shape (n, k, p)"]),
    ("factors3d.npy", [], ["factors3d.npy", "ambiguous", "--kind"]),
    ("nan.npz", [], ["nan.npz", "NaN"]),
    ("inf.npy", [], ["inf.npy", "NaN or inf"]),
    ("not_psd.npz", [], ["not_psd.npz", "positive semi-definite"]),
    ("not_sym.npz", [], ["not_sym.npz", "symmetric"]),
    ("not_square.npz", [], ["not_square.npz", "(n, p, p)"]),
    ("complex.npy", [], ["complex.npy", "real numeric array", "complex"]),
    ("strings.npy", [], ["strings.npy", "real numeric array"]),
    ("empty.npy", [], ["empty.npy", "at least one sample"]),
    ("objects.npy", [], ["objects.npy", "cannot read", "allow_pickle"]),
    ("truncated.npy", [], ["truncated.npy", "cannot read"]),
    ("truncated.npz", [], ["truncated.npz", "cannot read"]),
    ("zero_bytes.npy", [], ["zero_bytes.npy", "cannot read"]),
    ("zip_as.npy", [], ["zip_as.npy", "cannot read", ".npz archive under a .npy"]),
    ("retain.npz", ["--forget-batch", "2"], ["--forget-batch 2 needs a forget set"]),
    ("retain.npz", ["--batch", "-1"], ["--batch", "must be >= 1, got -1"]),
    ("two_keys.npz", [], ["two_keys.npz", "exactly one of the keys"]),
    ("wrong_key.npz", [], ["wrong_key.npz", "exactly one of the keys", "grads"]),
    ("retain.txt", [], ["retain.txt", ".npy or .npz"]),
    ("missing.npy", [], ["missing.npy", "no such file"]),
    ("retain.npz", ["--forget", "{root}/p7.npz", "--alpha", "0.1"],
     ["p7.npz", "p=7 but retain has p=5"]),
    ("retain.npz", ["--forget", "{root}/dense.npz", "--alpha", "0.1"],
     ["dense.npz", "same representation"]),
    ("retain.npz", ["--alpha", "0.3"], ["--alpha 0.3 needs a forget set"]),
    ("retain.npz", ["--forget", "{root}/forget.npz", "--alpha", "1.5"],
     ["alpha must lie in [0, 1]"]),
    ("retain.npz", ["--batch", "7"], ["batch must be <= 6"]),
])
def test_check_malformed_input_is_one_line(capsys, families_dir, retain, extra,
                                           needles):
    extra = [a.format(root=families_dir) for a in extra]
    argv = ["check", "--retain", str(families_dir / retain), "--eta", "0.1"]
    if "--batch" not in extra:
        argv += ["--batch", "1"]
    _one_line_error(capsys, argv + extra, *needles)


def test_check_kappa_plus_positive_is_a_verdict_not_a_crash(capsys, families_dir):
    """eta* = 0 (forget outside the retain span): exit 0, verdict divergent,
    eta / eta* inf."""
    argv = ["check", "--retain", str(families_dir / "low.npy"), "--forget",
            str(families_dir / "outside.npy"), "--batch", "1", "--alpha", "0.1",
            "--eta", "0.1", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "divergent" and out["critical_lr"] == 0.0
    assert out["eta_over_critical"] == "inf" and out["kappa_plus"] > 0


def test_check_help_says_how_it_relates_to_threshold(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["check", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "check vs threshold: two commands with disjoint inputs" in out
