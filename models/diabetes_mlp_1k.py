"""Bayesian MLP regression 10-80-1 (tanh) on scikit-learn's diabetes data: 961 weights.

The smallest rung of the network ladder (`--models networks`); part of the default study.

The model, its prior and its data are described in the report (``SPEC.description``);
the network is built by ``models/_mlp.py``.
"""

from models._mlp import REGRESSION, DIABETES_TEXT, diabetes_data, network_spec

SPEC = network_spec(
    name="diabetes_mlp_1k",
    pretty_name="Bayesian MLP 10-80-1 (961 weights), diabetes (sklearn)",
    sizes=[10, 80, 1],
    likelihood=REGRESSION,
    data=diabetes_data,
    data_text=DIABETES_TEXT,
    prior_precision=1.0,
    noise_scale=0.7,
    on_request=False,
    # Its mean-field fit switches hidden units off, slowly: at the default 3,000 steps sigma
    # still moved 7-9% within the averaging window in every seed (each seed at its own fixed
    # point). 16,000 steps with the rate held at its start for the first half leave 4.5-4.8%,
    # under the 5% that flags a fit; 12,000 left 4.5-6.1%.
    svi_steps_scale=16_000 / 3_000,
    svi_lr_hold=0.5,
)
