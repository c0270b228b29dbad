"""Shared fixtures and helpers.

The study runs in float64. Tests that need a part the machine may lack (a posteriordb
database, a headless Chromium) carry a marker, ``posteriordb`` or ``browser``; the hook
below skips them where the part is missing, unless ``REQUIRE_POSTERIORDB=1`` or
``REQUIRE_BROWSER=1`` is set (as CI does), where a missing part fails them instead.
"""

import os
import shutil
import warnings

import pytest
import torch
from scipy.stats import norm
from scipy.stats import t as t_dist

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_default_dtype(torch.float64)
# As in the runner: one thread per process. The models are small, and on a shared machine
# extra threads spin on tiny tensors (measured: the same fits run 3x slower with 2 threads).
torch.set_num_threads(1)

from models import builtin_models  # noqa: E402
from models._posteriordb import ENV_VAR, PosteriorDBUnavailable, configured_root  # noqa: E402
from study.core.context import ModelRun  # noqa: E402
from study.core.settings import Settings  # noqa: E402


# -- required parts: skipped locally, failures in CI ----------------------------------------


def posteriordb_missing() -> str | None:
    """Why the tests against posteriordb's gold draws cannot run here, or None when they can.

    The built-in models run from the shipped copy; their gold draws need a clone.
    """
    try:
        if configured_root() is None:
            return f"no posteriordb clone ({ENV_VAR} unset; the gold draws are not shipped)"
    except PosteriorDBUnavailable as error:
        return f"no posteriordb database ({error})"
    return None


def browser_missing() -> str | None:
    """Why the browser test cannot run here (no Chromium, chromedriver or selenium), or None."""
    chromium = chromium_binary()
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
        have_selenium = True
    except ImportError:
        have_selenium = False
    if chromium and driver and have_selenium:
        return None
    return f"needs chromium, chromedriver and selenium (chromium: {chromium}, chromedriver: {driver}, " \
           f"selenium: {have_selenium})"


def chromium_binary() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


# marker -> (what is missing, the variable that makes it required)
REQUIRED_PARTS = {
    "posteriordb": (posteriordb_missing, "REQUIRE_POSTERIORDB"),
    "browser": (browser_missing, "REQUIRE_BROWSER"),
}


def skip_or_fail(marker: str) -> None:
    """Skip the calling test when ``marker``'s part is missing; fail it when that part is required."""
    missing, variable = REQUIRED_PARTS[marker]
    reason = missing()
    if reason is None:
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item):
    for marker in REQUIRED_PARTS:
        if item.get_closest_marker(marker) is not None:
            skip_or_fail(marker)


HAVE_POSTERIORDB = posteriordb_missing() is None
needs_posteriordb = pytest.mark.posteriordb


# -- statistics of the tests ----------------------------------------------------------------


def sidak_z(n_tests: int, family_alarm_rate: float, df: int | None = None) -> float:
    """Two-sided bound ``k`` with P(any of ``n_tests`` independent |z| > k) = ``family_alarm_rate``.

    Šidák's correction: each test gets the two-sided level ``1 - (1 - alpha)^(1/n)``. ``z`` is
    standard normal, or Student-t with ``df`` degrees of freedom when its SE is estimated
    from ``df`` degrees of freedom.
    """
    per_test = 1.0 - (1.0 - family_alarm_rate) ** (1.0 / n_tests)
    return float(norm.isf(per_test / 2.0) if df is None else t_dist.isf(per_test / 2.0, df))


# -- models and shared fits -----------------------------------------------------------------


@pytest.fixture(scope="session")
def specs():
    return builtin_models()


def make_run(name: str, **settings) -> ModelRun:
    torch.set_default_dtype(torch.float64)
    return ModelRun.create(builtin_models()[name], Settings.make(**settings))


@pytest.fixture(scope="session")
def linear_meanfield():
    """``(run, fit)``: the mean-field fit of ``linear_correlated`` (3 seeds, full length).

    Shared by every test that needs it: one full-length fit instead of one per test file.
    sigma starts at ``init_scale``, not at the default diagonal Laplace sd: on this Gaussian
    posterior ``1/sqrt(H_ii)`` is the exact optimum, so the tests would start at their answer
    and could not tell an optimiser that never moves sigma from one that converges.
    """
    from study.methods.svi import fit_svi_meanfield

    run = make_run("linear_correlated", sigma_start="scale")
    return run, fit_svi_meanfield(run)


@pytest.fixture(scope="session")
def logistic_meanfield():
    """``(run, fit)``: the default mean-field fit of ``logistic_breast_cancer`` (3 seeds, full length)."""
    from study.methods.svi import fit_svi_meanfield

    run = make_run("logistic_breast_cancer")
    return run, fit_svi_meanfield(run)
