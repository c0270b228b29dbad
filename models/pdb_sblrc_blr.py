"""posteriordb ``sblrc-blr``: Bayesian linear regression, correlated design.

```
X     : 100 x 5 synthetic design, columns correlated (entries O(100)), no intercept
beta  ~ normal(0, 10)^5
sigma ~ half-normal(0, 10)
y     ~ normal(X beta, sigma)
```

Reference: posteriordb's 10,000 gold draws (Stan, 10 chains). ``sigma`` is
compared as ``sigma (log)``, where the guide lives. Near-Gaussian: Laplace
should match the gold draws. The model is shared with ``sblri-blr``
(``models/_regression.py``).
"""

from models._regression import blr_spec

POSTERIOR = "sblrc-blr"

SPEC = blr_spec(POSTERIOR, "posteriordb sblrc-blr (linear regression)")
