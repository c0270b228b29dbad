"""Bad input: exit code 2, one line naming the problem and what is accepted, nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.compare import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixture_models"


def fixture(name: str) -> str:
    return str(FIXTURES / f"{name}.py")


BAD_INPUT = [
    # (argv, every fragment the message must hold)
    (["--models", "nope"], ["unknown model nope", "known models:", "seed_linear"]),
    (["--methods", "svi_meanfield", "nope"], ["unknown method nope", "known methods:", "laplace_full"]),
    (["--models", "seed_linear", "seed_linear"], ["seed_linear given more than once"]),
    (["--model", "does/not/exist.py"], ["model file not found: does/not/exist.py", "expected a .py file"]),
    (["--model", str(FIXTURES / "README.md")], ["model file must be a .py file", "SPEC = ModelSpec"]),
    ([ "--model", fixture("import_error")],
     ["failed to import: NameError: name 'PRIOR_SCAL' is not defined", "line 6: NOISE = torch.tensor(0.5) * PRIOR_SCAL"]),
    (["--model", fixture("syntax_error")], ["failed to import: SyntaxError", "line 4"]),
    (["--model", fixture("no_spec")], ["defines no module-level SPEC = ModelSpec(...)"]),
    (["--model", fixture("wrong_spec_type")], ["SPEC is a dict, expected models.ModelSpec"]),
    (["--model", fixture("gamma_prior"), "--model", fixture("gamma_prior")], ["model name 'gamma_prior'", "already taken"]),
    (["--model", fixture("data_not_dict")], ["data() returned list, expected dict[str, torch.Tensor]"]),
    (["--model", fixture("data_not_tensors")], ["data() values must be torch.Tensor", "not tensors: y (ndarray)"]),
    (["--model", fixture("data_raises")],
     ["data() raised FileNotFoundError", "line 19:", "expected data() -> dict[str, torch.Tensor]"]),
    (["--model", fixture("discrete_latent")],
     ["latent site 'z' is discrete (Bernoulli)", "the study needs continuous latents"]),
    (["--steps", "0"], ["--steps must be a positive integer, got 0"]),
    (["--steps", "-5"], ["--steps must be a positive integer, got -5"]),
    (["--steps", "many"], ["argument --steps: invalid int value: 'many'"]),
    (["--seed", "-3"], ["--seed must be >= 0 and < 2**32", "got -3"]),
    (["--workers", "0"], ["--workers must be >= 1, got 0"]),
    (["--workers", "-2"], ["--workers must be >= 1, got -2"]),
    (["--posteriordb", "no/such/database"], ["no/such/database is not a posteriordb database",
                                             "expected posterior_database/posteriors/ inside"]),
]


@pytest.mark.parametrize("argv, fragments", BAD_INPUT, ids=[" ".join(a)[-40:] for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, fragments):
    monkeypatch.delenv("POSTERIORDB_PATH", raising=False)  # --posteriordb writes it
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert captured.out == ""
    assert not out.exists()
    assert "POSTERIORDB_PATH" not in os.environ  # --posteriordb's value ends with its run


def test_out_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert main(["--models", "seed_linear", "--out", str(out)]) == 2
    assert f"--out {out} exists and is not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


def test_a_discrete_latent_is_refused_by_the_command_line_process(tmp_path):
    # A real process: no warning or trace dump may add lines to the one-line message.
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "study.compare", "--model", fixture("discrete_latent"), "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {fixture('discrete_latent')}: model 'discrete_latent': latent site 'z' is discrete "
        "(Bernoulli); the study needs continuous latents (marginalise it or observe it)"
    ]
    assert not out.exists()
