"""Failures while fitting stop that (model, method) only; the rest is written; exit code 1."""

import csv
import json
import math
import re
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from models import load_model_file
from study.compare import main
from study.core.results import FAILED, FLAGGED, OK, Fit
from study.run.runner import MAX_DIVERGENT_FRACTION, flags, run_model
from study.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixture_models"
# Short runs: these tests are about what happens to a fit, not about its accuracy.
FAST = Settings.make(quick=True, svi_steps=100, nuts_warmup=100, nuts_draws=100, draws=100, elbo_draws=100)


# The model's own exception: its file and line follow the message.
REFERENCE_RAISES = ("KeyError: 'X' (reference_raises.py, line 32: X = d[\"X\"]  # the data key is \"x\": "
                    "this raises KeyError)")


def fixture(name: str) -> str:
    return str(FIXTURES / f"{name}.py")


def test_a_model_that_raises_fails_alone_with_its_reason():
    result = run_model(fixture("model_raises"), ["laplace_full", "reference"], FAST, progress=False)
    assert result.status == FAILED
    assert result.reason.startswith("RuntimeError: The size of tensor a (3) must match the size of tensor b (2)")
    assert "\n" not in result.reason


def test_a_fit_that_raises_stops_only_that_fit():
    result = run_model(fixture("reference_raises"), ["laplace_full", "laplace_diag", "reference"], FAST, progress=False)
    assert result.status == OK
    assert result.fits["reference"].status == FAILED
    assert result.fits["reference"].reason == REFERENCE_RAISES
    for method in ("laplace_full", "laplace_diag"):
        assert result.fits[method].status == OK and np.all(np.isfinite(result.fits[method].sd))


def test_an_elbo_that_turns_nan_fails_svi_only():
    # From sigma = 0.1 the Gaussian draws of the rate (MAP 0.3) first go negative some steps
    # in, and the loss turns NaN: without Pyro's validation (which checks the first block of
    # steps only), the optimiser's own check stops the fit, naming the step and the seed.
    import pyro

    with pyro.validation_enabled(False):
        result = run_model(fixture("nan_elbo"), ["svi_meanfield", "laplace_full"],
                           replace(FAST, sigma_start="scale"), progress=False)
    svi = result.fits["svi_meanfield"]
    assert svi.status == FAILED
    assert re.fullmatch(r"NonFiniteLoss: svi_meanfield loss became nan at step \d+ \(seed \d+\)", svi.reason)
    assert result.fits["laplace_full"].status == OK
    # From the default start, the diagonal Laplace sd, the very first draws are negative and
    # Pyro's validation of the factor stops the fit, in one line naming the model's line.
    result = run_model(fixture("nan_elbo"), ["svi_meanfield", "laplace_full"], FAST, progress=False)
    svi = result.fits["svi_meanfield"]
    assert svi.status == FAILED
    assert svi.reason.startswith("ValueError: ") and "nan_elbo.py, line" in svi.reason and "\n" not in svi.reason
    assert result.fits["laplace_full"].status == OK


def test_a_hessian_that_is_not_positive_definite_reports_its_smallest_eigenvalue():
    result = run_model(fixture("saddle_hessian"), ["svi_meanfield", "laplace_full", "laplace_diag"], FAST,
                       progress=False)
    # At beta = 0 the Hessian of -log p is 1 (prior) - 2 sum(y) (likelihood of y ~ N(beta^2, 1)).
    y = load_model_file(fixture("saddle_hessian")).data()["y"]
    expected = 1.0 - 2.0 * float(y.sum())
    for method in ("laplace_full", "laplace_diag"):
        fit = result.fits[method]
        assert fit.status == FAILED
        match = re.fullmatch(
            r"NotPositiveDefinite: Hessian at the MAP is not positive definite \(smallest eigenvalue (\S+)\)",
            fit.reason,
        )
        assert match, fit.reason
        assert math.isclose(float(match.group(1)), expected, rel_tol=5e-3)  # printed to 3 digits
    assert result.fits["svi_meanfield"].ok  # the other methods still ran (100 steps: maybe flagged)


