"""posteriordb ``kidiq-kidscore_interaction`` as Bambi writes it: every design column centred at its mean.

```
hs_c   = mom_hs - mean(mom_hs),  iq_c = mom_iq - mean(mom_iq)
hsiq_c = mom_hs mom_iq - mean(mom_hs mom_iq)      (the product formed first, then centred)
kid_score_n ~ normal(beta_1 + beta_2 hs_c + beta_3 iq_c + beta_4 hsiq_c, sigma)
beta  : flat on R^4                    (improper, as in Stan: no prior statement)
sigma ~ half-Cauchy(0, 2.5)            (as in kidiq-kidscore_interaction)
```

The data, likelihood and priors of `kidiq-kidscore_interaction`; only the design differs.
Bambi's regression models (Capretto et al. 2022), which the ARM benchmark of DADVI
(Giordano, Ingram & Broderick, JMLR 2024) fits, centre every column of the design this way.
The slopes and sigma are those of the uncentred model, and only the intercept moves:
beta_1 = b_1 + b_2 mean(hs) + b_3 mean(iq) + b_4 mean(hs iq). The map has Jacobian 1 and the
prior on beta is flat, so this posterior is the exact image of the uncentred one: the
reference is posteriordb's gold draws of `kidiq-kidscore_interaction` mapped draw by draw
(shipped as `reference_summaries/kidiq-kidscore_interaction_bambi`). Unlike posteriordb's
`_c` variant, which centres mom_hs and mom_iq before forming their product, the product
column here stays strongly correlated with mom_hs.
"""

import torch

from models import ModelSpec
from models._regression import half_cauchy_sigma_regression, load_data, regression_data, regression_draws, tensors

POSTERIOR = "kidiq-kidscore_interaction"
NAME = "kidiq-kidscore_interaction_bambi"


def columns() -> list[torch.Tensor]:
    """The uncentred design columns after the intercept: mom_hs, mom_iq, mom_hs * mom_iq."""
    x = tensors(load_data(POSTERIOR))
    return [x["mom_hs"], x["mom_iq"], x["mom_hs"] * x["mom_iq"]]


def data():
    x = tensors(load_data(POSTERIOR))
    return regression_data(x["kid_score"], [c - c.mean() for c in columns()])


def reference_draws(data):
    """posteriordb's gold draws of the uncentred model, the intercept moved by the column means."""
    draws = regression_draws(POSTERIOR, data)
    beta = draws["beta"].clone()
    means = torch.stack([c.mean() for c in columns()])
    beta[:, 0] = beta[:, 0] + beta[:, 1:] @ means
    return {"beta": beta, "sigma": draws["sigma"]}


SPEC = ModelSpec(
    name=NAME,
    pretty_name="posteriordb kidiq: score ~ mom_hs * mom_iq, Bambi's centred columns",
    model=half_cauchy_sigma_regression,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
    reference_summary=NAME,
)
