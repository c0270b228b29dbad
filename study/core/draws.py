"""Draws from Gaussian approximations, for the ArviZ files (seeded, numpy).

A Gaussian approximation is its mean and covariance; the draws are there for ArviZ
(``az.summary``, forest plots). Their count is capped so that one fit's draws hold at most
``DRAW_ELEMENTS`` numbers (80 MB): 1,000 draws of a 112,510-weight network are 900 MB per
fit, held by the worker, sent to the main process and written to the cache and to the
ArviZ file, for every method that draws. Up to 10,000 coordinates the requested count
(``Settings.draws``, 1,000) is kept; above, ``DRAW_ELEMENTS // d`` draws, at least
``MIN_DRAWS``.
"""

from __future__ import annotations

import numpy as np

DRAW_ELEMENTS = 10_000_000
MIN_DRAWS = 100


def draw_count(requested: int, d: int) -> int:
    """Draws stored for a ``d``-dimensional approximation when ``requested`` are asked for."""
    if requested * d <= DRAW_ELEMENTS:
        return requested
    return min(requested, max(MIN_DRAWS, DRAW_ELEMENTS // max(1, d)))


def diagonal_gaussian_draws(mean: np.ndarray, sd: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``draw_count(n, d)`` draws from ``N(mean, diag(sd^2))``, shape ``(1, n', d)`` (one chain).

    Scaled and shifted in place: one array of draws at its peak, not three.
    """
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((draw_count(n, mean.shape[0]), mean.shape[0]))
    draws *= sd
    draws += mean
    return draws[None]


def gaussian_draws(mean: np.ndarray, covariance: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``draw_count(n, d)`` draws from ``N(mean, covariance)``, shape ``(1, n', d)`` (one chain)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(covariance)
    return (mean + rng.standard_normal((draw_count(n, mean.shape[0]), mean.shape[0])) @ chol.T)[None]
