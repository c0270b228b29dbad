"""Bayesian MLP classifier 64-16-10 (tanh) on scikit-learn's digits: 1,210 weights.

The smallest rung of the network ladder (`--models networks`); part of the default study.

The model, its prior and its data are described in the report (``SPEC.description``);
the network is built by ``models/_mlp.py``.
"""

from models._mlp import CLASSIFICATION, DIGITS_TEXT, digits_data, network_spec

SPEC = network_spec(
    name="digits_mlp_1k",
    pretty_name="Bayesian MLP 64-16-10 (1,210 weights), digits (sklearn)",
    sizes=[64, 16, 10],
    likelihood=CLASSIFICATION,
    data=digits_data,
    data_text=DIGITS_TEXT,
    prior_precision=1.0,
    on_request=False,
)