def test_divergent_nuts_is_flagged_and_kept():
    result = run_model(fixture("step_penalty"), ["laplace_full", "reference"], FAST, progress=False)
    reference = result.fits["reference"]
    assert reference.status == FLAGGED and reference.ok  # kept: its numbers are shown, with the flag
    total = reference.info["chains"] * reference.info["draws_per_chain"]
    assert reference.info["divergences"] > MAX_DIVERGENT_FRACTION * total
    assert f"{reference.info['divergences']} of {total} NUTS draws diverged" in reference.reason
    assert reference.sd is not None and np.all(np.isfinite(reference.sd))
    assert result.fits["laplace_full"].status == OK


def _nuts_fit(divergences: int, chains: int = 2, draws: int = 200) -> Fit:
    info = {"kind": "NUTS", "divergences": divergences, "chains": chains, "draws_per_chain": draws}
    return Fit(model="m", method="reference", param_names=["a"], info=info)


@pytest.mark.parametrize("divergences, flagged", [(0, False), (4, False), (5, True), (400, True)])
def test_divergence_threshold(divergences, flagged):
    # 400 draws: 1% is 4; more than that is flagged.
    assert bool(flags(_nuts_fit(divergences))) is flagged


def test_only_nuts_fits_are_checked_for_divergences():
    fit = _nuts_fit(100)
    fit.info["kind"] = "analytic"
    assert flags(fit) == []


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def _cli(tmp_path, *models_and_methods) -> int:
    # 150 steps: short, but enough for seed_linear's SVI fit to pass its convergence checks (100 is flagged).
    return main(["--quick", "--steps", "150", "--workers", "1", "--no-progress", "--out", str(tmp_path),
                 *models_and_methods])


# Exit code 1 for each cause alone: a failed model, a failed fit, a flagged fit.


def test_a_failed_model_alone_exits_1_and_the_rest_is_written(tmp_path, capsys):
    assert _cli(tmp_path, "--models", "seed_linear", "--model", fixture("model_raises"),
                "--methods", "svi_meanfield", "laplace_full") == 1
    assert "model_raises: failed: RuntimeError: The size of tensor a (3)" in capsys.readouterr().err
    by = {(r["model"], r["method"]): r for r in _rows(tmp_path / "comparison.csv")}
    assert by[("model_raises", "")]["status"] == "failed"
    for method in ("svi_meanfield", "laplace_full"):
        assert by[("seed_linear", method)]["status"] == "ok" and float(by[("seed_linear", method)]["sd"]) > 0
    results = json.loads((tmp_path / "results.json").read_text())["models"]
    assert results["model_raises"]["status"] == "failed"
    assert "**failed**: RuntimeError: The size of tensor a (3)" in (tmp_path / "report.md").read_text()
    assert "RuntimeError: The size of tensor a (3)" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "idata" / "seed_linear" / "laplace_full.nc").is_file()


def test_a_failed_fit_alone_exits_1_and_the_other_fits_are_written(tmp_path, capsys):
    assert _cli(tmp_path, "--model", fixture("reference_raises"), "--methods", "laplace_full", "reference") == 1
    err = capsys.readouterr().err
    assert "failed fits: reference_raises/reference" in err and "flagged" not in err
    by = {(r["model"], r["method"]): r for r in _rows(tmp_path / "comparison.csv")}
    assert by[("reference_raises", "reference")]["reason"] == REFERENCE_RAISES
    assert by[("reference_raises", "laplace_full")]["status"] == "ok"
    results = json.loads((tmp_path / "results.json").read_text())["models"]
    assert results["reference_raises"]["status"] == "ok"
    assert results["reference_raises"]["fits"]["reference"]["status"] == "failed"
    assert "`reference` failed: KeyError: 'X'" in (tmp_path / "report.md").read_text()
    assert "KeyError" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "idata" / "reference_raises" / "laplace_full.nc").is_file()
    assert not (tmp_path / "idata" / "reference_raises" / "reference.nc").exists()


