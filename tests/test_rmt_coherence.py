"""The rmt-coherence figure states claim 4 where it holds (issue 10 item 6).

Monotonicity of the seed means is claimed, and tested, only above each
crossover (sigma: ``q = SNR^2 d / sqrt(d-1) >= 1``; ``r``: ``n SNR^2 >= 1``);
below it the claim is agreement with the RMT curve, which for ``sigma`` still
rises (folded-normal mean). Seeds are fixed, so the tests are deterministic;
the thresholds' false-failure rates are stated where they are used.
"""

import numpy as np
import pytest
import xarray as xr

from simlab.experiments import rmt_coherence as E
from simlab.theory import rmt


@pytest.fixture(scope="module")
def ds():
    # 9 SNRs over [0.01, 1] at (n, d) = (50, 1000): q = SNR^2 d/sqrt(d-1) spans
    # 0.003..32 and u = n SNR^2 0.005..50, so both sides of both crossovers
    return E.run(quick=True, configs=[(50, 1000)], snrs=list(np.geomspace(0.01, 1, 9)),
                 seeds=8, alphas=[0.3], fine=10)


def test_claims_hold_where_stated(ds):
    rows = E.claims(ds)
    assert {r["quantity"] for r in rows} == {"sigma", "rate"}
    for r in rows:
        # above the crossover: every step resolved the predicted way. The
        # measured smallest step is ~30 s.e. (sigma ~80): Z_STEP = 3 is far below
        assert r["n_steps"] >= 2 and r["monotone"], r
        # everywhere: agreement with the RMT. With 8 seeds a t(7) deviation of
        # 5 s.e. has probability 1.6e-3 per point, before the stated-error margin
        assert r["agree"], r
    assert "claim 4 holds" in ds.attrs["summary"]


def test_below_crossover_sigma_follows_folded_normal(ds):
    """Below ``q = 1`` sigma is not flat: the RMT curve rises by the
    folded-normal factor and the seed means follow it."""
    d = 1000
    snr = ds.snr.values
    q = snr**2 * d / np.sqrt(d - 1)
    pred = ds.pred_sigma_at_snr.isel(config=0).values
    below = q < 1
    # the prediction rises below the crossover, by ~ (sigma0 - 1) q^2/2 at small q,
    # after a dip of relative depth < 1e-3 at q << 1 (the normaliser)
    assert pred[below].min() > (1 - 1e-3) * pred[0]
    assert np.all(np.diff(pred[below & (q > 0.05)]) > 0)
    m = ds.sim_sigma.isel(config=0).mean("seed").values
    k = np.flatnonzero(below)[-1]                     # last point below: q ~ 0.68
    rise = (pred[k] - pred[0]) / (pred[0] - 1)
    mbar = lambda x: np.sqrt(2 / np.pi) * np.exp(-x**2 / 2) + x * __import__(  # noqa: E731
        "scipy.special").special.erf(x / np.sqrt(2))
    # leading order only: the RMT sigma also moves through the normaliser and the
    # (N-1)V/(N m) term, which make its relative rise 10.3 % smaller than the
    # folded-normal mean's here (deterministic; q = 0.32, n = 50, d = 1000; -2 % to
    # -30 % over the figure's configurations): 0.15 is that leading-order gap
    assert rise == pytest.approx(mbar(q[k]) / mbar(0) - 1, rel=0.15)
    assert (m[k] - m[0]) / (m[0] - 1) > 0.5 * rise      # the simulation rises too


def test_monotone_only_claimed_above_crossover(ds):
    """A non-monotone wiggle below the crossover that agrees with the RMT does
    not fail the claim; the same wiggle above it does."""
    bad = ds.copy(deep=True)
    q = ds.snr.values**2 * 1000 / np.sqrt(999)
    k_lo = int(np.flatnonzero(q < 0.05)[-1])
    pred = bad.pred_sigma_at_snr.values[0]
    vals = bad.sim_sigma.values
    vals[0, :, :] = pred[:, None] + 0.0 * vals[0]     # exact agreement, zero noise...
    vals[0, :, :] += np.linspace(-1, 1, vals.shape[2])[None, :] * 1e-3   # ...tiny
    vals[0, k_lo, :] -= 2e-3                          # wiggle below the crossover
    row = [r for r in E.claims(bad) if r["quantity"] == "sigma"][0]
    assert row["monotone"]
    k_hi = int(np.flatnonzero(q >= 1)[1])
    vals[0, k_hi, :] = vals[0, k_hi - 1, :]           # a flat step above it
    row = [r for r in E.claims(bad) if r["quantity"] == "sigma"][0]
    assert not row["monotone"]


def test_crossings_printed_only_where_they_exist(ds):
    n_f = int(ds.attrs["n_forget"])
    # r(0) = alpha n / n_f <= 1: no d >> n crossing
    assert np.isnan(E.dn_crossing_snr(50, n_f, 0.1))
    s = E.dn_crossing_snr(50, n_f, 0.3)
    assert rmt.ascent_rate_limit(50 * s**2, 50, n_f, 0.3) == pytest.approx(1, abs=1e-9)
    # the n -> infinity limit is approached only as n grows
    lim = rmt.crossing_snr2_limit(n_f, 0.3)
    errs = [abs(E.dn_crossing_snr(n, n_f, 0.3) ** 2 / lim - 1)
            for n in (50, 500, 50000)]
    assert errs[0] > 0.5 and errs[2] < 0.01 and errs[1] > errs[2]
    no = E.run(quick=True, configs=[(50, 400)], snrs=[0.01, 0.1, 1.0], seeds=2,
               alphas=[0.1], fine=4)
    assert "n -> infinity" not in no.attrs["summary"]
    assert "no d >> n crossing" in no.attrs["summary"]
    assert "n -> infinity limit" in ds.attrs["summary"]
    assert np.isnan(float(no.ninf_crossing_snr.isel(config=0, alpha=0)))


def test_plot(ds):
    assert isinstance(ds, xr.Dataset)
    assert E.plot(ds) is not None
