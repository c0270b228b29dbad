"""Mean-field SVI and its sigma-collapsing expected-loss variant.

Both train the same guide, an independent Gaussian ``N(mu_i, sigma_i^2)`` over every
unconstrained latent ``z_i`` (Pyro's ``AutoNormal``), with ``sigma`` stored through a
softplus (so ``log sigma ~ softplus^-1(sigma)`` once sigma is small), reparameterised, and
fitted with vectorised particles. They differ only in the objective:

* ``svi_meanfield``: the full ELBO, ``E_q[log p(y|z)] + E_q[log p(z)] + H[q]``. At its
  optimum ``sigma_i^-2 = E_q[H_ii]``, the expected diagonal of the Hessian of
  ``-log p(z, y)`` (Opper & Archambeau, "The Variational Gaussian Approximation
  Revisited", Neural Computation 2009).
* ``expected_loss``: ``E_eps[-log p(y | mu + sigma eps)]`` alone, no prior, no
  entropy. Its gradient in ``sigma`` is ``E[eps * dL/dz] ~ sigma H_ii > 0``, so
  ``log sigma`` decreases without bound.

The parts, one file each:

==============  ===========================================================================
``objectives``  the ELBO and its masked variants; the self-checking JIT-compiled estimator
``stopping``    sigma's drift against its noise, and the stopping rule
``averaging``   the iterate averages and the checks, step by step, for one or many seeds
``start``       the means at the MAP, sigma at the diagonal Laplace sd
``plan``        particles, mini-batches, precision: the small and the large regime
``loop``        one fit through Pyro's ``SVI`` (the expected-loss run, the large regime)
``seeds``       the mean-field seeds as one vectorised fit, each on its own random stream
``meanfield``   the study's two fits: the seeds pooled, their fixed points, the collapse run
==============  ===========================================================================
"""

from study.methods.svi.averaging import AveragedIterates, run_and_average
from study.methods.svi.loop import (
    SVIRun, _log_sigma_slope, _trajectory, elbo_estimate, guide_loc_scale, loc_scale_reader, optimise,
)
from study.methods.svi.meanfield import (
    SEEDS_APART, fit_expected_loss, fit_svi_meanfield, meanfield_seed, seed_fixed_points, seed_standard_errors,
)
from study.methods.svi.objectives import CheckedJitELBO, NonFiniteLoss, masked_objective
from study.methods.svi.plan import (
    FIT_DTYPES, LARGE_ELBO_DRAWS, LARGE_LR_HOLD, LARGE_MODEL_DIM, LARGE_PARTICLES, LARGE_RESIDUAL_PAIRS,
    LARGE_SUBSAMPLE, data_rows, fit_dtype, large_fit_dtype, particles, precision, scale_plan,
)
from study.methods.svi.seeds import batches_seeds, fit_seeds
from study.methods.svi.start import set_guide_scales, sigma_start, start_point
from study.methods.svi.stopping import (
    STOP_FAMILY_FALSE_ALARM, converged, drift_beyond_noise, drift_noise_limit, drift_standard_error,
)

__all__ = [
    "batches_seeds",
    "fit_seeds",
    "AveragedIterates",
    "run_and_average",
    "SVIRun",
    "_log_sigma_slope",
    "_trajectory",
    "elbo_estimate",
    "guide_loc_scale",
    "loc_scale_reader",
    "optimise",
    "SEEDS_APART",
    "fit_expected_loss",
    "fit_svi_meanfield",
    "meanfield_seed",
    "seed_fixed_points",
    "seed_standard_errors",
    "CheckedJitELBO",
    "NonFiniteLoss",
    "masked_objective",
    "FIT_DTYPES",
    "LARGE_ELBO_DRAWS",
    "LARGE_LR_HOLD",
    "LARGE_MODEL_DIM",
    "LARGE_PARTICLES",
    "LARGE_RESIDUAL_PAIRS",
    "LARGE_SUBSAMPLE",
    "data_rows",
    "fit_dtype",
    "large_fit_dtype",
    "particles",
    "precision",
    "scale_plan",
    "set_guide_scales",
    "sigma_start",
    "start_point",
    "STOP_FAMILY_FALSE_ALARM",
    "converged",
    "drift_beyond_noise",
    "drift_noise_limit",
    "drift_standard_error",
]
