"""The shortfall law sigma_i / sd_i = sqrt(1 - R_i^2) and the reference moments it rests on.

The law's prediction (``study.methods.reference.shrink_law``) is checked against independent
computations: on an exact Gaussian posterior to rounding, on draws from a known Gaussian
within its bootstrap SE. The reference's moments are checked on fixed draws to rounding,
and the shipped gold summaries against the thinned draws they ship, within a stated
multiple of their Monte Carlo SE.
"""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from models import ModelSpec
from models._posteriordb import SUMMARIES, load_reference_summary
from study.core.context import ModelRun
from study.core.settings import Settings
from study.methods.reference import (
    MIN_DRAWS_PER_COORDINATE, _moments, fit_gold_summary, fit_reference, shrink_from_draws, shrink_law,
)

from conftest import make_run, sidak_z


# -- the law on an exact Gaussian posterior ------------------------------------------------------


def test_the_law_on_the_analytic_posterior_is_exact_to_rounding():
    run = make_run("linear_correlated")
    fit = fit_reference(run)
    assert fit.info["kind"] == "analytic"
    predicted = np.asarray(fit.info["predicted_shrink"])
    assert fit.info["predicted_shrink_se"] == [0.0] * run.joint.dim
    # Independently: the posterior precision Lambda = X^T X / noise^2 + I / prior^2 (PRML eq. 3.54),
    # its inverse S the posterior covariance.
    from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE

    X = run.data["X"].numpy()
    precision = X.T @ X / NOISE_SCALE**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2
    covariance = np.linalg.inv(precision)
    # The law's formula ...
    np.testing.assert_allclose(predicted, 1 / np.sqrt(np.diag(covariance) * np.diag(precision)), rtol=1e-12)
    # ... and the mean-field optimum of this Gaussian, sigma_i = 1/sqrt(Lambda_ii) (PRML eq. 10.12-10.15),
    # over the marginal sd sqrt(S_ii).
    mean_field_sigma = 1 / np.sqrt(np.diag(precision))
    np.testing.assert_allclose(predicted, mean_field_sigma / np.sqrt(np.diag(covariance)), rtol=1e-12)
    # Not a trivial case: the features are correlated, every prediction far below 1.
    assert predicted.max() < 0.5


def test_the_law_from_gaussian_draws_is_within_its_bootstrap_se():
    rng = np.random.default_rng(7)
    d, rho = 6, 0.9
    index = np.arange(d)
    covariance = rho ** np.abs(index[:, None] - index[None, :])
    exact = shrink_law(covariance=covariance)["predicted_shrink"]
    draws = rng.multivariate_normal(np.zeros(d), covariance, size=(4, 500))
    law = shrink_law(draws=draws, seed=3)
    predicted, se = np.asarray(law["predicted_shrink"]), np.asarray(law["predicted_shrink_se"])
    # Independent draws: the sample R^2 has variance about 4 R^2 (1 - R^2)^2 / n (Fisher), so
    # sqrt(1 - R^2) has relative sd about R / sqrt(n); the bootstrap SE (200 replicates: itself
    # within ~10%) must be close to it.
    n = draws.shape[0] * draws.shape[1]
    r = np.sqrt(1 - np.asarray(exact) ** 2)
    np.testing.assert_allclose(se / predicted, r / np.sqrt(n), rtol=0.3)
    # The estimate within k SEs of the truth, k a Sidak bound over the 6 (false alarm 1 in 1000).
    z = (predicted - np.asarray(exact)) / se
    assert np.all(np.abs(z) < sidak_z(d, 1e-3)), z
    # Same seed, same numbers.
    assert shrink_law(draws=draws, seed=3) == law


def test_the_law_says_why_it_has_no_prediction():
    draws = np.zeros((1, 5 * MIN_DRAWS_PER_COORDINATE - 1, 5))
    assert "fewer than" in shrink_law(draws=draws)["predicted_shrink_missing"]
    singular = np.ones((2, 2))
    assert "not positive definite" in shrink_law(covariance=singular)["predicted_shrink_missing"]
    constant = np.random.default_rng(0).standard_normal((1, 200, 3))
    constant[..., 1] = 2.0
    assert "not positive definite" in shrink_law(draws=constant)["predicted_shrink_missing"]


def test_the_degrees_of_freedom_factor_is_the_regression_residual_ratio():
    # 1/(S_ii (S^-1)_ii) is SSE/SST of regressing coordinate i on the others (with an intercept);
    # the prediction is sqrt(SSE/(n - d) / (SST/(n - 1))).
    rng = np.random.default_rng(11)
    flat = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4))
    np.testing.assert_allclose(shrink_from_draws(flat), _shrink_by_least_squares(flat), rtol=1e-10)


