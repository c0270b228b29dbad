"""posteriordb ``kidiq-kidscore_momhs``: a child's test score on the mother's high school.

```
kid_score_n ~ normal(beta_1 + beta_2 mom_hs, sigma)
beta  : flat on R^2                    (improper, as in Stan: no prior statement)
sigma ~ half-Cauchy(0, 2.5)            (not Gaussian: flagged in the report)
```

N = 434 children (Gelman & Hill 2007, ch. 3); ``mom_hs`` is 0 or 1. Shared code in
``models/_regression.py``.
"""

from functools import partial

from models._regression import columns_data, half_cauchy_sigma_regression, regression_spec

POSTERIOR = "kidiq-kidscore_momhs"
DATA = partial(columns_data, POSTERIOR, "kid_score", ["mom_hs"])
SPEC = regression_spec(POSTERIOR, "posteriordb kidiq: score ~ mom_hs", half_cauchy_sigma_regression, DATA)
