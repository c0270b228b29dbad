"""The study on a dask.distributed LocalCluster: the same bytes as the serial run, the cache
stores fits as they arrive, and a lost worker costs only its fits."""

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from study.compare import main  # noqa: E402
from study.run.cluster import method_groups  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixture_models"
# Tiny fits: these tests are about where fits run, not about their accuracy.
TINY = ["--quick", "--steps", "60", "--seeds", "2", "--no-progress"]
# Two groups of methods that reuse a fit or its mean (data_sweep does not apply to seed_linear: skipped;
# hessian_diag is taken at the mean-field mean), two alone.
METHODS = ["--methods", "svi_meanfield", "svi_meanfield_lr", "data_sweep", "hessian_diag", "expected_loss", "kl_ablation",
           "laplace_diag", "reference"]
LOCAL = ["--scheduler", "local", "--workers", "2"]  # two single-threaded worker processes


def _timeless(value):
    """results.json without what is timing, memory or cache bookkeeping (it differs between any two runs)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items()
                if not ("seconds" in k or k.startswith("peak_") or k in ("cache", "command"))}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_method_groups_keep_reusing_methods_with_the_fit_they_reuse():
    assert method_groups(["laplace_full", "svi_meanfield_lr", "svi_meanfield", "kl_ablation"]) == [
        ["svi_meanfield", "svi_meanfield_lr"], ["kl_ablation"], ["laplace_full"]]
    assert method_groups(["data_sweep", "expected_loss", "kl_ablation", "svi_meanfield"]) == [
        ["svi_meanfield", "data_sweep"], ["expected_loss", "kl_ablation"]]
    # The curvature references are taken at the mean-field mean when it runs, at the MAP alone.
    assert method_groups(["kfac", "hessian_diag", "svi_meanfield", "ggn_diag", "laplace_last_layer"]) == [
        ["svi_meanfield", "hessian_diag", "ggn_diag", "kfac", "laplace_last_layer"]]
    assert method_groups(["kfac", "hessian_diag"]) == [["hessian_diag"], ["kfac"]]


def test_the_client_stores_the_skips_a_rerun_could_not_decide_cheaply(tmp_path):
    # A linear response skipped for want of a strict maximum was decided from the mean-field
    # fit's curvature draws, which a cached fit does not bring back: it is stored, or every
    # rerun would submit its group (and fit the mean field) again. A skip decided from the
    # model alone (the data sweep on seed_linear) is not.
    from study.core.results import SKIPPED, Fit, ModelResult
    from study.run.cache import FitCache
    from study.core.settings import Settings
    from study.run.cluster import _store

    cache = FitCache(tmp_path, {"model": "m"}, Settings.make(quick=True))
    fits = {m: Fit(model="m", method=m, param_names=["a"], status=SKIPPED, reason="because")
            for m in ("svi_meanfield_lr", "data_sweep")}
    _store((cache, None), ModelResult(name="m", title="m", description="", param_names=["a"], fits=fits))
    assert cache.path("svi_meanfield_lr").is_file() and not cache.path("data_sweep").is_file()
    back = cache.load("svi_meanfield_lr")
    assert (back.status, back.reason) == (SKIPPED, "because")


def test_local_cluster_gives_the_serial_bytes_and_its_cache_is_reused(tmp_path, capsys):
    serial, dask = tmp_path / "serial", tmp_path / "dask"
    models = ["--models", "seed_linear"]
    assert main([*TINY, *models, *METHODS, "--workers", "1", "--no-cache", "--out", str(serial)]) == 0
    capsys.readouterr()
    assert main([*TINY, *models, *METHODS, *LOCAL, "--out", str(dask)]) == 0
    # One line for the model once all its tasks are in, as in the serial run.
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("seed_linear: ")]
    assert len(lines) == 1 and ", 0 failed" in lines[0]
    csv_bytes = (serial / "comparison.csv").read_bytes()
    assert csv_bytes == (dask / "comparison.csv").read_bytes()
    assert csv_bytes.count(b"\n") > 5 and b",failed," not in csv_bytes and b",skipped," in csv_bytes
    results = json.loads((dask / "results.json").read_text())
    assert _timeless(json.loads((serial / "results.json").read_text())) == _timeless(results)
    # Every fit was stored as it arrived: a rerun submits nothing (no cluster starts) and gives the same bytes.
    fits = [f for m in results["models"].values() for f in m["fits"].values()]
    assert fits and all(f["info"].get("cache") == "stored" for f in fits if f["status"] == "ok")
    assert main([*TINY, *models, *METHODS, *LOCAL, "--out", str(dask)]) == 0
    rerun = json.loads((dask / "results.json").read_text())
    assert all(f["info"].get("cache") == "reused"
               for m in rerun["models"].values() for f in m["fits"].values() if f["status"] == "ok")
    assert (dask / "comparison.csv").read_bytes() == csv_bytes


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_fits_and_the_run_exits_1(tmp_path, monkeypatch):
    import dask

    # The worker processes inherit the environment: the first model trace inside one of them kills it.
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "killed"))
    model = ["--model", str(FIXTURES / "kills_dask_worker.py"), "--methods", "laplace_diag", "laplace_full",
             "reference"]
    # No second chance: the scheduler gives up on a task at its first lost worker (default: 3 retries).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        assert main([*TINY, *model, *LOCAL, "--no-cache", "--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "killed").exists()
    with open(tmp_path / "out" / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    status = {row["method"]: (row["status"], row["reason"]) for row in rows}
    failed = [m for m, (s, _) in status.items() if s == "failed"]
    # The tasks on the killed worker (the running one, and any already queued there) fail, with
    # the reason; the task(s) on the other worker finish.
    assert 1 <= len(failed) < len(status), status
    assert all("dask task failed" in status[m][1] and "KilledWorker" in status[m][1] for m in failed), status
    assert all(s == "ok" for m, (s, _) in status.items() if m not in failed), status


@pytest.mark.slow
def test_a_killed_worker_is_retried_on_another_and_the_run_succeeds(tmp_path, monkeypatch):
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "killed"))
    model = ["--model", str(FIXTURES / "kills_dask_worker.py"), "--methods", "laplace_diag", "reference"]
    assert main([*TINY, *model, *LOCAL, "--no-cache", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "killed").exists()  # a worker did die
    serial = tmp_path / "serial"
    monkeypatch.delenv("KILL_MARKER")
    assert main([*TINY, *model, "--workers", "1", "--no-cache", "--out", str(serial)]) == 0
    assert (serial / "comparison.csv").read_bytes() == (tmp_path / "out" / "comparison.csv").read_bytes()
