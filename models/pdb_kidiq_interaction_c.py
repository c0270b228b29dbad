"""posteriordb ``kidiq_with_mom_work-kidscore_interaction_c``: the interaction model on centred predictors.

```
c_hs = mom_hs - mean(mom_hs),  c_iq = mom_iq - mean(mom_iq)
kid_score_n ~ normal(beta_1 + beta_2 c_hs + beta_3 c_iq + beta_4 c_hs c_iq, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

Centring (Gelman & Hill 2007, sec. 4.2) removes most of the correlation between the
intercept and the slopes that the uncentred interaction model has.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "kidiq_with_mom_work-kidscore_interaction_c"


def data():
    x = tensors(load_data(POSTERIOR))
    c_hs, c_iq = x["mom_hs"] - x["mom_hs"].mean(), x["mom_iq"] - x["mom_iq"].mean()
    return regression_data(x["kid_score"], [c_hs, c_iq, c_hs * c_iq])


SPEC = regression_spec(
    POSTERIOR, "posteriordb kidiq_with_mom_work: score ~ centred mom_hs * mom_iq", flat_regression, data
)
