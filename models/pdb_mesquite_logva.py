"""posteriordb ``mesquite-logmesquite_logva``: log weight on log canopy volume and area, and group.

```
log_canopy_volume = log(diam1 diam2 canopy_height),  log_canopy_area = log(diam1 diam2)
log_weight_n ~ normal(beta_1 + beta_2 log_canopy_volume + beta_3 log_canopy_area +
                      beta_4 group, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

N = 46 bushes (Gelman & Hill 2007, sec. 4.7). Volume and area share the diameters, so
their coefficients are correlated.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "mesquite-logmesquite_logva"


def data():
    x = tensors(load_data(POSTERIOR))
    area = x["diam1"] * x["diam2"]
    return regression_data(x["weight"].log(), [(area * x["canopy_height"]).log(), area.log(), x["group"]])


SPEC = regression_spec(
    POSTERIOR, "posteriordb mesquite: log weight ~ log volume + log area + group", flat_regression, data
)