def test_a_flagged_fit_alone_exits_1_and_keeps_its_numbers(tmp_path, capsys):
    assert _cli(tmp_path, "--model", fixture("step_penalty"), "--methods", "laplace_full", "reference") == 1
    err = capsys.readouterr().err
    assert "flagged fits: step_penalty/reference (" in err and "failed" not in err
    by = {(r["model"], r["method"]): r for r in _rows(tmp_path / "comparison.csv")}
    flagged = by[("step_penalty", "reference")]
    assert flagged["status"] == "flagged" and "NUTS draws diverged" in flagged["reason"]
    assert flagged["sd"] != ""  # flagged, not hidden
    assert by[("step_penalty", "laplace_full")]["status"] == "ok"
    results = json.loads((tmp_path / "results.json").read_text())["models"]
    assert results["step_penalty"]["fits"]["reference"]["status"] == "flagged"
    assert results["step_penalty"]["fits"]["reference"]["info"]["divergences"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "`reference` flagged: " in markdown and "NUTS draws diverged" in markdown
    assert "NUTS draws diverged" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "idata" / "step_penalty" / "reference.nc").is_file()


def test_a_non_gaussian_prior_runs_and_is_flagged_in_the_report(tmp_path, capsys):
    argv = ["--quick", "--workers", "1", "--no-progress", "--out", str(tmp_path), "--model", fixture("gamma_prior"),
            "--methods", "laplace_full", "laplace_diag"]
    assert main(argv) == 0
    note = "Latent `sigma` has a Gamma prior, not a Gaussian"
    results = json.loads((tmp_path / "results.json").read_text())["models"]["gamma_prior"]
    assert results["status"] == "ok" and any(n.startswith(note) for n in results["notes"])
    assert all(fit["status"] == "ok" for fit in results["fits"].values())
    assert note in (tmp_path / "report.md").read_text()
    assert "has a Gamma prior, not a Gaussian" in (tmp_path / "report.html").read_text()


def test_flat_improper_priors_run_through_every_method_and_are_flagged(tmp_path):
    # Stan's implicit priors are ImproperUniform: nothing may sample them (MAP start, guide
    # init, NUTS start, shape check), and the report names them as non-Gaussian priors.
    methods = ["svi_meanfield", "svi_fullrank", "expected_loss", "laplace_full", "laplace_diag",
               "laplace_torch_full", "reference"]
    argv = ["--quick", "--workers", "1", "--no-progress", "--no-cache", "--out", str(tmp_path), "--steps", "200",
            "--seeds", "1", "--model", fixture("flat_priors"), "--methods", *methods]
    # 1: a 200-step SVI fit may be flagged as short of its fixed point; nothing may fail.
    assert main(argv) in (0, 1)
    results = json.loads((tmp_path / "results.json").read_text())["models"]["flat_priors"]
    assert results["status"] == "ok" and results["reference_kind"] == "NUTS"
    for note in ("Latent `beta` has a flat (improper) prior", "Latent `sigma` has a flat (improper) prior"):
        assert any(n.startswith(note) for n in results["notes"]), results["notes"]
        assert note in (tmp_path / "report.md").read_text()
    fits = results["fits"]
    assert fits["laplace_torch_full"]["status"] == "skipped"  # no laplace_torch problem given
    for method in set(methods) - {"laplace_torch_full"}:
        assert fits[method]["status"] in ("ok", "flagged"), (method, fits[method]["reason"])
    for method in ("laplace_full", "laplace_diag", "reference"):  # exact or long enough: no flag
        assert fits[method]["status"] == "ok", (method, fits[method]["reason"])
    # The flat prior adds nothing to the Laplace precision: beta's sd is the least-squares one.
    data = load_model_file(fixture("flat_priors")).data()
    X, y = data["X"].numpy(), data["y"].numpy()
    beta_hat, *_ = np.linalg.lstsq(X, y, rcond=None)
    # MAP in (beta, log sigma): flat in sigma adds the Jacobian sigma, so sigma^2 = RSS / (N - 1).
    sigma2 = float(((y - X @ beta_hat) ** 2).sum()) / (len(y) - 1)
    expected = np.sqrt(np.diag(sigma2 * np.linalg.inv(X.T @ X)))
    np.testing.assert_allclose(fits["laplace_full"]["sd"][:2], expected, rtol=1e-6)


