"""posteriordb ``nes1988-nes``: ``partyid7 ~ normal(X beta, sigma)``, flat priors, 1988 survey (Bush against Dukakis).

The pseudo-code, shared by the eight survey years, is ``nes_spec``'s in ``models/_regression.py``."""

from models._regression import nes_spec

POSTERIOR = "nes1988-nes"
SPEC = nes_spec(POSTERIOR, 1988)
