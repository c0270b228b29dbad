"""When a decaying-rate SVI fit stops: sigma's drift over the averaging window against its
Monte Carlo noise, and the objective's trend."""

from __future__ import annotations

import math

import numpy as np
import torch


STOP_FAMILY_FALSE_ALARM = 0.05


def drift_noise_limit(d: int, dof: int | None = None) -> float:
    """Šidák bound: ``d`` independent noise-only drifts, each divided by its estimated SE,
    all stay below it in absolute value with probability ``1 - STOP_FAMILY_FALSE_ALARM``.

    With ``dof`` the SEs are estimated from that many degrees of freedom and the ratios
    are Student-t (a normal quantile would be far too tight: at d = 1,000 and 14 dof one
    noise-only ratio in a thousand exceeds the normal bound of 4.05); without, normal.
    """
    from scipy.stats import norm, t

    tail = -math.expm1(math.log1p(-STOP_FAMILY_FALSE_ALARM) / max(1, d)) / 2.0
    return float(norm.isf(tail) if dof is None else t.isf(tail, dof))


def drift_standard_error(first_parts: torch.Tensor, second_parts: torch.Tensor) -> torch.Tensor:
    """Monte Carlo SE of each ``sd_second_i / sd_first_i - 1`` by batch means, shape ``(d,)``.

    ``first_parts`` and ``second_parts`` are the means of sigma over consecutive sub-blocks
    of each half of the window, shapes ``(n1, d)`` and ``(n2, d)``, ``n1, n2 >= 2``. Each
    half's mean has variance ``var(parts) / n`` (sub-blocks of a quarter of
    ``check_every`` steps, long against Adam's momentum time of about 10 steps, so taken
    as independent); the ratio's SE follows by the delta method.
    """
    m1, m2 = first_parts.mean(0), second_parts.mean(0)
    v1 = first_parts.var(0) / first_parts.shape[0]
    v2 = second_parts.var(0) / second_parts.shape[0]
    return torch.sqrt(v2 / m1**2 + v1 * m2**2 / m1**4)


def drift_beyond_noise(changes: torch.Tensor, se: torch.Tensor, dof: int | None = None,
                       family: int | None = None) -> float:
    """The largest ``|changes_i|`` among the coordinates whose change exceeds its noise bound
    ``drift_noise_limit(family, dof) * se_i`` (0 when none does): sigma's drift that Monte Carlo
    noise does not explain. With no SE known (``se_i = 0``), every change counts. ``family``
    (default ``d``) is how many changes are tested together: ``K d`` for ``K`` seeds."""
    changes = torch.as_tensor(changes).abs()
    family = changes.numel() if family is None else max(family, changes.numel())
    beyond = changes >= drift_noise_limit(family, dof) * torch.as_tensor(se)
    return float(changes[beyond].max()) if bool(beyond.any()) else 0.0


def converged(losses: np.ndarray, sd_first: torch.Tensor, sd_second: torch.Tensor, settings,
              first_parts: torch.Tensor | None = None, second_parts: torch.Tensor | None = None) -> bool:
    """The stopping rule of a decaying-rate SVI fit, applied to its current averaging window.

    With ``drift_i = sd_second_i / sd_first_i - 1`` (sigma_i averaged over each half of the
    window) and ``se_i`` its Monte Carlo SE (``drift_standard_error``, from the sub-block
    means ``first_parts``/``second_parts``; 0 when they are not given), all must hold:

    * no systematic drift: ``|median_i drift_i| < stop_sigma_drift``, and
      ``median_i |drift_i| < max(stop_sigma_drift, 2 median_i se_i)``. A trend moves most
      sigmas, in one direction (the signed median) or in both (the median size, which under
      noise alone is about 0.67 of the typical SE);
    * no single sigma still moving: every ``|drift_i| < max(stop_sigma_drift_max,
      z_d se_i)``, with ``z_d`` the Šidák bound for ``d`` coordinates at a 5% family false
      alarm, Student-t on the sub-blocks' degrees of freedom (``drift_noise_limit``). The fixed bound keeps one slow parameter from stopping
      short; the noise bound stops a fit whose remaining changes are the optimiser's noise,
      which grows with d (a fixed 2.5% on the largest of 10³ noisy changes never holds).
      The fixed-point residual (``study.checks.fixed_point``) stays the proof;
    * the objective has stopped falling: the mean loss of the first half minus that of
      the second is below ``stop_loss_z`` standard errors of that difference, the
      per-step losses taken as independent Monte Carlo draws (their noise is the
      particles' sampling noise, which dwarfs the step-to-step trend at convergence).

    Parameters
    ----------
    losses : np.ndarray
        The window's per-step losses, shape ``(n,)``, first half then second half.
    sd_first, sd_second : torch.Tensor
        Shape ``(d,)``: sigma averaged over each half of the window.
    first_parts, second_parts : torch.Tensor, optional
        Shapes ``(n1, d)``, ``(n2, d)``: sigma averaged over sub-blocks of each half.
    """
    signed = sd_second / sd_first - 1.0
    drift = signed.abs()
    if first_parts is not None and second_parts is not None and min(len(first_parts), len(second_parts)) >= 2:
        se = drift_standard_error(first_parts, second_parts)
        dof = len(first_parts) + len(second_parts) - 2
    else:
        se, dof = torch.zeros_like(drift), None
    if not abs(float(signed.median())) < settings.stop_sigma_drift:
        return False
    if not float(drift.median()) < max(settings.stop_sigma_drift, 2.0 * float(se.median())):
        return False
    limit = torch.clamp(drift_noise_limit(drift.numel(), dof) * se, min=settings.stop_sigma_drift_max)
    if not bool((drift < limit).all()):
        return False
    half = len(losses) // 2
    first, second = losses[:half], losses[half:]
    se_loss = math.sqrt(first.var(ddof=1) / len(first) + second.var(ddof=1) / len(second))
    return float(first.mean() - second.mean()) < settings.stop_loss_z * se_loss
