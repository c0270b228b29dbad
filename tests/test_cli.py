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
            "laplace_full", "laplace_diag", "laplace_torch_full", "laplace_torch_diag", "hessian_diag", "ggn_diag",
            "kfac", "laplace_last_layer", "ivon", "reference", "data_sweep"} == methods
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


def test_posteriordb_models_run_from_the_shipped_copy_without_a_database(tmp_path, monkeypatch, capsys):
    # The built-in posteriordb models read the shipped data and reference summary; a model
    # file that needs a clone's gold draws is skipped with a one-line note.
    monkeypatch.delenv("POSTERIORDB_PATH", raising=False)
    user = tmp_path / "needs_clone.py"
    user.write_text(
        "from models import ModelSpec\n"
        "from models._posteriordb import load_reference_draws\n"
        "import pyro, pyro.distributions as dist\n"
        "def model():\n    pyro.sample('x', dist.Normal(0.0, 1.0))\n"
        "def data():\n    load_reference_draws('arK-arK')\n    return {}\n"
        "SPEC = ModelSpec(name='needs_clone', model=model, data=data, needs_posteriordb=True)\n"
    )
    out = tmp_path / "out"
    code = main(["--quick", "--models", "sblrc-blr", "--model", str(user), "--methods", "laplace_full",
                 "reference", "--out", str(out), "--no-progress", "--no-cache"])
    assert code == 0
    err = capsys.readouterr().err
    assert "needs_clone: skipped: posteriordb file missing: arK-arK.json.zip (not shipped" in err
    results = json.loads((out / "results.json").read_text())
    reference = results["models"]["sblrc-blr"]["fits"]["reference"]
    assert reference["status"] == "ok" and reference["info"]["kind"] == "gold draws"
    assert reference["info"]["source"] == "shipped summary" and reference["info"]["n_draws"] == 10000


def test_list_prints_models_and_methods_and_writes_nothing(tmp_path, capsys):
    from models import builtin_models, model_groups
    from study.methods import METHODS

    out = tmp_path / "out"
    assert main(["--list", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    groups = "groups: " + "; ".join(f"{g}: {', '.join(ms)}" for g, ms in model_groups().items())
    assert lines == ["models: " + ", ".join(builtin_models()), groups, "methods: " + ", ".join(METHODS)]
    assert "networks: " in lines[1]
    assert "seed_linear" in lines[0] and "svi_meanfield" in lines[2]
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
