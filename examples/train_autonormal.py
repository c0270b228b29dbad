"""Train Pyro's AutoNormal on a model file by the ELBO and save the param store (README: Diagnose your own fit)."""
import pyro, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from models import load_model_file

torch.set_default_dtype(torch.float64)
spec = load_model_file("models/linear_correlated.py")
pyro.set_rng_seed(0)
guide = AutoNormal(spec.model)
svi = SVI(spec.model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999}),
          Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1))
for step in range(3000):
    svi.step(**spec.data())
pyro.get_param_store().save("reports/autonormal.pt")
