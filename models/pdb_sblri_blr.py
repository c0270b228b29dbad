"""posteriordb ``sblri-blr``: Bayesian linear regression, nearly independent design.

```
X     : 100 x 5 synthetic design, columns nearly uncorrelated (|corr| < 0.2), no intercept
beta  ~ normal(0, 10)^5
sigma ~ half-normal(0, 10)             (not Gaussian: flagged in the report)
y     ~ normal(X beta, sigma)
```

The same Stan model, ``blr``, as ``sblrc-blr`` (``models/_regression.py``), on a
design whose columns are nearly uncorrelated: the coefficients are nearly independent a
posteriori, so a mean-field guide can recover their marginal sds.
"""

from models._regression import blr_spec

POSTERIOR = "sblri-blr"

SPEC = blr_spec(POSTERIOR, "posteriordb sblri-blr (linear regression)")
