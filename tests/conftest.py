"""Shared fixtures. The study runs in float64.

Tests against posteriordb's gold draws need a clone (``POSTERIORDB_PATH``): they skip
without one, and fail instead when ``REQUIRE_POSTERIORDB=1`` (where a clone must be there).
"""

import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_default_dtype(torch.float64)
# As in the runner: one thread per process. The models are small, and on a shared machine
# extra threads spin on tiny tensors (measured: the same fits run 3x slower with 2 threads).
torch.set_num_threads(1)

from models import builtin_models  # noqa: E402
from models._posteriordb import ENV_VAR  # noqa: E402
from study.core.context import ModelRun  # noqa: E402
from study.core.settings import Settings  # noqa: E402

HAVE_POSTERIORDB = bool(os.environ.get(ENV_VAR))
REQUIRE_POSTERIORDB = os.environ.get("REQUIRE_POSTERIORDB", "") == "1"


def require_posteriordb():
    """Skip the calling test without a posteriordb clone; fail when one is required."""
    if HAVE_POSTERIORDB:
        return
    message = f"no posteriordb clone ({ENV_VAR} unset)"
    if REQUIRE_POSTERIORDB:
        pytest.fail(message + " but REQUIRE_POSTERIORDB=1")
    pytest.skip(message)


@pytest.fixture
def posteriordb_clone():
    require_posteriordb()


needs_posteriordb = pytest.mark.usefixtures("posteriordb_clone")


@pytest.fixture(scope="session")
def specs():
    return builtin_models()


def make_run(name: str, **settings) -> ModelRun:
    torch.set_default_dtype(torch.float64)
    return ModelRun.create(builtin_models()[name], Settings.make(**settings))
