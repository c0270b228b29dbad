"""Draws from Gaussian approximations, for the ArviZ files (seeded, numpy)."""

from __future__ import annotations

import numpy as np


def diagonal_gaussian_draws(mean: np.ndarray, sd: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` draws from ``N(mean, diag(sd^2))``, shape ``(1, n, d)`` (one chain)."""
    rng = np.random.default_rng(seed)
    return (mean + sd * rng.standard_normal((n, mean.shape[0])))[None]


def gaussian_draws(mean: np.ndarray, covariance: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` draws from ``N(mean, covariance)``, shape ``(1, n, d)`` (one chain)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(covariance)
    return (mean + rng.standard_normal((n, mean.shape[0])) @ chol.T)[None]
