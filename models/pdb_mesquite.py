"""posteriordb ``mesquite-mesquite``: the weight of mesquite bushes on their raw dimensions.

```
weight_n ~ normal(beta_1 + beta_2 diam1 + beta_3 diam2 + beta_4 canopy_height +
                  beta_5 total_height + beta_6 density + beta_7 group, sigma)
beta  : flat on R^7                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

N = 46 bushes (Gelman & Hill 2007, sec. 4.7), on the original scale: the residual sd
is large and the coefficients are correlated.
"""

from functools import partial

from models._regression import columns_data, flat_regression, regression_spec

POSTERIOR = "mesquite-mesquite"
DATA = partial(
    columns_data, POSTERIOR, "weight", ["diam1", "diam2", "canopy_height", "total_height", "density", "group"]
)
SPEC = regression_spec(POSTERIOR, "posteriordb mesquite: weight ~ raw dimensions", flat_regression, DATA)
