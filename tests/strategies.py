"""The package's property tests draw from :mod:`simlab.testing`, the public
strategies; these adapters keep the tuple shapes the tests unpack."""

from hypothesis import strategies as st

from simlab import testing

SCHEMES = testing.schemes()


def families(n_min=1, n_max=6, p_max=4, rank_one=None):
    """(hessians, rank_one): rank-one factors or dense PSD of random rank, with
    drawn alignment (coherence) and a spread of per-sample scales."""
    kinds = ["rank_one", "dense"] if rank_one is None else (
        ["rank_one"] if rank_one else ["dense"])
    return st.one_of(*[testing.families(min_n=n_min, max_n=n_max, max_p=p_max,
                                        kind=k) for k in kinds]).map(
        lambda H: (H, H.ndim == 2))


def unlearning_problems(n_max=5, p_max=3, rank_one=None):
    """(retain, forget, B_r, B_f, alpha, rank_one), forget inside range(retain)."""
    kind = None if rank_one is None else ("rank_one" if rank_one else "dense")
    return testing.unlearning_problems(max_n=n_max, max_p=p_max, kind=kind).map(
        lambda pr: (pr.retain, pr.forget, pr.batch, pr.forget_batch, pr.alpha,
                    pr.retain.ndim == 2))
