"""Bayesian MLP regression 10-8000-1 (tanh) on scikit-learn's diabetes data: 96,001 weights.

A rung of the network ladder (`--models networks`); too large for the default study,
it runs only when selected.

The model, its prior and its data are described in the report (``SPEC.description``);
the network is built by ``models/_mlp.py``.
"""

from models._mlp import REGRESSION, DIABETES_TEXT, diabetes_data, network_spec

SPEC = network_spec(
    name="diabetes_mlp_100k",
    pretty_name="Bayesian MLP 10-8000-1 (96,001 weights), diabetes (sklearn)",
    sizes=[10, 8000, 1],
    likelihood=REGRESSION,
    data=diabetes_data,
    data_text=DIABETES_TEXT,
    prior_precision=1.0,
    noise_scale=0.7,
    on_request=True,
)
