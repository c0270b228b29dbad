"""posteriordb ``nes1972-nes``: ``partyid7 ~ normal(X beta, sigma)``, flat priors, 1972 survey (Nixon against McGovern).

The pseudo-code, shared by the eight survey years, is ``nes_spec``'s in ``models/_regression.py``."""

from models._regression import nes_spec

POSTERIOR = "nes1972-nes"
SPEC = nes_spec(POSTERIOR, 1972)
