"""The report's networks section on a synthetic ladder with known ratios."""

import numpy as np

from study.core.results import Fit, ModelResult, StudyResult
from study.core.settings import Settings
from study.report.document import Bullets, Image, Table
from study.report.topics.networks import (
    TRACK_FACTOR, answer_text, cost_figure, networks_answer, networks_summary,
)


def _network(name: str, d1: int, d2: int, off_layer2: float, rng) -> ModelResult:
    """Two layers; sigma^-2 / H is 1 in W1 and ``off_layer2`` in W2; sigma^-2 / GGN is 1 everywhere."""
    d = d1 + d2
    names = [f"w{i}" for i in range(d)]
    hessian = rng.uniform(1.0, 100.0, d)
    ggn = hessian.copy()
    ggn[d1:] = hessian[d1:] * off_layer2  # the GGN differs from H where sigma does
    sigma = 1.0 / np.sqrt(ggn)
    fits = {
        "svi_meanfield": Fit(name, "svi_meanfield", names, mean=np.zeros(d), sd=sigma,
                             info={"wall_seconds": d / 1000, "data_subsampling": "full batch", "particles": 4,
                                   "steps": 100, "peak_rss_above_base_bytes": 64 * d}),
        "ivon": Fit(name, "ivon", names, mean=np.zeros(d), sd=sigma * 1.1,
                    info={"wall_seconds": d / 2000, "h_moved_median": 3.0, "peak_rss_above_base_bytes": 8 * d * d,
                          "config": {"steps": 100, "beta2": 0.9, "hess_init": 0.1}}),
        "laplace_diag": Fit(name, "laplace_diag", names, mean=np.zeros(d), sd=hessian**-0.5, info={"wall_seconds": 1.0}),
        "laplace_torch_diag": Fit(name, "laplace_torch_diag", names, mean=np.zeros(d), sd=ggn**-0.5, info={}),
    }
    layout = [("W1", 0, (d1,)), ("W2", d1, (d2,))]
    return ModelResult(name=name, title=name, description="", param_names=names, fits=fits, layout=layout)


def _study(tmp_path):
    rng = np.random.default_rng(0)
    models = [_network("small", 40, 20, 1.0, rng), _network("large", 400, 200, 3.0, rng)]
    return StudyResult(models=models, settings=Settings(), methods=list(models[0].fits), wall_seconds=1.0)


def test_layer_medians_and_answer_pick_the_broken_layer(tmp_path):
    study = _study(tmp_path)
    summary = networks_summary(study)
    assert [m["d"] for m in summary["models"]] == [60, 600]
    large = summary["models"][1]["layers"]
    np.testing.assert_allclose(large[0]["svi_meanfield/H"][0], 1.0)
    np.testing.assert_allclose(large[1]["svi_meanfield/H"][0], 3.0)
    np.testing.assert_allclose(large[1]["svi_meanfield/GGN"][0], 1.0)
    np.testing.assert_allclose(large[1]["ivon/GGN"][0], 1.1**-2)
    assert 3.0 > TRACK_FACTOR
    text = answer_text(summary)
    assert "from d = 600" in text and "`W2`" in text
    assert "better than the Hessian" in text


def test_networks_section_renders(tmp_path):
    blocks = networks_answer(_study(tmp_path), {}, tmp_path)
    assert any(isinstance(b, Table) for b in blocks)
    images = [b for b in blocks if isinstance(b, Image)]
    assert len(images) == 2 and all(b.path.exists() for b in images)
    assert any(isinstance(b, Bullets) and any("h_init" in item for item in b.items) for b in blocks)


def test_no_networks_no_section(tmp_path):
    study = _study(tmp_path)
    for model in study.models:
        del model.fits["ivon"]
    assert networks_answer(study, {}, tmp_path) == []


def test_cost_figure_fits_time_and_memory_slopes(tmp_path):
    # Synthetic costs: SVI's time and memory linear in d, IVON's memory quadratic; a fit
    # without a memory figure (laplace_torch_diag) is left out of the memory panel only.
    image, slopes = cost_figure(networks_summary(_study(tmp_path)), tmp_path)
    assert image is not None and image.path.exists()
    np.testing.assert_allclose(slopes["wall_seconds"]["svi_meanfield"], 1.0)
    np.testing.assert_allclose(slopes["peak_rss_above_base_bytes"]["svi_meanfield"], 1.0)
    np.testing.assert_allclose(slopes["peak_rss_above_base_bytes"]["ivon"], 2.0)
    assert "laplace_diag" not in slopes["peak_rss_above_base_bytes"]


def test_fixed_point_map_and_ivon_columns_come_from_their_own_sources(tmp_path):
    # The synthetic fit gets a fixed-point check: the gradient-only kind in "large" (mean residual per
    # layer), and E_q[H] = 2 H so that IVON's precision over it is half its precision over H.
    from study.report.topics.networks import networks_sentence

    study = _study(tmp_path)
    for model in study.models:
        fit = model.fits["svi_meanfield"]
        hessian = model.fits["laplace_diag"].sd ** -2.0
        fit.info["fixed_point"] = {
            "expected_hessian": (2.0 * hessian).tolist(),
            "by_site": {"W1": {"n": 1, "median_r": 0.5, "median_r_se": 0.1, "mean_r": 0.02, "mean_r_se": 0.01},
                        "W2": {"n": 1, "median_r": -0.3, "median_r_se": 0.1}},
        }
        del model.fits["laplace_torch_diag"]  # no GGN: the sentence says so with a dash
    layers = networks_summary(study)["models"][1]["layers"]
    assert layers[0]["fixed_point"][:2] == (0.02, 0.01) and layers[0]["fixed_point"][3] == "mean"
    assert layers[1]["fixed_point"][:2] == (-0.3, 0.1) and layers[1]["fixed_point"][3] == "median"
    # With no hessian_diag fit, "H" is the MAP's (laplace_diag) and the MAP column is not repeated.
    assert layers[0]["hessian_source"] == "laplace_diag" and "svi_meanfield/H_map" not in layers[0]
    np.testing.assert_allclose(layers[1]["ivon/EqH"][0], 0.5 * 3.0 * 1.1**-2)
    sentence = networks_sentence(networks_summary(study))
    assert "4 layers of 2 networks" in sentence and "against the GGN" in sentence and "–" in sentence
