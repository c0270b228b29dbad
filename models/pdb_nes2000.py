"""posteriordb ``nes2000-nes``: ``partyid7 ~ normal(X beta, sigma)``, flat priors, 2000 survey (Bush against Gore).

The pseudo-code, shared by the eight survey years, is ``nes_spec``'s in ``models/_regression.py``."""

from models._regression import nes_spec

POSTERIOR = "nes2000-nes"
SPEC = nes_spec(POSTERIOR, 2000)
