"""The answer over the benchmark and the three-sentence opening: numbers, SEs, causes, wording.

Synthetic studies with known sds (no fitting): every statistic is checked against a direct
NumPy computation from the fits' sds, every wording against the threshold that chooses it.
"""

import math
import re

import numpy as np
import pytest
import torch

from study.core.results import FAILED, Fit, ModelResult, StudyResult
from study.core.settings import Settings
from study.core.structure import hierarchical_scales
from study.report.answer import COLLAPSED, headline, misses_sentence, proxy_sentence, collapse_sentence, fmt, percent
from study.report.summary import (
    CORRELATION_GAP, FUNNEL_GAP, MEDIAN_SE_DRAWS, N_WORST, NON_GAUSSIAN_GAP, TOLERANCE, benchmark_answer,
    pooled_statistics, study_answer,
)
from study.report.topics.benchmark import benchmark_table, cause_text, literature_comparison

SE_REL = 0.01  # every sampled sd's relative Monte Carlo SE in these studies


def make_model(name, svi_over_ref, diag_over_ref=None, full_over_ref=None, names=None, scale_children=None,
               reference_kind="gold draws", nuts=None, collapse=1e-4, slope=-2.0):
    """A model whose methods' sds are the given multiples of a reference sd (one value per parameter)."""
    svi_over_ref = np.asarray(svi_over_ref, dtype=float)
    d = svi_over_ref.size
    names = names or [f"b[{i}]" for i in range(d)]
    ref_sd = np.linspace(0.5, 2.0, d)
    diag = np.asarray(svi_over_ref if diag_over_ref is None else diag_over_ref, dtype=float) * np.ones(d)
    full = np.asarray(1.0 if full_over_ref is None else full_over_ref, dtype=float) * np.ones(d)
    mean = np.zeros(d)

    def fit(method, sd, **info):
        return Fit(model=name, method=method, param_names=names, mean=mean, sd=np.asarray(sd, dtype=float),
                   info=info)

    ref_info = {"kind": "NUTS", **nuts} if nuts else {"kind": reference_kind}
    fits = {
        "svi_meanfield": fit("svi_meanfield", svi_over_ref * ref_sd, sd_se=(SE_REL * svi_over_ref * ref_sd).tolist()),
        "svi_meanfield_lr": fit("svi_meanfield_lr", 0.97 * ref_sd, sd_se=(SE_REL * ref_sd).tolist()),
        "svi_fullrank": fit("svi_fullrank", 1.02 * ref_sd),
        "laplace_full": fit("laplace_full", full * ref_sd),
        "laplace_diag": fit("laplace_diag", diag * ref_sd),
        "expected_loss": fit("expected_loss", collapse * svi_over_ref * ref_sd, steps=400,
                             median_log_sigma_slope_per_1000_steps=slope),
        "reference": fit("reference", ref_sd, sd_se=(SE_REL * ref_sd).tolist(), **ref_info),
    }
    return ModelResult(name=name, title=name.replace("_", " ").title(), description="", param_names=names,
                       fits=fits, reference_kind=ref_info["kind"], scale_children=scale_children)


def make_study(models):
    return StudyResult(models=models, settings=Settings.make(svi_steps=400, particles=8), methods=[],
                       wall_seconds=1.0, versions={})


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(1)
    models = [make_model(f"m{k}", rng.uniform(0.3, 1.3, size=n)) for k, n in enumerate([3, 7, 12, 5])]
    models.append(make_model("stuck", np.full(4, 0.1), nuts={"max_r_hat": 1.4, "min_ess_bulk": 20.0}))
    models.append(ModelResult(name="broken", title="Broken", description="", param_names=[], fits={},
                              status=FAILED, reason="ValueError: no data"))
    return make_study(models)


