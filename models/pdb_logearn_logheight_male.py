"""posteriordb ``earnings-logearn_logheight_male``: linear regression of log earnings on log height and sex (Gelman & Hill 2007, ch. 4).

```
beta  ~ flat on R^3                  (Stan: no prior statement; improper, flagged in the report)
sigma ~ flat on (0, inf)              (improper)
log(earn) ~ normal(beta_1 + beta_2 log(height) + beta_3 male, sigma)
```

1192 respondents of the 1990 Work, Family, and Well-Being survey. The design
matrix (intercept column first) is built in ``data()``, like Stan's transformed data.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "earnings-logearn_logheight_male"


def data():
    x = tensors(load_data(POSTERIOR))
    return regression_data(x["earn"].log(), [x["height"].log(), x["male"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb earnings: log earnings on log height and sex", flat_regression, data
)
