"""Run settings: one frozen object, stored with every result."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Settings:
    """Knobs of a study run.

    Attributes
    ----------
    seed : int
        Master seed; every fit derives its own from it and its names.
    svi_steps : int
        Optimisation steps per SVI fit (times the model's ``svi_steps_scale``).
    particles : int
        Vectorised Monte Carlo particles per SVI step.
    lr_start, lr_end : float
        Adam learning rate decays geometrically from ``lr_start`` to ``lr_end``
        over the run (the per-step decay is derived from the run length). The
        guide means step in units of their current sigma (``study.methods.optim``).
    average_fraction : float
        The reported mean-field ``(mu, sigma)`` is the average of the iterates over
        this last fraction of the run (Polyak-Ruppert averaging), not a noisy
        snapshot of the last one.
    collapse_lr : float
        Constant Adam learning rate of the objectives without an entropy term
        (``expected_loss``), as in the seed experiment: a decaying step size
        would slow the collapse it is there to show.
    init_scale : float
        Initial guide sd.
    draws : int
        Draws stored per approximation in the ArviZ files.
    nuts_warmup, nuts_draws, nuts_chains : int
        NUTS reference run length.
    elbo_draws : int
        Monte Carlo draws for the final ELBO estimate.
    svi_seeds : int
        Independent ``svi_meanfield`` runs (seeds); the fit reports their mean
        and its Monte Carlo standard error.
    curvature_draws : int
        Draws from the mean-field ``q`` (antithetic pairs) at which the exact
        Hessian of ``-log p`` is evaluated: the fixed-point residual and the
        linear-response covariance.
    ablation_models : tuple[str, ...]
        Models the four-run KL ablation (``kl_ablation``) runs on; it costs three
        constant-rate SVI runs per model.
    sweep_models : tuple[str, ...]
        Models of the data-size sweep (``data_sweep``).
    sweep_halvings : int
        The sweep fits the data at ``N, N/2, ..., N/2**sweep_halvings`` rows.
    device : str
        ``"cpu"`` or ``"cuda"``: where the network fits (mean-field SVI, IVON) run.
        Everything else, and every result, stays on the CPU.
    """

    seed: int = 0
    svi_steps: int = 3000
    particles: int = 32
    lr_start: float = 0.05
    lr_end: float = 0.0005
    average_fraction: float = 0.25
    collapse_lr: float = 0.05
    init_scale: float = 0.1
    draws: int = 1000
    nuts_warmup: int = 400
    nuts_draws: int = 600
    nuts_chains: int = 2
    elbo_draws: int = 1000
    svi_seeds: int = 3
    curvature_draws: int = 1024
    ablation_models: tuple[str, ...] = ("seed_linear", "linear_correlated")
    sweep_models: tuple[str, ...] = ("linear_correlated", "logistic_breast_cancer")
    sweep_halvings: int = 3
    device: str = "cpu"
    quick: bool = False

    @classmethod
    def make(cls, quick: bool = False, **overrides) -> "Settings":
        base = cls(
            quick=True, svi_steps=600, nuts_warmup=100, nuts_draws=100, draws=400, elbo_draws=400,
            svi_seeds=2, curvature_draws=128, ablation_models=("seed_linear",), sweep_halvings=1,
        ) if quick else cls()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def fit_seed(self, *names: str) -> int:
        """A seed for one fit: the master seed mixed with the fit's names (stable across runs)."""
        return (self.seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**31 - 1)

    def as_dict(self) -> dict:
        return asdict(self)
