"""posteriordb ``mesquite-logmesquite_logvash``: log weight on log volume, area, shape and height, and group.

```
log_canopy_volume = log(diam1 diam2 canopy_height),  log_canopy_area = log(diam1 diam2)
log_canopy_shape = log(diam1 / diam2)
log_weight_n ~ normal(beta_1 + beta_2 log_canopy_volume + beta_3 log_canopy_area +
                      beta_4 log_canopy_shape + beta_5 log_total_height +
                      beta_6 group, sigma)
beta  : flat on R^6                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

N = 46 bushes (Gelman & Hill 2007, sec. 4.7); as ``logmesquite_logvas`` without the
density term.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "mesquite-logmesquite_logvash"


def data():
    x = tensors(load_data(POSTERIOR))
    area, shape = x["diam1"] * x["diam2"], x["diam1"] / x["diam2"]
    logs = [(area * x["canopy_height"]).log(), area.log(), shape.log(), x["total_height"].log()]
    return regression_data(x["weight"].log(), logs + [x["group"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb mesquite: log weight ~ volume, area, shape, height, group", flat_regression, data
)
