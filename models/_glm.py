"""Helpers shared by the generalised linear models: exact posteriors and laplace-torch modules."""

from __future__ import annotations

import torch
from torch import nn

from ._contract import GaussianPosterior


def conjugate_linear_posterior(
    X: torch.Tensor, y: torch.Tensor, prior_scale: float, noise_scale: float
) -> GaussianPosterior:
    """Exact posterior of ``w`` in ``y ~ N(X w, noise^2 I)``, ``w ~ N(0, prior^2 I)``.

    Precision ``Lambda = X^T X / noise^2 + I / prior^2``, mean
    ``Lambda^{-1} X^T y / noise^2`` (Bishop, PRML eq. 3.53-3.54).

    Parameters
    ----------
    X : torch.Tensor
        Shape ``(N, D)``.
    y : torch.Tensor
        Shape ``(N,)``.
    """
    D = X.shape[-1]
    precision = X.T @ X / noise_scale**2 + torch.eye(D, dtype=X.dtype) / prior_scale**2
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    mean = covariance @ (X.T @ y) / noise_scale**2
    return GaussianPosterior(mean=mean, covariance=0.5 * (covariance + covariance.T))


def posterior_precision(X: torch.Tensor, prior_scale: float, noise_scale: float) -> torch.Tensor:
    """``Lambda = X^T X / noise^2 + I / prior^2``, shape ``(D, D)``."""
    D = X.shape[-1]
    return X.T @ X / noise_scale**2 + torch.eye(D, dtype=X.dtype) / prior_scale**2


class BinaryLogits(nn.Module):
    """Logistic regression as a 2-class classifier: outputs the logits ``[0, x w + b]``.

    Softmax over ``[0, z]`` is ``sigmoid(z)``, so laplace-torch's ``classification``
    likelihood is exactly the Bernoulli-logit likelihood of the Pyro model.
    """

    def __init__(self, in_features: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.cat([torch.zeros_like(z), z], dim=-1)
