"""simlab.check: the exact verdict for a user's own family (issue 13, item 1).

Truth: the dense family built by explicit outer products
(``reference.dense_from_factors``), the enumeration references of
``reference.py`` (rho by enumerating every minibatch; the mean-square growth
curve on the full parameter space), and the dense routes of the package.
Tolerance 1e-10 relative between two exact computations (rounding of small
eigenproblems in different coordinates).
"""

import json
import math

import numpy as np
import numpy.testing as npt
import pytest

from simlab.check import check_family, load_family, load_pair
from simlab.curvature import Factors, coherence_dial, range_basis
from simlab.stability import critical_lr, escape_time

import reference

TOL = 1e-10


def _family(seed, n=3, k=2, p=4, n_f=2, k_f=2):
    """Rank-k retain factors and forget factors inside the retain span."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, k, p))
    Gf = np.einsum("fkm,mp->fkp", rng.standard_normal((n_f, k_f, n * k)),
                   G.reshape(-1, p)) / (n * k)
    return G, Gf


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_check_family_rank_k_matches_references(scheme):
    G, Gf = _family(0)
    Hd, Fd = reference.dense_from_factors(G), reference.dense_from_factors(Gf)
    kw = dict(batch=2, forget_batch=1, scheme=scheme, alpha=0.1)
    c = check_family(Factors(G), forget=Factors(Gf), eta_rel=0.8, **kw)
    d = check_family(Hd, forget=Fd, eta_rel=0.8, **kw)
    assert (c.representation, c.k, d.representation, d.k) == ("rank-k", 2, "dense", 0)
    for field in ("rho", "critical_lr", "eta", "kappa_plus", "sigma", "sigma_r",
                  "sigma_f", "lam_rr", "lam_ff", "s_rf", "coherence_bound",
                  "direction_bound", "mean_lower_bound", "sharpness"):
        npt.assert_allclose(getattr(c, field), getattr(d, field), rtol=TOL,
                            err_msg=field)
    assert c.escape_time == d.escape_time
    # rho against the enumeration of every minibatch (THEORY 2-3)
    ref = reference.radius(Hd, c.eta, 2, scheme, Fd, 1, 0.1)
    npt.assert_allclose(c.rho, ref, rtol=TOL)
    assert c.verdict == "stable" and c.rho <= 1.0
    npt.assert_allclose(c.eta_over_critical, 0.8, rtol=1e-15)
    # the bounds hold: eta* <= bound (tightness in (0, 1])
    assert 0 < c.direction_tightness <= 1 + 1e-12
    assert 0 < c.coherence_tightness <= 1 + 1e-12
    npt.assert_allclose(c.coherence_tightness * c.coherence_bound,
                        critical_lr(Hd, 2, forget=Fd, forget_batch=1, alpha=0.1,
                                    scheme="bernoulli"), rtol=TOL)


@pytest.mark.parametrize("law", ["range", "isotropic"])
def test_check_escape_time_from_the_stated_law(law):
    """The first passage from the law equals the enumeration reference's growth
    curve on the full space: delta_0 ~ N(0, Q Q^T) ('range') or N(0, I)."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((3, 1, 4))        # p = 4 > n k = 3: mass outside U
    Hd = reference.dense_from_factors(G)
    eta = 1.05 * critical_lr(Hd, 1, scheme="with")
    c = check_family(Factors(G), batch=1, eta=eta, scheme="with", law=law,
                     escape_factor=50.0, horizon=400)
    Q = range_basis(Hd)
    S0 = Q @ Q.T if law == "range" else np.eye(4)
    curve = reference.growth_curve(reference.operator_matrix(Hd, eta, 1, "with"),
                                   S0, 400)
    hit = np.flatnonzero(curve >= 50.0)
    assert c.verdict == "divergent"
    assert c.escape_time == (float(hit[0]) if hit.size else math.inf)
    assert hit.size and hit[0] > 1
    npt.assert_allclose(c.asymptotic_escape_time, np.log(50.0) / np.log(c.rho),
                        rtol=1e-12)