def test_a_numerical_failure_is_cached_and_any_other_failure_is_computed_again(tmp_path):
    # A Hessian that is not positive definite (an ArithmeticError) is a property of the model,
    # data and seed that the cache key fixes: the warm run reads the failure back. A bug
    # (reference_raises' KeyError) might be mended without a change the key sees: computed again.
    methods = ["laplace_full", "svi_meanfield"]
    first = run_model(fixture("saddle_hessian"), methods, FAST, progress=False, cache_dir=tmp_path)
    assert first.fits["laplace_full"].status == FAILED
    assert first.fits["laplace_full"].info.get("cache") == "stored"
    second = run_model(fixture("saddle_hessian"), methods, FAST, progress=False, cache_dir=tmp_path)
    assert second.fits["laplace_full"].status == FAILED
    assert second.fits["laplace_full"].info.get("cache") == "reused"
    assert second.fits["laplace_full"].reason == first.fits["laplace_full"].reason

    other = run_model(fixture("reference_raises"), ["reference"], FAST, progress=False, cache_dir=tmp_path)
    assert other.fits["reference"].status == FAILED and "cache" not in other.fits["reference"].info
    again = run_model(fixture("reference_raises"), ["reference"], FAST, progress=False, cache_dir=tmp_path)
    assert again.fits["reference"].status == FAILED and "cache" not in again.fits["reference"].info


def test_a_warm_study_reads_cached_models_without_starting_workers(tmp_path, monkeypatch):
    # Every fit cached: run_study reads the models in its own process (starting a worker
    # costs more than reading them) and returns the same fits as the cold run's workers.
    from study.run import runner

    methods = ["laplace_full", "laplace_diag"]
    names = ["seed_linear", "linear_correlated"]
    cold = runner.run_study(names, methods, FAST, workers=2, progress=False, cache_dir=tmp_path)

    def no_pool(*args, **kwargs):
        raise AssertionError("a warm run started worker processes")

    monkeypatch.setattr(runner, "ProcessPoolExecutor", no_pool)
    warm = runner.run_study(names, methods, FAST, workers=2, progress=False, cache_dir=tmp_path)
    assert [m.name for m in warm.models] == names
    for before, after in zip(cold.models, warm.models):
        for method in methods:
            assert after.fits[method].info["cache"] == "reused"
            np.testing.assert_array_equal(after.fits[method].sd, before.fits[method].sd)
    # A model with nothing cached still runs, alone: its two methods go out as two tasks, so
    # that both workers fit (here in this process, through an executor that runs each at once).
    submitted = []

    class AtOnce:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, *args):
            submitted.append(args[1])
            future = Future()
            future.set_result(fn(*args))
            return future

        def shutdown(self, *args, **kwargs):
            pass

    monkeypatch.setattr(runner, "ProcessPoolExecutor", AtOnce)
    mixed = runner.run_study(names + ["kidiq-kidscore_momiq"], methods, FAST, workers=2, progress=False,
                             cache_dir=tmp_path)
    assert submitted == [["laplace_full"], ["laplace_diag"]]
    assert [m.name for m in mixed.models] == names + ["kidiq-kidscore_momiq"]
    assert list(mixed.models[2].fits) == methods
    assert mixed.models[2].fits["laplace_full"].info["cache"] == "stored"


def test_a_cache_only_read_builds_nothing_when_no_fit_is_cached_under_the_current_key(tmp_path, monkeypatch):
    # A partly warm run (the code or settings changed, the cache folders remain): the main
    # process's read-ahead must find out from the file names alone, before building the
    # model (its data, trace and shape check), which the worker that computes it repeats.
    from study.run import runner

    methods = ["laplace_full", "laplace_diag"]
    runner.run_model("seed_linear", methods, FAST, progress=False, cache_dir=tmp_path)
    built = []
    original = runner.ModelRun.create
    monkeypatch.setattr(runner.ModelRun, "create", lambda *a, **k: built.append(1) or original(*a, **k))
    other = replace(FAST, seed=FAST.seed + 1)  # every key changes
    assert runner.run_model("seed_linear", methods, other, progress=False, cache_dir=tmp_path, cache_only=True) is None
    assert built == []
    warm = runner.run_model("seed_linear", methods, FAST, progress=False, cache_dir=tmp_path, cache_only=True)
    assert warm is not None and built == [1]
    assert all(warm.fits[m].info["cache"] == "reused" for m in methods)


