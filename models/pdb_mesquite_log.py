"""posteriordb ``mesquite-logmesquite``: log weight of mesquite bushes on log dimensions.

```
log_v = log(v)   for v = weight, diam1, diam2, canopy_height, total_height, density
log_weight_n ~ normal(beta_1 + beta_2 log_diam1 + beta_3 log_diam2 + beta_4 log_canopy_height
                      + beta_5 log_total_height + beta_6 log_density + beta_7 group, sigma)
beta  : flat on R^7                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

N = 46 bushes (Gelman & Hill 2007, sec. 4.7); every measurement but the group indicator
enters on the log scale, as in Stan's transformed data.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "mesquite-logmesquite"


def data():
    x = tensors(load_data(POSTERIOR))
    logs = [x[k].log() for k in ("diam1", "diam2", "canopy_height", "total_height", "density")]
    return regression_data(x["weight"].log(), logs + [x["group"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb mesquite: log weight ~ log dimensions", flat_regression, data
)