def test_check_sgd_dial_and_json():
    """The coherence dial (THEORY 7): eta* = 1 at B = n, sigma = s; JSON is
    strict (non-finite numbers as strings)."""
    c = check_family(coherence_dial(10, 3), batch=10, eta=0.5)
    assert (c.n_forget, c.representation, c.verdict) == (0, "rank-one", "stable")
    # GD at B = n: rho = max (1 - eta lambda)^2 over the mean Hessian's
    # eigenvalues 2 (the shared axis) and 2 / s (the others)
    npt.assert_allclose([c.critical_lr, c.sigma, c.rho],
                        [1.0, 3.0, (1 - 0.5 * 2 / 3) ** 2], rtol=1e-12)
    out = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert out["coherence_bound"] == "inf" and out["escape_time"] == "inf"
    assert out["s_rf"] == "nan" and out["rho"] == c.rho
    assert "rho(T)" in c.table() and "escape time (range delta_0)" in c.table()


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_check_eta_rel_at_one_is_the_threshold(scheme):
    """rho(T) at eta = eta* is 1 to rounding (TOL, as in the module docstring):
    eta* solves a generalized eigenproblem and rho is a separate eigenproblem."""
    G, _ = _family(5, n=4, k=3, p=6)
    c = check_family(Factors(G), batch=2, eta_rel=1.0, scheme=scheme)
    npt.assert_allclose(c.rho, 1.0, rtol=TOL)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=0.1, eta_rel=0.5), "exactly one of eta and eta_rel"),
    (dict(), "exactly one of eta and eta_rel"),
    (dict(eta=0.1, law="gaussian"), "law must be one of"),
    (dict(eta=0.1, horizon=0), "horizon must be >= 1"),
    (dict(eta=0.1, alpha=0.2), "needs a forget set"),
    (dict(eta=0.1, forget_batch="x"), "forget_batch must be an integer"),
    (dict(eta=0.1, forget_batch=-5), "forget_batch must be >= 1"),
    (dict(eta=-1.0), "eta must be > 0"),
])
def test_check_family_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_family(np.eye(3), batch=1, **kwargs)


def test_check_eta_rel_refused_when_every_eta_diverges():
    G, _ = _family(1)
    Gf = np.random.default_rng(2).standard_normal((2, 2, 4)) * 10  # kappa_+ > 0
    with pytest.raises(ValueError, match="eta_rel needs a finite positive"):
        check_family(Factors(G), forget=Factors(Gf), alpha=0.5, batch=1,
                     eta_rel=0.5)


def test_check_every_eta_diverges_when_kappa_plus_is_positive():
    """Forget directions outside the retain span (p = 10 > n_r = 4): kappa_+ > 0,
    eta* = 0, so any eta is infinitely far above the threshold: the verdict is
    divergent and eta / eta* is inf (strict JSON: the string "inf"); rho is
    the enumeration reference's."""
    rng = np.random.default_rng(1)
    R, F = rng.standard_normal((4, 10)), rng.standard_normal((2, 10))
    c = check_family(R, forget=F, alpha=0.1, batch=2, forget_batch=1, eta=0.1)
    assert c.kappa_plus > 0 and c.critical_lr == 0.0
    assert c.verdict == "divergent" and c.eta_over_critical == math.inf
    npt.assert_allclose(c.rho, reference.radius(R, 0.1, 2, "without", F, 1, 0.1),
                        rtol=TOL)
    out = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert out["eta_over_critical"] == "inf" and out["critical_lr"] == 0.0
    assert "eta / eta*                   inf" in c.table()


def test_file_formats_give_the_same_family(tmp_path):
    G, Gf = _family(4, n=4, k=3, p=5)
    Hd = reference.dense_from_factors(G)
    np.savez(tmp_path / "f.npz", factors=G)
    np.save(tmp_path / "f.npy", G)
    np.savez(tmp_path / "d.npz", hessians=Hd)
    np.save(tmp_path / "d.npy", Hd)
    np.savez(tmp_path / "r1.npz", rank_one=G[:, 0])
    np.save(tmp_path / "r1.npy", G[:, 0])
    kw = dict(batch=2, eta=0.05)
    ref = check_family(Hd, **kw).rho
    for path, kind in [("f.npz", None), ("f.npy", "factors"), ("d.npz", None),
                       ("d.npy", "dense")]:
        fam = load_family(tmp_path / path, kind=kind)
        npt.assert_allclose(check_family(fam, **kw).rho, ref, rtol=TOL)
    a = check_family(load_family(tmp_path / "r1.npz"), **kw).rho
    b = check_family(load_family(tmp_path / "r1.npy"), **kw).rho
    assert a == b == check_family(G[:, 0], **kw).rho
    retain, forget = load_pair(tmp_path / "f.npz", tmp_path / "r1.npy")
    assert isinstance(retain, Factors) and forget.shape == (4, 5)


def test_escape_time_law_matches_public_escape_time():
    """'range' is escape_time with perturbation_samples = the range basis."""
    G, _ = _family(6, n=5, k=2, p=30)
    Hd = reference.dense_from_factors(G)
    eta = 1.2 * critical_lr(Hd, 2)
    c = check_family(Factors(G), batch=2, eta=eta, horizon=300)
    assert c.escape_time == escape_time(Hd, eta, 2, horizon=300,
                                        perturbation_samples=range_basis(Hd).T)