def test_pooled_statistics_match_a_direct_numpy_computation(study):
    bench = benchmark_answer(study)
    trusted = [m for m in study.models if m.name.startswith("m")]
    assert set(bench["left_out"]) == {"stuck", "broken"} and "untrusted" in bench["left_out"]["stuck"]
    assert bench["n_models"] == 4 and bench["n_parameters"] == 27
    for method in ("svi_meanfield", "svi_meanfield_lr", "svi_fullrank", "laplace_full"):
        ratios = np.concatenate([m.fits[method].sd / m.fits["reference"].sd for m in trusted])
        entry = bench["methods"][method]
        assert entry["n"] == ratios.size == 27 and entry["n_models"] == 4
        assert entry["median"] == pytest.approx(np.median(ratios), rel=1e-12)
        assert entry["q10"] == pytest.approx(np.quantile(ratios, 0.1), rel=1e-12)
        assert entry["q90"] == pytest.approx(np.quantile(ratios, 0.9), rel=1e-12)
        assert entry["share_within"] == pytest.approx(np.mean(np.abs(ratios - 1) <= 0.1), abs=1e-12)
    assert "svi_lowrank" not in bench["methods"]  # no fit, no row
    diag = np.concatenate([m.fits["svi_meanfield"].sd / m.fits["laplace_diag"].sd for m in trusted])
    assert bench["svi_over_laplace_diag"]["median"] == pytest.approx(np.median(diag), rel=1e-12)
    for model in trusted:  # the same per model
        ratios = model.fits["svi_meanfield"].sd / model.fits["reference"].sd
        entry = bench["models"][model.name]
        assert entry["methods"]["svi_meanfield"]["median"] == pytest.approx(np.median(ratios), rel=1e-12)
        assert entry["methods"]["svi_meanfield"]["share_within"] == pytest.approx(
            np.mean(np.abs(ratios - 1) <= 0.1), abs=1e-12)
        assert entry["typical_error"] == pytest.approx(np.exp(np.median(np.abs(np.log(ratios)))), rel=1e-12)
    # Laplace's sds are exact and so are... none of the references here: every SE is known, SVI's complete.
    assert bench["methods"]["svi_meanfield"]["se_complete"] and not bench["methods"]["svi_fullrank"]["se_complete"]


# The SE estimate from MEDIAN_SE_DRAWS redraws has relative error about 1/sqrt(2 * draws) (2.2% at
# 1000); 4 of those bound it with a false-alarm rate near 6e-5 per check.
SE_OF_SE = 4 / math.sqrt(2 * MEDIAN_SE_DRAWS)


def test_median_se_propagates_each_ratios_error():
    # Well-separated ratios (gaps of 0.1, errors of 0.001): the median moves with the middle ratio alone.
    spread = pooled_statistics(np.linspace(0.5, 1.5, 11), np.full(11, 1e-3))
    assert spread["median_se"] == pytest.approx(1e-3, rel=SE_OF_SE)
    # Equal ratios: the median of n draws of N(1, s²) has sd ≈ s·sqrt(π / (2n)) (asymptotic; at n = 101 the
    # approximation itself is within 2%).
    tied = pooled_statistics(np.ones(101), np.full(101, 1e-2))
    assert tied["median_se"] == pytest.approx(1e-2 * math.sqrt(math.pi / 202), rel=SE_OF_SE + 0.02)
    # Exact ratios have no error; without SEs there is none to report.
    assert pooled_statistics(np.ones(5), np.zeros(5))["median_se"] == 0.0
    assert pooled_statistics(np.ones(5))["median_se"] is None
    # The share within ±10% of ratios sitting on its edge: each is inside with probability 1/2, so the
    # share's SE is sqrt(0.25 / n).
    edge = pooled_statistics(np.full(100, 1 + TOLERANCE), np.full(100, 1e-3))
    assert edge["share_se"] == pytest.approx(math.sqrt(0.25 / 100), rel=SE_OF_SE)
    # Deterministic: the same input gives the same SE.
    assert pooled_statistics(np.linspace(0.5, 1.5, 11), np.full(11, 1e-3)) == spread


def _causes(**kwargs):
    return benchmark_answer(make_study([make_model("x", **kwargs)]))["models"]["x"]["likely_causes"]


def test_likely_causes_are_named_by_their_thresholds():
    step = 1.01  # just across a threshold, either way
    # √(H⁻¹)ᵢᵢ exact (the reference), 1/√Hᵢᵢ short of it: correlation alone.
    corr = _causes(svi_over_ref=np.full(4, 0.5), diag_over_ref=1 / (CORRELATION_GAP * step), full_over_ref=1.0)
    assert corr["correlation_gap"] == pytest.approx(CORRELATION_GAP * step) and corr["causes"] == ["correlation"]
    none = _causes(svi_over_ref=np.full(4, 0.5), diag_over_ref=step / CORRELATION_GAP, full_over_ref=1.0)
    assert none["causes"] == [] and none["assessed"] == ["correlation", "non-Gaussian"]
    # √(H⁻¹)ᵢᵢ off the reference: non-Gaussian, in either direction.
    for factor in (NON_GAUSSIAN_GAP * step, 1 / (NON_GAUSSIAN_GAP * step)):
        assert "non-Gaussian" in _causes(svi_over_ref=np.ones(3), diag_over_ref=factor, full_over_ref=factor)["causes"]
    assert "non-Gaussian" not in _causes(svi_over_ref=np.ones(3), diag_over_ref=1.0,
                                         full_over_ref=NON_GAUSSIAN_GAP / step)["causes"]
    # A funnel needs a scale with hierarchical children and that scale's σ off its reference.
    names = ["theta[0]", "theta[1]", "tau (log)"]
    funnel = _causes(svi_over_ref=np.array([1.0, 1.0, 1 / (FUNNEL_GAP * step)]), names=names,
                     scale_children={"tau": ["theta"]})
    assert funnel["causes"] == ["funnel"] and funnel["funnel_gap"] == pytest.approx(FUNNEL_GAP * step)
    assert "`tau`" in cause_text(funnel)
    no_children = _causes(svi_over_ref=np.array([1.0, 1.0, 0.5]), names=names, scale_children={})
    assert "funnel" not in no_children["causes"] and "funnel" in no_children["assessed"]
    unknown = _causes(svi_over_ref=np.array([1.0, 1.0, 0.5]), names=names, scale_children=None)
    assert "funnel" not in unknown["assessed"]
    assert cause_text(none).startswith("none of the diagnostics")


