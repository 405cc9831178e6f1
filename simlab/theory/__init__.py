"""Closed forms derived in ``derivations/`` (THEORY sections 7 and 11)."""

from .dial import dial_critical_lr, dial_spectral_radius

__all__ = ["dial_critical_lr", "dial_spectral_radius"]
