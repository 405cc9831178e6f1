"""memorization-curvature figure (--quick) and the "memorization" sweep cell."""

import numpy as np

from simlab.experiments import memorization_curvature as M


def test_quick_figure_runs_and_is_consistent():
    ds = M.run(quick=True)
    # invariants, not expected numbers: keep = 1 leaves W - W0 (in the span of
    # the patches) unchanged, so the interpolating CNN still recites everything
    full = ds.sel(keep=1.0)
    train_fit = ds.c_recitation.sel(approach="retrain")    # exists for every regime
    assert np.all(np.isfinite(train_fit.values))
    assert np.all(full.recitation.values == 1.0)
    assert np.all(full.clean_acc.values == 1.0)
    for v in ("recitation", "clean_acc", "test_acc", "lin_recitation",
              "lin_recitation_pred", "c_recitation", "c_test_acc"):
        x = ds[v].values
        assert np.all((x >= 0) & (x <= 1)), v
    assert np.all(ds.trace_ratio.values > 0)
    assert np.all(ds.escape_step.values >= 0)
    assert "git_revision" in ds.attrs and ds.attrs["seconds"] > 0
    M.plot(ds)


def test_memorization_cell_through_sweep(tmp_path):
    from simlab.sweep import run_sweep

    spec = ('experiment = "memorization"\nseed = 1\nreplicates = 1\n'
            '[fixed]\nd = 40\nm = 3\nn = 10\nsteps = 100\nn_test = 50\n'
            'p_flip = 0.3\n'
            '[axes]\nsnr = { values = [0.1, 0.5] }\nkeep = { values = [1.0, 0.5] }\n')
    ds = run_sweep(spec, tmp_path / "mem.zarr").load()
    assert set(ds.data_vars) >= set(M.MemorizationCell.METRICS)
    rec = ds["recitation"].values
    fin = np.isfinite(rec)
    assert fin.any() and np.all((rec[fin] >= 0) & (rec[fin] <= 1))
    tr = ds["trace_ratio"].values
    assert np.all(tr[np.isfinite(tr)] > 0)
    # keep = 1 is the identity on W - W0: an interpolating run recites everything
    full = ds["recitation"].sel(keep=1.0).values
    assert np.all(full[np.isfinite(full)] == 1.0)
