"""posteriordb ``kidiq_with_mom_work-kidscore_mom_work``: a child's test score on the mother's work history.

```
work_l = 1[mom_work = l]   l = 2, 3, 4   (dummies of a 4-level factor)
kid_score_n ~ normal(beta_1 + beta_2 work2 + beta_3 work3 + beta_4 work4, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

``mom_work`` is a factor with 4 levels; level 1 (the mother did not work in the child's
first three years) is the baseline absorbed by the intercept.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "kidiq_with_mom_work-kidscore_mom_work"


def data():
    x = tensors(load_data(POSTERIOR))
    work = [(x["mom_work"] == level).double() for level in (2, 3, 4)]
    return regression_data(x["kid_score"], work)


SPEC = regression_spec(
    POSTERIOR, "posteriordb kidiq_with_mom_work: score ~ mom_work", flat_regression, data
)
