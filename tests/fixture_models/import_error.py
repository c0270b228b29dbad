"""A model file that fails while it is imported (a typo on line 6)."""

import torch

PRIOR_SCALE = 1.0
NOISE = torch.tensor(0.5) * PRIOR_SCAL
