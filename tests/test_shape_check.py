"""The shape check stops mis-broadcast models before any fit, naming the site and both shapes."""

from pathlib import Path

import pytest

from models import builtin_models, load_model_file
from study.core.joint import FlatJoint, ShapeMismatchError
from study.core.results import FAILED
from study.run.runner import run_model
from study.core.settings import Settings
from study.checks.shape import check_shapes

from conftest import HAVE_POSTERIORDB

BROKEN = Path(__file__).parent / "broken_models"


def _joint(spec):
    return FlatJoint(spec.model, spec.data(), spec.init_loc_fn)


def test_matmul_slip_is_caught_with_site_and_both_shapes():
    spec = load_model_file(BROKEN / "misbroadcast_linear.py")
    joint = _joint(spec)
    # The existing batched path does not see it: the leading dimension is the particle count.
    joint.log_joint_batched(joint.init_z.expand(5, -1).clone())
    with pytest.raises(ShapeMismatchError) as caught:
        check_shapes(joint)
    message = str(caught.value)
    # d = 3 is a dimension of the model, so the check picks 5 particles.
    assert "site 'y'" in message and "(50,) per sample" in message and "(5, 5, 50)" in message
    assert "expected (5, 50)" in message and len(message.splitlines()) == 1


def test_value_slip_with_right_shapes_is_caught():
    spec = load_model_file(BROKEN / "particle_mean.py")
    with pytest.raises(ShapeMismatchError, match=r"site 'y': the log density under 5 vectorised particles"):
        check_shapes(_joint(spec))


def test_a_broken_model_fails_alone_before_any_fit():
    result = run_model(str(BROKEN / "misbroadcast_linear.py"), ["svi_meanfield", "laplace_full"],
                       Settings.make(quick=True), progress=False)
    assert result.status == FAILED and not result.fits
    assert result.reason.startswith("ShapeMismatchError: site 'y'") and "(5, 5, 50)" in result.reason


@pytest.mark.parametrize("name", [
    # The larger network rungs (10^4 weights and up) are checked in the slow suite.
    pytest.param(name, marks=pytest.mark.slow) if "on_request" in spec.tags else name
    for name, spec in builtin_models().items()
])
def test_every_builtin_model_passes(name):
    spec = builtin_models()[name]
    if spec.needs_posteriordb and not HAVE_POSTERIORDB:
        pytest.skip("no posteriordb database")
    record = check_shapes(_joint(spec))
    assert record["particles"] >= 3 and record["sites"]
