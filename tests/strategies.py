"""Hypothesis strategies: small Hessian families, batch sizes, mixing weights."""

import numpy as np
from hypothesis import strategies as st

SCHEMES = st.sampled_from(["bernoulli", "with", "without"])


@st.composite
def families(draw, n_min=1, n_max=6, p_max=4, rank_one=None):
    """(hessians, rank_one) with Gaussian factors; dense ones have random rank."""
    n = draw(st.integers(n_min, n_max))
    p = draw(st.integers(1, p_max))
    r1 = draw(st.booleans()) if rank_one is None else rank_one
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(-1, 1, n))
    if r1:
        return rng.standard_normal((n, p)) * scales[:, None], True
    k = draw(st.integers(1, p))
    A = rng.standard_normal((n, p, k))
    return (A @ A.transpose(0, 2, 1)) * scales[:, None, None] / k, False


@st.composite
def unlearning_problems(draw, n_max=5, p_max=3, rank_one=None):
    """(retain, forget, B_r, B_f, alpha, rank_one) with the forget set inside
    range(retain), so that small alpha can be stable."""
    retain, r1 = draw(families(n_min=2, n_max=n_max, p_max=p_max, rank_one=rank_one))
    n_f = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if r1:
        # combinations of retain factors stay in range(retain)
        forget = rng.standard_normal((n_f, retain.shape[0])) @ retain
    else:
        W = rng.standard_normal((n_f, retain.shape[0])) ** 2
        forget = np.einsum("fi,ijk->fjk", W, retain) / retain.shape[0]
    B_r = draw(st.integers(1, retain.shape[0]))
    B_f = draw(st.integers(1, n_f))
    alpha = draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.5, 0.9, 1.0]))
    return retain, forget, B_r, B_f, alpha, r1
