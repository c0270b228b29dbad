"""posteriordb ``mesquite-logmesquite_logvolume``: log weight of mesquite bushes on log canopy volume.

```
log_canopy_volume = log(diam1 diam2 canopy_height)
log_weight_n ~ normal(beta_1 + beta_2 log_canopy_volume, sigma)
beta  : flat on R^2                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

N = 46 bushes (Gelman & Hill 2007, sec. 4.7): a single predictor, so a small, nearly
Gaussian posterior.
"""

from models._regression import flat_regression, load_data, regression_data, regression_spec, tensors

POSTERIOR = "mesquite-logmesquite_logvolume"


def data():
    x = tensors(load_data(POSTERIOR))
    volume = x["diam1"] * x["diam2"] * x["canopy_height"]
    return regression_data(x["weight"].log(), [volume.log()])


SPEC = regression_spec(
    POSTERIOR, "posteriordb mesquite: log weight ~ log volume", flat_regression, data
)
