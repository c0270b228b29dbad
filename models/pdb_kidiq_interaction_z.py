"""posteriordb ``kidiq_with_mom_work-kidscore_interaction_z``: the interaction model on standardised predictors.

```
z_v = (v - mean(v)) / (2 sd(v))   for v = mom_hs, mom_iq
kid_score_n ~ normal(beta_1 + beta_2 z_hs + beta_3 z_iq + beta_4 z_hs z_iq, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

Gelman & Hill (2007, sec. 4.2) divide by two sds so that a standardised predictor is on
the scale of a binary one; the coefficients are nearly uncorrelated.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, standardise, tensors

POSTERIOR = "kidiq_with_mom_work-kidscore_interaction_z"


def data():
    x = tensors(load_data(POSTERIOR))
    z_hs, z_iq = standardise(x["mom_hs"]), standardise(x["mom_iq"])
    return regression_data(x["kid_score"], [z_hs, z_iq, z_hs * z_iq])


SPEC = regression_spec(
    POSTERIOR, "posteriordb kidiq_with_mom_work: score ~ standardised mom_hs * mom_iq", flat_regression, data
)
