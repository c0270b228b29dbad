"""posteriordb ``kidiq-kidscore_interaction``: a child's test score on the mother's schooling, IQ and their product.

```
kid_score_n ~ normal(beta_1 + beta_2 mom_hs + beta_3 mom_iq + beta_4 mom_hs mom_iq, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma ~ half-Cauchy(0, 2.5)            (not Gaussian: flagged in the report)
```

N = 434 children (Gelman & Hill 2007, ch. 3). Uncentred predictors and their product:
the coefficients are correlated in pairs, a hard case for a mean-field guide.
"""

from models._regression import half_cauchy_sigma_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "kidiq-kidscore_interaction"


def data():
    x = tensors(load_data(POSTERIOR))
    return regression_data(x["kid_score"], [x["mom_hs"], x["mom_iq"], x["mom_hs"] * x["mom_iq"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb kidiq: score ~ mom_hs * mom_iq", half_cauchy_sigma_regression, data
)
