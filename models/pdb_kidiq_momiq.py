"""posteriordb ``kidiq-kidscore_momiq``: a child's test score on the mother's IQ.

```
kid_score_n ~ normal(beta_1 + beta_2 mom_iq, sigma)
beta  : flat on R^2                    (improper, as in Stan: no prior statement)
sigma ~ half-Cauchy(0, 2.5)            (not Gaussian: flagged in the report)
```

N = 434 children (Gelman & Hill 2007, ch. 3). ``mom_iq`` is uncentred (mean 100), so
intercept and slope are strongly anticorrelated in the posterior.
"""

from functools import partial

from models._regression import columns_data, half_cauchy_sigma_regression, regression_spec

POSTERIOR = "kidiq-kidscore_momiq"
DATA = partial(columns_data, POSTERIOR, "kid_score", ["mom_iq"])
SPEC = regression_spec(POSTERIOR, "posteriordb kidiq: score ~ mom_iq", half_cauchy_sigma_regression, DATA)