def test_worst_models_are_the_largest_typical_errors():
    factors = [1.0, 0.2, 0.9, 3.0, 0.5, 1.5, 0.7]
    study = make_study([make_model(f"m{k}", np.full(3, f)) for k, f in enumerate(factors)])
    bench = benchmark_answer(study)
    errors = {f"m{k}": max(f, 1 / f) for k, f in enumerate(factors)}
    expected = sorted(errors, key=lambda n: -errors[n])[:N_WORST]
    assert bench["worst"] == expected == ["m1", "m3", "m4", "m5", "m6"]
    # A model within ±10% of its reference is never among the worst.
    close = make_study([make_model("a", np.full(3, 1 + 0.9 * TOLERANCE)), make_model("b", np.full(3, 0.5))])
    assert benchmark_answer(close)["worst"] == ["b"]


def _headline_study(svi, diag, full, collapse=1e-4, slope=-2.0):
    return study_answer(make_study([make_model(f"m{k}", np.full(5, svi), diag_over_ref=diag, full_over_ref=full,
                                               collapse=collapse, slope=slope) for k in range(3)]))


def test_headline_wording_follows_the_thresholds():
    inside, outside = 1 + 0.9 * TOLERANCE, 1 + 1.1 * TOLERANCE
    # σ_SVI / (1/√Hᵢᵢ) = svi / diag.
    assert "is a proxy for the Hessian diagonal" in proxy_sentence(_headline_study(0.5, 0.5 / inside, 1.0)["headline"])
    assert "not a close proxy" in proxy_sentence(_headline_study(0.5, 0.5 / outside, 1.0)["headline"])
    # What it misses: the correlations when √(H⁻¹)ᵢᵢ is close and σ short; little when σ is close.
    answer = _headline_study(0.5, 0.5, 1.0)
    text = misses_sentence(answer["benchmark"])
    assert "misses the correlations" in text and f"a median {percent(0.5)} short of" in text
    assert "misses little" in misses_sentence(_headline_study(1 / inside, 1 / inside, 1.0)["benchmark"])
    non_gaussian = misses_sentence(_headline_study(0.5, 0.5, 0.6)["benchmark"])
    assert "departure from a Gaussian" in non_gaussian
    # Without the KL term: collapsed below COLLAPSED and falling everywhere, or not.
    assert "σ collapses towards 0" in collapse_sentence(_headline_study(0.5, 0.5, 1.0, collapse=0.9 * COLLAPSED)["headline"])
    assert "did not collapse" in collapse_sentence(_headline_study(0.5, 0.5, 1.0, collapse=1.1 * COLLAPSED)["headline"])
    assert "did not collapse" in collapse_sentence(_headline_study(0.5, 0.5, 1.0, slope=0.5)["headline"])
    # The literature comparison is chosen the same way.
    assert literature_comparison(answer).startswith("This run agrees: σ_SVI falls short")


def test_headline_is_three_sentences_each_with_its_number_and_se():
    answer = _headline_study(0.5, 0.5, 1.0)
    text = headline(answer)
    sentences = [proxy_sentence(answer["headline"]), misses_sentence(answer["benchmark"]),
                 collapse_sentence(answer["headline"])]
    assert text == " ".join(sentences)
    entries = [answer["headline"]["proxy"], answer["benchmark"]["methods"]["svi_meanfield"],
               answer["headline"]["collapse"]]
    for sentence, entry in zip(sentences, entries):
        assert sentence.count(". ") == 0 and sentence.endswith(".")
        assert f"**{fmt(entry['median'])}** ± {fmt(entry['median_se'], 2)}" in sentence, sentence
    # The collapse ratio's SE leaves out the expected-loss run's own noise: starred.
    assert f"± {fmt(entries[2]['median_se'], 2)}*" in sentences[2]
    assert headline({"models": {}, "pooled": {}}) == "No model produced the fits needed for an answer."


