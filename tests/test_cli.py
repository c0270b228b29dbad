"""The command line, in-process and as a subprocess, and its outputs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import arviz as az
import pytest

from study.compare import main

ROOT = Path(__file__).resolve().parents[1]


def test_in_process_quick_run_writes_every_output(tmp_path):
    code = main(["--quick", "--models", "seed_linear", "linear_correlated", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert {"model", "parameter", "method", "mean", "sd", "ref_sd", "sd_ratio"} <= set(rows[0])
    methods = {r["method"] for r in rows if r["model"] == "linear_correlated"}
    assert {"svi_meanfield", "svi_meanfield_lr", "svi_lowrank", "svi_fullrank", "expected_loss", "kl_ablation",
            "laplace_full", "laplace_diag", "laplace_torch_full", "laplace_torch_diag", "reference",
            "data_sweep"} == methods
    results = json.loads((tmp_path / "results.json").read_text())
    svi = results["models"]["linear_correlated"]["fits"]["svi_meanfield"]["info"]
    assert svi["steps"] > 0 and svi["particles"] > 0 and "final_elbo" in svi and svi["wall_seconds"] > 0
    assert svi["seeds"] == 2 and len(svi["fixed_point"]["r"]) == 6 and len(svi["sd_se"]) == 6
    laplace = results["models"]["linear_correlated"]["fits"]["laplace_full"]["info"]
    assert laplace["hessian_min_eigenvalue"] > 0 and laplace["hessian_condition_number"] >= 1
    idata = az.from_netcdf(tmp_path / "idata" / "linear_correlated" / "svi_meanfield.nc")
    assert idata.posterior["w"].shape[-1] == 6
    for name in ("report.md", "report.html"):
        assert "The answer" in (tmp_path / name).read_text()


@pytest.mark.slow  # test_reproducibility runs the same command in two fresh processes in the fast suite
def test_subprocess_quick_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "study.compare", "--quick", "--models", "seed_linear", "--out", str(tmp_path),
         "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "report.html").exists() and (tmp_path / "comparison.csv").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "nope"], "unknown model nope; known models:"),
        (["--methods", "nope"], "unknown method nope; known methods:"),
        (["--model", "does/not/exist.py"], "model file not found"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_posteriordb_models_are_skipped_without_a_database(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("POSTERIORDB_PATH", raising=False)
    code = main(["--quick", "--models", "sblrc-blr", "--methods", "laplace_full", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "sblrc-blr: skipped: no posteriordb database given" in err


def test_list_prints_models_and_methods_and_writes_nothing(tmp_path, capsys):
    from models import builtin_models
    from study.methods import METHODS

    out = tmp_path / "out"
    assert main(["--list", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["models: " + ", ".join(builtin_models()), "methods: " + ", ".join(METHODS)]
    assert "seed_linear" in lines[0] and "svi_meanfield" in lines[1]
    assert not out.exists()


def test_interrupted_in_process_main_returns_130_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import study.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study.compare, "run_study", interrupted)
    out = tmp_path / "out"
    assert main(["--quick", "--models", "seed_linear", "--out", str(out), "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.posteriordb
def test_posteriordb_option_reads_the_database(tmp_path, monkeypatch):
    path = os.environ.get("POSTERIORDB_PATH")
    monkeypatch.delenv("POSTERIORDB_PATH", raising=False)  # only the option names the database
    code = main(["--quick", "--models", "sblrc-blr", "--methods", "laplace_full", "reference",
                 "--posteriordb", path, "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    model = json.loads((tmp_path / "results.json").read_text())["models"]["sblrc-blr"]
    assert model["status"] == "ok" and model["reference_kind"] == "gold draws"
    assert model["fits"]["reference"]["status"] == "ok" and model["fits"]["reference"]["info"]["n_draws"] >= 1000
