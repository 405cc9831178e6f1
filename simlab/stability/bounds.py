"""Closed-form bounds on the SGD threshold (THEORY section 5)."""

import numpy as np

from .._validation import check_batch, check_hessians
from ..coherence import coherence_measure
from ..curvature import mean_hessian
from .radius import critical_lr

__all__ = ["coherence_bound_lr", "coherence_bound_tightness"]


def coherence_bound_lr(hessians, batch):
    """Learning rate above which Bernoulli SGD provably diverges (Dexter et al.).

    Linearized SGD diverges if ``eta lambda_max(H) >= sigma (n/B - 1)^{-1/2}``,
    so ``eta* <= sigma / (lambda_max(H) sqrt(n/B - 1))``. Returns ``inf`` at
    ``B = n`` (the bound is vacuous there).

    Notes
    -----
    Dexter, Ocejo, Keerthi, Gupta, Acharya, Khanna, "A Precise Characterization
    of SGD Stability Using Loss Surface Geometry", ICLR 2024 (arXiv:2401.12332);
    THEORY section 5.
    """
    H, _ = check_hessians(hessians)
    n = H.shape[0]
    batch = check_batch(batch, n)
    if batch == n:
        return np.inf
    lam = np.linalg.eigvalsh(mean_hessian(H))[-1]
    return float(coherence_measure(H) / (lam * np.sqrt(n / batch - 1.0)))


def coherence_bound_tightness(hessians, batch):
    """Ratio ``eta* / eta_bound`` (in ``(0, 1]`` whenever the bound holds)."""
    bound = coherence_bound_lr(hessians, batch)
    return float(critical_lr(hessians, batch, scheme="bernoulli") / bound)
