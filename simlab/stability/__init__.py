"""Exact theory of the linearized SGD and unlearning dynamics (THEORY 2-6)."""

from .bounds import (
    coherence_bound_lr,
    coherence_bound_tightness,
    unlearning_bound_lr,
    unlearning_bound_tightness,
    unlearning_direction_bound_lr,
)
from .operator import (
    build_problem,
    gram_operator,
    scheme_coefficients,
    second_moment_matrix,
    second_moment_operator,
)
from .radius import (
    asymptotic_escape_time,
    critical_lr,
    escape_time,
    escape_time_from_rho,
    gaussian_span_moment,
    kappa_plus,
    mean_lower_bound,
    mean_square_growth,
    secular_weights,
    spectral_radius,
)

__all__ = [
    "asymptotic_escape_time",
    "escape_time_from_rho",
    "build_problem",
    "coherence_bound_lr",
    "coherence_bound_tightness",
    "critical_lr",
    "escape_time",
    "gaussian_span_moment",
    "gram_operator",
    "mean_lower_bound",
    "mean_square_growth",
    "secular_weights",
    "kappa_plus",
    "scheme_coefficients",
    "second_moment_matrix",
    "second_moment_operator",
    "spectral_radius",
    "unlearning_bound_lr",
    "unlearning_bound_tightness",
    "unlearning_direction_bound_lr",
]
