"""posteriordb ``nes1992-nes``: ``partyid7 ~ normal(X beta, sigma)``, flat priors, 1992 survey (Clinton against Bush and Perot).

The pseudo-code, shared by the eight survey years, is ``nes_spec``'s in ``models/_regression.py``."""

from models._regression import nes_spec

POSTERIOR = "nes1992-nes"
SPEC = nes_spec(POSTERIOR, 1992)
