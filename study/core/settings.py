"""Run settings: one frozen object, stored with every result."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, replace


# Master seeds are in [0, MAX_SEED).
MAX_SEED = 2**32
# Bytes an exact Hessian may add to a worker while it is built (``Settings.memory_budget``).
DEFAULT_MEMORY_BUDGET = 10**9


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
    collapse_steps : int
        Steps of the ``expected_loss`` run (times the model's ``svi_steps_scale``). It
        never converges: it is there to show log sigma falling, and its slope per 1000
        steps is measured over the last half of the run.
    init_scale : float
        Initial guide sd where there is no diagonal Laplace sd to start from.
    sigma_start : str
        ``"laplace"``: mean-field sigma starts at the diagonal Laplace sd ``1/sqrt(H_ii)``
        at the MAP where that exists (``study.methods.svi.sigma_start``); ``"scale"``: at
        ``init_scale``.
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
    stop_early : bool
        Stop an SVI fit with a decaying learning rate (``svi_meanfield``, ``svi_lowrank``,
        ``svi_fullrank``) once it has converged; ``svi_steps`` is then a cap
        (``study.methods.svi.converged``). Constant-rate runs (``expected_loss``, the
        ablation) never stop early: they are there to show a trend.
    check_every : int
        Steps between two convergence checks.
    min_steps_fraction : float
        No check before this fraction of the step cap (0.3: 900 of 3,000 steps, where the
        rate has fallen to a quarter of its start). At 0.15 three posteriordb mean-field
        fits (mesquite, nes1984, gp_regr) stopped after 500 steps short of their fixed
        point (largest residual |z| 5.8, 3.5, 3.2): a slow trend hides in the noise of a
        short window at a high rate.
    stop_sigma_drift : float
        Converged only when the median over parameters of the relative change of
        sigma_i between the two halves of the averaging window is below this, and every
        such change below ``stop_sigma_drift_max`` or within its Monte Carlo noise
        (``study.methods.svi.converged``)...
    stop_loss_z : float
        ... and the mean loss fell between the two halves by less than this many
        standard errors of that difference.
    device : str
        ``"cpu"`` or ``"cuda"``: where the network fits (mean-field SVI, IVON) run.
        Everything else, and every result, stays on the CPU.
    memory_budget : int
        Bytes an exact Hessian may add to a worker while it is built
        (``study.core.joint.FlatJoint.hessian_chunk``). It decides how many Hessian-vector
        products share a batched pass. That moves a Hessian only by rounding (at most 2e-16
        of its largest entry over the default models, one pass against one product per
        pass), but an SVI run started from it then takes another path, so the budget is
        part of a fit's cache key.
    """

    seed: int = 0
    svi_steps: int = 3000
    particles: int = 32
    lr_start: float = 0.05
    lr_end: float = 0.0005
    average_fraction: float = 0.25
    collapse_lr: float = 0.05
    collapse_steps: int = 1000
    init_scale: float = 0.1
    sigma_start: str = "laplace"
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
    stop_early: bool = True
    check_every: int = 100
    min_steps_fraction: float = 0.3
    stop_sigma_drift: float = 0.01
    stop_sigma_drift_max: float = 0.025
    stop_loss_z: float = 2.0
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self):
        if self.sigma_start not in ("laplace", "scale"):
            raise ValueError(f"sigma_start must be 'laplace' or 'scale', got {self.sigma_start!r}")

    @classmethod
    def make(cls, quick: bool = False, **overrides) -> "Settings":
        # A smoke run of every built-in model in under two and a half minutes on 2 cores: 150
        # steps start at the MAP and the diagonal Laplace sd, where most posteriors' fits already
        # are, and the fixed point is checked at 64 draws (on the 10^3-weight networks its exact
        # Hessian-vector products took 18 s and 10 s at 128, 9 s and 5 s at 64; at 32 the
        # linear response's ELBO Hessian of diamonds' 26 parameters came out indefinite). At
        # 600 steps and 128 draws the 49 models took 4 min 27 s, now 2 min 20 s. Eight particles
        # instead of 32 saved nothing measurable and left seed_linear's sigma off its fixed point.
        base = cls(
            quick=True, svi_steps=150, collapse_steps=150, nuts_warmup=100, nuts_draws=100, draws=400,
            elbo_draws=400, svi_seeds=2, curvature_draws=64, ablation_models=("seed_linear",), sweep_halvings=1,
            # The steps are the cap anyway; stopping earlier saves little and leaves σ short of
            # its fixed point.
            stop_early=False,
        ) if quick else cls()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def fit_seed(self, *names: str) -> int:
        """A seed for one fit: the master seed mixed with the fit's names (stable across runs).

        Master seeds in ``[0, 2**31 - 1)`` map into ``[0, 2**31 - 1)`` as they always
        did; seeds in ``[2**31 - 1, 2**32)`` (``MAX_SEED`` is exclusive) map into
        ``[2**31 - 1, 2**32)``. For a fixed fit name each map is a bijection
        (1 000 003 is prime to both moduli, ``2**31 - 1`` being prime and
        ``2**31 + 1 = 3 * 715 827 883``), so two master seeds never give one fit the
        same seed. Every result is below ``2**32``, as NumPy's seeding requires.
        """
        mix = zlib.crc32("/".join(names).encode())
        small = 2**31 - 1
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.seed < small:
            return (self.seed * 1_000_003 + mix) % small
        return small + ((self.seed - small) * 1_000_003 + mix) % (MAX_SEED - small)

    def as_dict(self) -> dict:
        return asdict(self)

