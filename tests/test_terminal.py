"""What a run says on the terminal and where it writes when no --out is given."""

import os
import subprocess
import sys
from pathlib import Path

from study.compare import main

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["--methods", "laplace_full", "laplace_diag", "reference"]


def test_a_run_into_a_log_has_no_progress_frames_and_one_line_per_model(tmp_path):
    # Output to pipes, as with `make study > log 2>&1`: no tqdm frames, a line per finished model.
    result = subprocess.run(
        [sys.executable, "-m", "study.compare", "--quick", "--models", "seed_linear", "linear_correlated",
         *METHODS, "--out", str(tmp_path / "out")],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert "\r" not in log
    for name in ("seed_linear", "linear_correlated"):
        lines = [line for line in result.stdout.splitlines() if line.startswith(f"{name}: ")]
        assert len(lines) == 1, result.stdout
        assert " s, fits 3 ok, 0 flagged, 0 failed" in lines[0]
    # The log ends with the answer's claims for these models, then where the report is.
    tail = result.stdout.strip().splitlines()
    assert tail[-1] == f"The report: {tmp_path / 'out' / 'report.html'}"
    assert "The answer over the models of this run:" in tail


def test_the_claims_printed_last_are_the_reports_opening_claims(tmp_path, capsys):
    assert main(["--quick", "--models", "seed_linear", "linear_correlated", "--methods", "svi_meanfield",
                 "expected_loss", "laplace_diag", "laplace_full", "reference", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    start = lines.index("The answer over the models of this run:")
    printed = lines[start + 1:-1]
    import json

    from study.report.claims import claims, plain

    answer = json.loads((tmp_path / "results.json").read_text())["answer"]
    expected = [plain(c.text) for c in claims(answer)]
    assert len(expected) >= 3
    assert printed == [f"{i}. {text}" for i, text in enumerate(expected, start=1)]


def test_a_chosen_model_without_out_leaves_the_default_studys_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "results.json").write_text("the default study's results")
    assert main(["--quick", "--models", "seed_linear", *METHODS, "--no-progress"]) == 0
    assert (reports / "results.json").read_text() == "the default study's results"
    assert (reports / "seed_linear" / "results.json").is_file()
    assert not (reports / "report.html").exists()


def test_a_flagged_fit_counts_as_stopped_short_in_the_fixed_point_claim():
    from study.report.claims import fixed_point_claim, plain

    def model(verdict, flagged):
        return {"fixed_point": {"verdict": verdict, "flagged": flagged}}

    answer = {"models": {"a": model("fixed point", False), "b": model("fixed point", True),
                         "c": model("not converged", False), "d": model("model", False)}}
    text = plain(fixed_point_claim(answer).text)
    assert "in 1 of 2 mean-field fits whose σ settled; 2 of 4 stopped short of it" in text
