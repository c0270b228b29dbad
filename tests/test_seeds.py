"""Monte Carlo error of sigma over seeds, and the standard errors every ratio of the answer carries."""

import numpy as np
import pytest

from study.compare import main
from study.core.results import Fit, ModelResult
from study.report.summary import describe, model_answer, ratio_standard_error, sd_standard_error
from study.methods.svi import seed_standard_errors


def test_seed_standard_errors_pool_relative_spread():
    values = np.array([[1.0, 10.0], [1.1, 11.0], [0.9, 9.0]])
    out = seed_standard_errors(values)
    # Relative spread 0.1 for both parameters: pooled variance 0.02 * 2 / (2 * 2) = 0.01.
    assert out["rel_se"] == pytest.approx(np.sqrt(0.01 / 3))
    np.testing.assert_allclose(out["se"], values.mean(0) * out["rel_se"])
    np.testing.assert_allclose(out["se_per_parameter"], values.std(0, ddof=1) / np.sqrt(3))
    assert seed_standard_errors(values[:1])["se"] is None


def _model() -> ModelResult:
    names = ["a", "b"]
    fits = {
        "svi_meanfield": Fit("m", "svi_meanfield", names, np.zeros(2), np.array([1.0, 2.0]),
                             info={"sd_se": [0.01, 0.04]}),
        "svi_fullrank": Fit("m", "svi_fullrank", names, np.zeros(2), np.array([2.0, 4.0])),
        "laplace_diag": Fit("m", "laplace_diag", names, np.zeros(2), np.array([1.0, 2.0])),
        "reference": Fit("m", "reference", names, np.zeros(2), np.array([2.0, 4.0]),
                         info={"kind": "gold draws", "sd_se": [0.02, 0.0]}),
    }
    return ModelResult("m", "m", "", names, fits)


def test_ratio_standard_errors_by_the_delta_method():
    model = _model()
    se, complete = ratio_standard_error(model, "svi_meanfield", "reference")
    # ratio 0.5 for both; relative errors (0.01, 0.02) and (0.01, 0) add in quadrature.
    np.testing.assert_allclose(se, [0.5 * np.sqrt(0.01**2 + 0.01**2), 0.5 * 0.02])
    assert complete
    se, complete = ratio_standard_error(model, "svi_meanfield", "laplace_diag")
    np.testing.assert_allclose(se, [0.01, 0.02])
    assert complete  # Laplace is exact
    # A single-seed fit: only the reference's part is known, and the SE says it is incomplete.
    se, complete = ratio_standard_error(model, "svi_fullrank", "reference")
    np.testing.assert_allclose(se, [0.01, 0.0])
    assert not complete and sd_standard_error(model, "svi_fullrank") == (None, False)


def test_every_answer_ratio_carries_its_se():
    answer = model_answer(_model())
    for key in ("svi_over_laplace_diag", "svi_over_reference", "fullrank_over_reference"):
        assert answer[key]["median_se"] is not None and answer[key]["worst_se"] is not None
    assert answer["svi_over_reference"]["se_complete"] and not answer["fullrank_over_reference"]["se_complete"]
    entry = describe(np.array([0.5, 2.0, 1.1]), ["x", "y", "z"], np.array([0.1, 0.2, 0.3]))
    assert entry["worst_parameter"] == "x" and entry["worst_se"] == 0.1 and entry["median_se"] == 0.2


def test_seeds_option_is_validated(tmp_path, capsys):
    assert main(["--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--seeds must be a positive integer" in capsys.readouterr().err
