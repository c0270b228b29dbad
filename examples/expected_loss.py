"""The question's set-up: a hand-written N(mu, sigma^2) over the weights, trained on the expected loss alone.

No prior and no entropy term: log sigma is driven down without bound (README: Diagnose your own fit).
"""
import torch
from models import load_model_file

torch.manual_seed(0)
data = load_model_file("models/linear_correlated.py").data()
X, y = data["X"], data["y"]
mu = torch.zeros(6, dtype=X.dtype, requires_grad=True)
log_sigma = torch.full((6,), -2.0, dtype=X.dtype, requires_grad=True)
optimiser = torch.optim.Adam([mu, log_sigma], lr=0.01)
for step in range(2000):
    w = mu + log_sigma.exp() * torch.randn(32, 6, dtype=X.dtype)  # reparameterised: 32 draws
    loss = 0.5 * ((y - w @ X.T) ** 2).sum(-1).mean()  # E[-log p(y | w)] (noise sd 1), nothing else
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
torch.save({"w": {"loc": mu.detach(), "scale": log_sigma.exp().detach()}}, "reports/expected_loss.pt")
