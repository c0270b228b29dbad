"""posteriordb ``earnings-earn_height``: linear regression of earnings (dollars) on height (Gelman & Hill 2007, ch. 4).

```
beta  ~ flat on R^2                  (Stan: no prior statement; improper, flagged in the report)
sigma ~ flat on (0, inf)              (improper)
earn ~ normal(beta_1 + beta_2 height, sigma)
```

1192 respondents of the 1990 Work, Family, and Well-Being survey. The design
matrix (intercept column first) is built in ``data()``, like Stan's transformed data.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "earnings-earn_height"


def data():
    x = tensors(load_data(POSTERIOR))
    return regression_data(x["earn"], [x["height"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb earnings: earnings (dollars) on height", flat_regression, data
)