def test_benchmark_table_rows_and_numbers(study):
    answer = study_answer(study)
    table = benchmark_table(answer)
    assert [row[0] for row in table.rows] == ["σ_SVI (mean-field) / ref sd", "linear response / ref sd",
                                              "full-rank guide / ref sd", "√(H⁻¹)ᵢᵢ (Laplace) / ref sd",
                                              "σ_SVI / (1/√Hᵢᵢ)"]
    svi = answer["benchmark"]["methods"]["svi_meanfield"]
    assert table.rows[0][1] == f"{fmt(svi['median'])} ± {fmt(svi['median_se'], 2)}"
    assert table.rows[0][2] == f"{fmt(svi['q10'])}–{fmt(svi['q90'])}" and table.rows[0][4] == "27 (4)"


def test_hierarchical_scales_finds_a_funnel_and_not_its_non_centred_form():
    import pyro
    import pyro.distributions as dist

    y = torch.tensor([28.0, 8.0, -3.0, 7.0], dtype=torch.float64)

    def centred(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", y.shape[-1]):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            pyro.sample("y", dist.Normal(theta, 10.0), obs=y)

    def non_centred(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", y.shape[-1]):
            raw = pyro.sample("raw", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + tau * raw, 10.0), obs=y)

    def flat_scale(y):  # an improper prior cannot be sampled: the check must not sample
        tau = pyro.sample("tau", dist.ImproperUniform(dist.constraints.positive, (), ()))
        with pyro.plate("schools", y.shape[-1]):
            theta = pyro.sample("theta", dist.Normal(0.0, tau))
            pyro.sample("y", dist.Normal(theta, 10.0), obs=y)

    assert hierarchical_scales(centred, {"y": y}) == {"tau": ["theta"]}
    assert hierarchical_scales(non_centred, {"y": y}) == {}
    assert hierarchical_scales(flat_scale, {"y": y}) == {"tau": ["theta"]}


def _printed(value, out: set[str]) -> set[str]:
    """Every way the text prints a number of the answer dict: 3 significant digits, 2 for an SE, a percentage."""
    if isinstance(value, dict):
        for v in value.values():
            _printed(v, out)
    elif isinstance(value, list):
        for v in value:
            _printed(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.update({fmt(value), fmt(value, 2), str(value)})
        if 0 <= value <= 1:
            out.add(percent(value))
    return out


def test_headline_numbers_come_from_results_json(study):
    """Every number of the opening sentences is one of the answer's numbers, a derived gap, or a threshold."""
    answer = study_answer(study)
    text = headline(answer)
    allowed = _printed(answer, set())
    svi = answer["benchmark"]["methods"]["svi_meanfield"]
    allowed |= {percent(abs(1 - svi["median"])), f"{round(100 * TOLERANCE)}%", "1000"}
    numbers = re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]\d+)?%?", re.sub(r"σᵢ|Hᵢᵢ|H⁻¹|1/√", "", text))
    assert len(numbers) >= 9 and [n for n in numbers if n not in allowed] == [], text


def test_runner_records_scale_children_and_results_json_keeps_them():
    """The runner stores the model's scale structure; results.json carries it to the README's rebuild."""
    import json

    import pyro
    import pyro.distributions as dist

    from models import ModelSpec
    from study.report.readme import study_from_results
    from study.report.write import results_document
    from study.run.runner import run_model

    def model(y):
        tau = pyro.sample("tau", dist.HalfNormal(torch.tensor(1.0, dtype=y.dtype)))
        with pyro.plate("groups", y.shape[-1]):
            theta = pyro.sample("theta", dist.Normal(torch.zeros((), dtype=y.dtype), tau))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    spec = ModelSpec(name="centred", pretty_name="Centred", model=model,
                     data=lambda: {"y": torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)})
    result = run_model(spec, [], Settings.make(quick=True), progress=False)
    assert result.status == "ok" and result.scale_children == {"tau": ["theta"]}
    study = make_study([result, make_model("m", np.full(3, 0.5), scale_children=None)])
    doc = json.loads(json.dumps(results_document(study, {})))
    rebuilt = {m.name: m.scale_children for m in study_from_results(doc).models}
    assert rebuilt == {"centred": {"tau": ["theta"]}, "m": None}