def test_a_linear_response_without_a_strict_maximum_is_skipped_alike_cold_and_warm(tmp_path):
    # Cold, the mean-field fit's curvature draws are at hand and the method is skipped before
    # it runs, and the skip is stored (Method.stores_skip); warm, the mean-field fit comes from
    # the cache without those draws, and the skip is read back instead of asked again.
    methods = ["svi_meanfield", "svi_meanfield_lr"]
    runs = [run_model("bnn_regression", methods, FAST, progress=False, cache_dir=tmp_path) for _ in range(2)]
    fits = [r.fits["svi_meanfield_lr"] for r in runs]
    assert fits[0].status == "skipped" and "no strict local maximum" in fits[0].reason
    assert (fits[1].status, fits[1].reason) == (fits[0].status, fits[0].reason)
    assert [f.info.get("cache") for f in fits] == ["stored", "reused"]
    # Without the stored skip (a cache from before, or one whose entry was lost), the fit asks
    # the same question of the same seeded draws: the same status and reason, stored then.
    entries = list(tmp_path.rglob("svi_meanfield_lr-*.npz"))
    assert len(entries) == 1
    entries[0].unlink()
    runs += [run_model("bnn_regression", methods, FAST, progress=False, cache_dir=tmp_path) for _ in range(2)]
    fits = [r.fits["svi_meanfield_lr"] for r in runs]
    assert [(f.status, f.reason) for f in fits[2:]] == [(fits[0].status, fits[0].reason)] * 2
    assert [f.info.get("cache") for f in fits[2:]] == ["stored", "reused"]
    # The same fit: no bookkeeping (peak memory) that only the path that ran it would add.
    assert all({k: v for k, v in f.info.items() if k != "cache"} == {} for f in fits)


def test_fit_workers_draw_their_models_sections_and_the_report_draws_none_again(tmp_path, monkeypatch):
    # With workers, each model's report section is drawn by the worker that fitted it as soon
    # as its fits end (runner.run_after with write.draw_model_section); the report then reads those entries as a warm run
    # would: no second pool, and the same report and figure files as a serial run's.
    from study.report import build as build_module
    from study.report.summary import study_answer
    from study.report.write import draw_model_section, write_all
    from study.run import runner

    methods = ["laplace_full", "laplace_diag", "svi_meanfield"]
    names = ["seed_linear", "linear_correlated"]
    study = runner.run_study(names, methods, FAST, workers=2, progress=False,
                             after_model=partial(draw_model_section, report_dir=tmp_path / "two"))
    assert study.drawn and study.drawn_idata
    # The same fits, every section drawn and every ArviZ file written here.
    write_all(replace(study, drawn={}, drawn_idata={}), tmp_path / "serial")
    answer = study_answer(study)
    for model in study.models:
        cache = build_module.FigureCache(tmp_path / "two" / "figures")
        assert set(build_module.model_keys(model, answer["models"][model.name], cache)) <= set(study.drawn)

    def no_prefill(*args, **kwargs):
        raise AssertionError("the report drew a section again")

    from study.report import write as write_module

    drawn, written = [], []
    original = build_module.model_artifacts
    monkeypatch.setattr(build_module, "model_artifacts", lambda *a, **k: drawn.append(a) or original(*a, **k))
    original_nc = write_module.to_inference_data
    monkeypatch.setattr(write_module, "to_inference_data", lambda *a: written.append(a) or original_nc(*a))
    write_all(study, tmp_path / "two", workers=2)
    assert drawn == [] and written == []
    for name in ("report.md", "report.html"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "serial" / name).read_text()
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial" / "figures").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "figures").rglob("*.png"))
    for path in files:
        assert (tmp_path / "two" / path).read_bytes() == (tmp_path / "serial" / path).read_bytes(), path
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial" / "idata").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "idata").rglob("*"))
    for path in files:
        if (tmp_path / "serial" / path).is_file():
            assert (tmp_path / "two" / path).read_bytes() == (tmp_path / "serial" / path).read_bytes(), path


def test_a_section_that_fails_to_draw_in_its_worker_costs_only_the_drawing(tmp_path, monkeypatch, capsys):
    from study.report.write import draw_model_section
    from study.run import runner

    model = runner.run_model("seed_linear", ["laplace_diag"], FAST, progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no canvas")

    import study.report.build as build_module
    monkeypatch.setattr(build_module, "model_artifacts", broken)
    assert runner.run_after(model, partial(draw_model_section, report_dir=tmp_path)) == ({}, {})
    assert "seed_linear: report section not drawn in its worker: RuntimeError: no canvas" in capsys.readouterr().err