def _shrink_by_least_squares(flat: np.ndarray) -> list[float]:
    """The oracle: sqrt(SSE/(n - d) / (SST/(n - 1))) of regressing each coordinate on the others."""
    n, d = flat.shape
    expected = []
    for i in range(d):
        others = np.column_stack([np.ones(n), np.delete(flat, i, axis=1)])
        coef, *_ = np.linalg.lstsq(others, flat[:, i], rcond=None)
        sse = np.sum((flat[:, i] - others @ coef) ** 2)
        sst = np.sum((flat[:, i] - flat[:, i].mean()) ** 2)
        expected.append(np.sqrt((sse / (n - d)) / (sst / (n - 1))))
    return expected


# -- the reference's moments on fixed draws -------------------------------------------------------


def _two_site_model():
    pyro.sample("a", dist.Normal(torch.tensor(0.0), 1.0))
    pyro.sample("b", dist.LogNormal(torch.tensor(0.0), 1.0))


A_DRAWS = np.array([1.0, 2.0, 3.0, 4.0, 10.0])  # mean 4, sum of squares about it 50: sd sqrt(50/4)
B_DRAWS = np.exp(np.array([-1.0, 0.0, 1.0, 0.0, 0.0]))  # log: mean 0, sum of squares 2: sd sqrt(2/4)


def _fixed_draws_run():
    spec = ModelSpec(
        name="fixed_draws", model=_two_site_model, data=dict,
        reference_draws=lambda data: {"a": torch.tensor(A_DRAWS), "b": torch.tensor(B_DRAWS)},
    )
    return ModelRun.create(spec, Settings.make())


