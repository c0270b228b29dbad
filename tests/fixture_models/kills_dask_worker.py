"""A conjugate normal mean whose first trace inside a Dask worker kills that worker.

```
mu  ~ Normal(0, 1)
y_n ~ Normal(mu, 1)                  n = 1..20
```

When the environment variable ``KILL_MARKER`` names a file that does not exist yet, the
first trace of the model inside a ``dask.distributed`` worker creates that file and ends
the worker's process at once (``os._exit``): a worker lost mid-fit. Every later trace,
and every trace outside a worker, is an ordinary model.
"""

import os

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def _kill_once_in_a_worker():
    marker = os.environ.get("KILL_MARKER")
    if not marker:
        return
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return  # not inside a Dask worker
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


def model(y):
    _kill_once_in_a_worker()
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data():
    g = torch.Generator().manual_seed(3)
    return {"y": 0.5 + torch.randn(20, generator=g, dtype=torch.float64)}


SPEC = ModelSpec(name="kills_dask_worker", model=model, data=data)
