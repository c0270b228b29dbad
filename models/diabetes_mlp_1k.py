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
)
