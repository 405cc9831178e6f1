"""Closed forms derived in ``derivations/`` (THEORY sections 7 and 11).

``simlab.theory.rmt`` holds the random-matrix predictions for the linear model;
its ``critical_lr``, ``coherence_measure``, ``block_coherence`` and
``kappa_plus`` are reached as
``simlab.theory.rmt.*`` so they do not shadow the exact functions of the same
names in :mod:`simlab.stability` and :mod:`simlab.coherence`.
"""

from . import rmt, rmt_cnn
from .dial import dial_critical_lr, dial_spectral_radius, dial_table
from .rmt import (
    ascent_rate,
    ascent_rate_limit,
    crossing_snr,
    crossing_snr2_limit,
    sharpness,
)
from .rmt_cnn import cnn_coherence, cnn_coherence_limits

__all__ = ["cnn_coherence", "cnn_coherence_limits",
           "rmt_cnn", "ascent_rate", "ascent_rate_limit", "crossing_snr",
           "crossing_snr2_limit", "dial_critical_lr", "dial_spectral_radius",
           "dial_table", "rmt", "sharpness"]