def test_reference_moments_on_fixed_draws_to_rounding():
    fit = fit_reference(_fixed_draws_run())  # the gold-draws path: the model's own draws
    assert fit.info["kind"] == "gold draws" and fit.info["n_draws"] == 5
    # Worked by hand: a = (1, 2, 3, 4, 10), log b = (-1, 0, 1, 0, 0), sd with divisor n - 1 = 4.
    np.testing.assert_allclose(fit.mean, [4.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(fit.sd, [np.sqrt(50 / 4), np.sqrt(2 / 4)], rtol=1e-14)
    # _moments itself (NUTS uses it too), over chains: (chains, draws, d) pooled.
    draws = np.stack([A_DRAWS, np.log(B_DRAWS)], axis=-1).reshape(1, 5, 2)
    mean, sd = _moments(np.concatenate([draws, draws], axis=0))
    # Two copies of the same five draws: mean unchanged, sum of squares doubled over n - 1 = 9.
    np.testing.assert_allclose(mean, [4.0, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(sd, [np.sqrt(100 / 9), np.sqrt(4 / 9)], rtol=1e-14)


# -- the shipped gold summaries against the draws they ship ----------------------------------------

SHIPPED = sorted(Path(p).stem for p in glob.glob(str(SUMMARIES / "*.json")))


def _mcse(draws: np.ndarray, method: str) -> np.ndarray:
    dataset = az.convert_to_dataset({"z": draws}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(az.mcse(dataset, method=method)["z"].values, dtype=float)


def test_gold_summaries_agree_with_their_thinned_draws_within_monte_carlo_error():
    """The moments over all 10,000 gold draws against those of the ~1,000 thinned draws shipped with
    them (a subset of the same chains). The SE of the difference is taken as sqrt(SE_thinned^2 +
    SE_all^2) (ArviZ mcse of each), an overestimate for nested samples; each |z| must be below a
    Sidak bound over every element (family false alarm 1 in 1000, about 4.6 SE). Pooled, the mean
    of the posteriors' mean z_sd must be within 4 / sqrt(posteriors) of 0 (each posterior's mean z
    has sd at most 1, whatever the correlation of its elements): a 2% bias in every sd (about 0.8
    SE per element) fails it."""
    z_means, z_sds, per_posterior = [], [], []
    for posterior in SHIPPED:
        summary = load_reference_summary(posterior)
        thinned = summary.thinned
        flat = thinned.reshape(-1, thinned.shape[-1])
        z_mean = (flat.mean(0) - summary.mean) / np.hypot(_mcse(thinned, "mean"), summary.mcse_mean)
        z_sd = (flat.std(0, ddof=1) - summary.sd) / np.hypot(_mcse(thinned, "sd"), summary.mcse_sd)
        z_means.append(z_mean)
        z_sds.append(z_sd)
        per_posterior.append(float(np.mean(z_sd)))
    z_mean, z_sd = np.concatenate(z_means), np.concatenate(z_sds)
    k = sidak_z(2 * len(z_mean), 1e-3)
    assert np.all(np.abs(z_mean) < k), (k, SHIPPED, z_means)
    assert np.all(np.abs(z_sd) < k), (k, SHIPPED, z_sds)
    assert abs(np.mean(per_posterior)) < 4 / np.sqrt(len(per_posterior)), per_posterior


@pytest.mark.parametrize("name", ["kidiq-kidscore_interaction", "arK-arK"])
def test_the_gold_summary_path_returns_the_shipped_summary(name):
    run = make_run(name)
    fit = fit_gold_summary(run)
    summary = load_reference_summary(run.spec.posteriordb)
    np.testing.assert_array_equal(fit.mean, summary.mean)
    np.testing.assert_array_equal(fit.sd, summary.sd)
    np.testing.assert_array_equal(fit.draws, summary.thinned)
    assert fit.info["sd_se"] == summary.mcse_sd.tolist() and fit.info["n_draws"] == summary.n_draws


# -- the Bambi parameterisation of kidiq's interaction model -------------------------------------


def _kidiq_columns() -> np.ndarray:
    """mom_hs, mom_iq and their product, read with NumPy from the shipped data file."""
    import json
    import zipfile

    from models._posteriordb import SHIPPED

    record = json.loads((SHIPPED / "posterior_database" / "posteriors" / "kidiq-kidscore_interaction.json").read_text())
    with zipfile.ZipFile(SHIPPED / "posterior_database" / "data" / "data" / f"{record['data_name']}.json.zip") as zf:
        (member,) = zf.namelist()
        raw = json.loads(zf.read(member))
    hs, iq = np.asarray(raw["mom_hs"], dtype=float), np.asarray(raw["mom_iq"], dtype=float)
    return np.column_stack([hs, iq, hs * iq])


def test_bambi_kidiq_reference_is_the_exact_image_of_the_gold_draws():
    uncentred = load_reference_summary("kidiq-kidscore_interaction")
    run = make_run("kidiq-kidscore_interaction_bambi")
    fit = fit_reference(run)
    assert fit.info["kind"] == "gold draws" and fit.info["n_draws"] == uncentred.n_draws
    means = _kidiq_columns().mean(0)
    # The design: each column centred at its mean, the product formed before centring.
    np.testing.assert_allclose(run.data["X"].numpy()[:, 1:], _kidiq_columns() - means, rtol=0, atol=1e-9)
    # Slopes and sigma are the uncentred model's; the intercept's mean moves by means . slopes.
    np.testing.assert_array_equal(fit.sd[1:], uncentred.sd[1:])
    np.testing.assert_array_equal(fit.mean[1:], uncentred.mean[1:])
    np.testing.assert_allclose(fit.mean[0], uncentred.mean[0] + means @ uncentred.mean[1:4], rtol=1e-12)
    # The shipped draws are the uncentred thinned draws through the same map.
    mapped = uncentred.thinned.copy()
    mapped[..., 0] += mapped[..., 1:4] @ means
    np.testing.assert_allclose(fit.draws, mapped, rtol=1e-12, atol=1e-9)


def test_bambi_kidiq_predicted_shrink_against_numpy():
    uncentred = load_reference_summary("kidiq-kidscore_interaction")
    flat = uncentred.thinned.reshape(-1, 5).copy()
    flat[:, 0] += flat[:, 1:4] @ _kidiq_columns().mean(0)
    fit = fit_reference(make_run("kidiq-kidscore_interaction_bambi"))
    np.testing.assert_allclose(fit.info["predicted_shrink"], _shrink_by_least_squares(flat), rtol=1e-9)
    # The intercept is nearly independent of the slopes; the uncentred product column is not.
    shrink = np.asarray(fit.info["predicted_shrink"])
    assert shrink[0] > 0.95 and shrink[4] > 0.95 and shrink[1] < 0.2 and shrink[3] < 0.2


# -- the report ------------------------------------------------------------------------------------


def _synthetic():
    from report_data import synthetic_study

    return synthetic_study()


def test_law_answer_pools_measured_over_predicted_and_names_the_models_that_break_it():
    from study.report.summary import study_answer
    from study.report.topics.law import BREAK, law_answer

    study = _synthetic()
    law = law_answer(study)
    # gauss_ok: measured σ_SVI / ref = 0.5 everywhere, predicted 1/√Hᵢᵢ / √(H⁻¹)ᵢᵢ = 0.5 / (1, 1.02, 0.98).
    # nuts_bad has an untrusted reference: left out like every pooled number against the reference.
    assert list(law["models"]) == ["gauss_ok"] and law["pooled"]["n"] == 3
    np.testing.assert_allclose(law["models"]["gauss_ok"]["ratio"], [1.0, 1.02, 0.98], rtol=1e-12)
    assert law["pooled"]["median"] == pytest.approx(1.0) and law["broken"] == []
    assert law["pooled"]["median_se"] is None  # one model: no bootstrap over models
    # σ_SVI twice 1/√Hᵢᵢ at one parameter: that parameter breaks the law, and the reason is the
    # curvature under q against the curvature at the mode.
    study.models[0].fits["svi_meanfield"].sd = study.models[0].fits["svi_meanfield"].sd * np.array([2.0, 1, 1])
    law = law_answer(study)
    assert law["broken"] == ["gauss_ok"] and law["models"]["gauss_ok"]["worst_parameter"] == "w[0]"
    assert abs(law["models"]["gauss_ok"]["worst_ratio"] - 1) > BREAK
    assert law["models"]["gauss_ok"]["diagnostics"]["svi_over_laplace_diag"] == pytest.approx(2.0)
    # A Gaussian: the law from the Hessian at the mode is the reference's prediction.
    assert law["models"]["gauss_ok"]["diagnostics"]["law_at_mode"] == pytest.approx(
        law["models"]["gauss_ok"]["worst_predicted"], rel=1e-12)
    from study.report.topics.law import _reason_text

    reason = _reason_text(law["models"]["gauss_ok"])
    assert reason.startswith("E_q[Hᵢᵢ] far from Hᵢᵢ at the mode (σ_SVI / (1/√Hᵢᵢ) = 2)") and "non-Gaussian" not in reason
    # With the second model trusted and given a prediction, the bootstrap over models has an SE,
    # the same for the same study.
    study = _synthetic()
    bad = study.models[1]
    bad.fits["reference"].info.update(max_r_hat=1.01, min_ess_bulk=400.0,
                                      predicted_shrink=[0.2] * len(bad.param_names),
                                      predicted_shrink_se=[0.01] * len(bad.param_names))
    first, second = study_answer(study)["law"], study_answer(study)["law"]
    assert first == second and first["pooled"]["n_models"] == 2 and first["pooled"]["median_se"] > 0


def test_report_shows_the_law_the_csv_and_results_json_carry_it(tmp_path):
    import csv
    import json

    from study.report.readme import study_from_results
    from study.report.summary import study_answer
    from study.report.write import write_all

    study = _synthetic()
    write_all(study, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "### The law behind the shortfall" in markdown and "figures/shortfall-law.png" in markdown
    assert (tmp_path / "figures" / "shortfall-law.png").stat().st_size > 1000
    assert "predicted √(1 − Rᵢ²)" in markdown  # the per-model benchmark table's column
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    expected = study.models[0].fits["reference"].info["predicted_shrink"]
    ok_rows = [r for r in rows if r["model"] == "gauss_ok" and r["parameter"]]  # not a failed fit's row
    assert ok_rows and all(float(r["predicted_shrink"]) == pytest.approx(expected[int(r["parameter"][2])], rel=1e-9)
                           for r in ok_rows)
    assert all(r["predicted_shrink"] == "" for r in rows if r["model"] != "gauss_ok")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["models"]["gauss_ok"]["fits"]["reference"]["info"]["predicted_shrink"] == expected
    # The law's numbers are recomputed from results.json alone (as make readme does).
    assert json.loads(json.dumps(study_answer(study_from_results(results))["law"])) == results["answer"]["law"]


def test_parameterisation_table_labels_dadvi_and_pairs_the_four_variants():
    from study.report.document import to_markdown
    from study.report.topics.law import DADVI_SOURCE, parameterisation_blocks

    names = ["beta[0]", "beta[1]", "beta[2]", "beta[3]", "sigma (log)"]
    entry = {"parameters": names, "measured": [1.0, 0.14, 0.39, 0.12, 1.0], "predicted": [1.0, 0.138, 0.391, 0.122, 1.0],
             "predicted_se": [0.003, 0.005, 0.011, 0.004, 0.002]}
    law = {"models": {"kidiq-kidscore_interaction": entry, "kidiq-kidscore_interaction_bambi": entry}}
    text = to_markdown(parameterisation_blocks(law, {}), Path("."))
    assert DADVI_SOURCE in text and "| 0.173 |" in text and "| 0.151 |" in text
    assert text.count("| 0.173 |") == 1  # DADVI's figures stand beside the Bambi variant only
    assert "Centre or standardise" in text and "linear-response" in text


def test_a_model_without_a_prediction_is_named_with_the_reason():
    from study.report.document import to_markdown
    from study.report.summary import study_answer
    from study.report.topics.law import law_answer_blocks

    study = _synthetic()
    info = study.models[0].fits["reference"].info
    for key in ("predicted_shrink", "predicted_shrink_se", "predicted_shrink_source"):
        info.pop(key)
    info["predicted_shrink_missing"] = "900 reference draws for 100 coordinates: fewer than 10 per coordinate"
    answer = study_answer(study)
    assert answer["law"]["models"] == {} and "pooled" not in answer["law"]
    text = to_markdown(law_answer_blocks(study, answer, Path(".")), Path("."))
    assert "| Gaussian, correlated | 900 reference draws for 100 coordinates: fewer than 10 per coordinate |" in text
