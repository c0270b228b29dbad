"""Properties of the pipeline over generated linear-Gaussian models (hypothesis).

For ``y ~ N(X w, noise^2 I)``, ``w ~ N(0, prior^2 I)`` the posterior is Gaussian with
precision ``Lambda = X^T X / noise^2 + I / prior^2`` (Bishop, PRML eq. 3.53-3.54) and
``-log p`` has Hessian ``Lambda`` everywhere, so through the whole pipeline

* ``laplace_full`` is the exact marginal sd ``sqrt((Lambda^-1)_ii)``, and
* ``laplace_diag``, ``1/sqrt(Lambda_ii)``, never exceeds it (PRML section 10.1.2:
  a conditional variance is at most the marginal one).
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import GaussianPosterior, ModelSpec
from study.core.results import OK
from study.run.runner import run_model
from study.core.settings import Settings

SETTINGS = Settings.make(quick=True, draws=10)  # draws only feed the ArviZ files


def linear_gaussian(d: int, rho: float, prior_scale: float, noise_scale: float, n: int, seed: int):
    """A conjugate linear regression with AR(1)-correlated features, ``C_jk = rho^|j-k|``.

    Returns the spec and the exact posterior sd from ``Lambda`` (NumPy, independent of the
    model package's helpers), shape ``(d,)``.
    """
    rng = np.random.default_rng(seed)
    index = np.arange(d)
    C = rho ** np.abs(index[:, None] - index[None, :])
    X = rng.multivariate_normal(np.zeros(d), C, size=n)
    y = X @ rng.standard_normal(d) + noise_scale * rng.standard_normal(n)
    precision = X.T @ X / noise_scale**2 + np.eye(d) / prior_scale**2
    covariance = np.linalg.inv(precision)

    def model(X, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), prior_scale).to_event(1))
        with pyro.plate("data", X.shape[-2]):
            pyro.sample("y", dist.Normal((X * w).sum(-1), noise_scale), obs=y)

    def exact_posterior(data):
        return GaussianPosterior(
            mean=torch.tensor(covariance @ X.T @ y / noise_scale**2), covariance=torch.tensor(covariance)
        )

    spec = ModelSpec(
        name="generated_linear",
        model=model,
        data=lambda: {"X": torch.tensor(X), "y": torch.tensor(y)},
        exact_posterior=exact_posterior,
    )
    return spec, np.sqrt(np.diag(covariance))


# derandomize: the same examples on every run (seeds passed explicitly); 60 examples
# take a few seconds.
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    d=st.integers(1, 5),
    rho=st.floats(-0.95, 0.95),
    prior_scale=st.floats(0.1, 10.0),
    noise_scale=st.floats(0.2, 5.0),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_laplace_full_is_the_analytic_sd_and_laplace_diag_never_exceeds_it(d, rho, prior_scale, noise_scale, n, seed):
    spec, exact_sd = linear_gaussian(d, rho, prior_scale, noise_scale, n, seed)
    result = run_model(spec, ["laplace_full", "laplace_diag", "reference"], SETTINGS, progress=False)
    assert result.status == OK, result.reason
    full, diag, reference = (result.fits[m] for m in ("laplace_full", "laplace_diag", "reference"))
    assert full.status == diag.status == reference.status == OK
    np.testing.assert_allclose(full.sd, exact_sd, rtol=1e-6)
    np.testing.assert_allclose(reference.sd, exact_sd, rtol=1e-6)
    # Equal in exact arithmetic when d = 1 or the features are uncorrelated: allow round-off.
    assert np.all(diag.sd <= full.sd * (1.0 + 1e-12))
