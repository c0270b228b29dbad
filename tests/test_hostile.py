"""Hostile input and hard faults, table-driven.

Every case runs the command line (in-process, or as a real process where a signal or
another user is involved) and asserts the exit code, the one-line message, that no
file is half-written and that nothing appears outside ``--out``.
"""

import io
import os
import pickle
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_output import one_error_line

from study.compare import main
from study.core.errors import one_line
from study.core.files import inside, is_temporary, safe_component, unsafe_name_reason
from study.core.settings import MAX_SEED, Settings

ROOT = Path(__file__).resolve().parents[1]

# A small regression whose name and data each case rewrites.
MODEL = '''
import torch, pyro, pyro.distributions as dist
from models import ModelSpec

def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
    {assertion}
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)

def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 2, generator=g, dtype=torch.float64)
    y = X.sum(1)
    {change}
    return {{"X": X, "y": y}}

SPEC = ModelSpec(name={name!r}, model=model, data=data)
'''


def model_file(folder: Path, name: str = "tiny", change: str = "pass", assertion: str = "pass") -> str:
    path = folder / "models_in" / f"m{abs(hash((name, change, assertion)))}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MODEL.format(name=name, change=change, assertion=assertion))
    return str(path)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def assert_contained(tmp_path: Path, before: set[Path], out: Path) -> None:
    """Nothing new outside ``out`` (and nothing at all anywhere else it could escape to), no temporary file."""
    new = files_under(tmp_path) - before
    outside = [p for p in new if out not in p.parents]
    assert not outside, outside
    assert not [p for p in new if is_temporary(p)], new
    # The parent of tmp_path is where "../x" or "../../x" from inside it would land.
    assert not list(tmp_path.parent.glob("escape*")) and not list(tmp_path.parent.parent.glob("escape*"))


# -- refused at input: exit 2, one line, nothing written ------------------------------------------

HOSTILE_NAMES = [
    ("../../escape", "path separator ('/')"),
    ("/tmp/escape_absolute", "path separator ('/')"),
    ("a/b", "path separator ('/')"),
    ("..", "'..'"),
    ("escape..x", "'..'"),
    ("back\\slash", "path separator ('\\\\')"),
    ("tab\tname", "control character ('\\t')"),
    ("bell\x07", "control character ('\\x07')"),
    ("esc\x1b[31mred", "control character ('\\x1b')"),
    ("new\nline", "control character ('\\n')"),
    ("x" * 101, "longer than 100 characters"),
]


@pytest.mark.parametrize("name, why", HOSTILE_NAMES, ids=[repr(n)[:20] for n, _ in HOSTILE_NAMES])
def test_a_hostile_model_name_is_refused_before_anything_is_written(tmp_path, capsys, name, why):
    path = model_file(tmp_path, name=name)
    out = tmp_path / "out"
    before = files_under(tmp_path)
    assert main(["--model", path, "--out", str(out), "--methods", "laplace_full", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "cannot name output files" in line and why in line, line
    assert not out.exists()
    assert_contained(tmp_path, before, out)


BAD_DATA = [
    # (change to data(), fragments of the one line)
    ('y[3] = float("nan"); y[7] = float("nan")', ["data key 'y'", "2 non-finite values", "nan, at index (3,)"]),
    ('X[2, 1] = float("inf")', ["data key 'X'", "1 non-finite value", "inf, at index (2, 1)"]),
    ('X[0, 0] = -float("inf"); X[5, 1] = float("nan")', ["data key 'X'", "2 non-finite values", "-inf, at index (0, 0)"]),
    ("X, y = X[:0], y[:0]", ["data key 'X' is empty", "shape (0, 2)", "size 0 in dimension 0"]),
    ("X = X[:, :0]", ["data key 'X' is empty", "shape (20, 0)", "dimension 1"]),
    ("y = y.round().long()", ["data key 'y' is int64", "20 values", "continuous Normal", "give floats"]),
    ("y = y > 0", ["data key 'y' is bool", "observed at site 'y'"]),
    ("X = X.round().int()", ["data key 'X' (int32", "model fails on it", "give floats"]),
]


@pytest.mark.parametrize("change, fragments", BAD_DATA, ids=[c[:30] for c, _ in BAD_DATA])
def test_bad_data_is_refused_naming_key_count_and_index(tmp_path, capsys, change, fragments):
    path = model_file(tmp_path, change=change)
    out = tmp_path / "out"
    before = files_under(tmp_path)
    assert main(["--model", path, "--out", str(out), "--methods", "laplace_full", "--no-progress"]) == 2
    line = one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists()
    assert_contained(tmp_path, before, out)


BAD_ARGUMENTS = [
    (["--seed", str(MAX_SEED)], "--seed must be >= 0 and < 2**32"),
    (["--seed", str(2**70)], "--seed must be >= 0 and < 2**32"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--out", "{file}/sub"], "is not writable"),
    (["--out", "{file}"], "exists and is not a folder"),
]


@pytest.mark.parametrize("argv, fragment", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_and_paths_exit_2(tmp_path, capsys, argv, fragment):
    taken = tmp_path / "a_file"
    taken.write_text("keep")
    argv = [a.replace("{file}", str(taken)) for a in argv]
    out = ["--out", str(tmp_path / "out")] if "--out" not in argv else []
    before = files_under(tmp_path)
    assert main(["--models", "seed_linear", "--methods", "laplace_full", "--no-progress", *argv, *out]) == 2
    assert fragment in one_error_line(capsys)
    assert files_under(tmp_path) == before and taken.read_text() == "keep"


def _as_unprivileged() -> list[str]:
    """A command prefix that runs without the power to ignore file permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop the capabilities")
    # Root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH obeys permission bits like any user.
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


@pytest.mark.parametrize("target", ["out", "out/deeper"])
def test_an_unwritable_out_exits_2_before_any_fit(tmp_path, target):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        out = locked / target
        result = subprocess.run(
            [*_as_unprivileged(), sys.executable, "-m", "study.compare", "--models", "seed_linear",
             "--methods", "svi_meanfield", "--out", str(out), "--no-progress"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [
            f"error: --out {out} is not writable: cannot write in {locked} (Permission denied)"
        ]
        assert result.stdout == "" and os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


# -- one sanitiser for every output path -------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, _ in HOSTILE_NAMES] + [".", "", ".hidden", "..."])
def test_every_name_maps_to_one_component_inside_the_folder(tmp_path, name):
    component = safe_component(name)
    assert component not in ("", ".", "..") and not component.startswith(".")
    assert "/" not in component and "\\" not in component and all(ord(c) >= 32 for c in component)
    path = inside(tmp_path, "idata", name, f"{name}.nc")
    assert tmp_path in path.parents and path.parent.parent == tmp_path / "idata"


def test_ordinary_names_are_kept_and_different_names_never_share_a_path():
    for name in ("seed_linear", "sblrc-blr", "svi_meanfield", "w.3"):
        assert safe_component(name) == name and unsafe_name_reason(name) is None
    names = ["a/b", "a_b", "a\\b", "a\tb", "..a", "__a"]
    assert len({safe_component(n) for n in names}) == len(names)


def test_writers_keep_a_hostile_name_inside_out(tmp_path):
    # Names that bypass the input check (a ModelSpec built in-process): every writer still sanitises.
    sys.path.insert(0, str(ROOT / "tests"))
    from report_data import synthetic_study
    from study.report.write import write_all

    study = synthetic_study()
    study.models[0].name = "../../escape"
    study.models[1].name = "/tmp/escape_abs\x1b"
    for model in study.models:
        for fit in model.fits.values():
            fit.model = model.name
    out = tmp_path / "a" / "b" / "out"
    before = files_under(tmp_path)
    write_all(study, out)
    assert_contained(tmp_path, before, out)
    folders = [p for p in (out / "idata").iterdir() if p.is_dir()]  # and the manifest, idata/.idata-cache.json
    assert len(folders) == 2 and not Path("/tmp/escape_abs\x1b").exists()


# -- the cache runs no code, and a bad entry is refitted --------------------------------------------


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"key": "x", "fit": _Payload(marker)})


def _npz_with_object_array(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, document=np.array([_Payload(marker)], dtype=object))
    return buffer.getvalue()


def _truncated(entry: bytes) -> bytes:
    return entry[: len(entry) // 2]


def _zip_with_pickle_member(marker: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("document.npy", _pickle_payload(marker))
    return buffer.getvalue()


CRAFTED = {
    "pickle payload": lambda entry, marker: _pickle_payload(marker),
    "npz holding a pickled object array": lambda entry, marker: _npz_with_object_array(marker),
    "zip member that is a pickle": lambda entry, marker: _zip_with_pickle_member(marker),
    "truncated entry": lambda entry, marker: _truncated(entry),
    "empty file": lambda entry, marker: b"",
    "random bytes": lambda entry, marker: random.Random(0).randbytes(4096),
}

CACHE_ARGS = ["--models", "seed_linear", "--methods", "laplace_full", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh") / "out"
    assert main([*CACHE_ARGS, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_cache_entry_runs_no_code_and_is_refitted(tmp_path, capsys, fresh_run, kind):
    out = tmp_path / "out"
    shutil.copytree(fresh_run, out)
    (entry,) = (out / "cache").rglob("*.npz")
    marker = tmp_path / "code_ran"
    entry.write_bytes(CRAFTED[kind](entry.read_bytes(), marker))
    # An entry of the old pickle format next to it is never read either.
    entry.with_suffix(".pkl").write_bytes(_pickle_payload(marker))
    before = files_under(tmp_path)
    assert main([*CACHE_ARGS, "--out", str(out)]) == 0
    assert "0 of 1 fits reused" in capsys.readouterr().out  # refitted, not read
    assert not marker.exists()
    for name in ("comparison.csv", "results.json"):
        assert _without_timings(out / name) == _without_timings(fresh_run / name)
    assert_contained(tmp_path, before, out)


def _without_timings(path: Path) -> str:
    import json
    import re

    text = path.read_text()
    if path.suffix == ".json":
        text = re.sub(r'"(wall_seconds|fixed_point_seconds|command|peak_rss_above_base_bytes)": [^,\n]+', "", text)
        json.loads(path.read_text())  # whole
    return text


# -- errors name the cause, statuses are honest ---------------------------------------------------------


def test_a_bare_assert_in_a_model_names_its_file_and_line(tmp_path):
    from study.run.runner import run_model

    path = model_file(tmp_path, name="asserts", assertion="assert w.sum() > 1e9")
    result = run_model(path, ["laplace_full"], Settings.make(quick=True), progress=False)
    assert result.status == "failed"
    assert result.reason == f"AssertionError ({Path(path).name}, line 7: assert w.sum() > 1e9)"


def test_a_wrapped_error_keeps_its_root_cause():
    try:
        try:
            raise ZeroDivisionError("size cannot be zero")
        except ZeroDivisionError as inner:
            raise ValueError("Error while computing log_prob at site 'y':\nmore\nlines") from inner
    except ValueError as error:
        assert one_line(error) == ("ValueError: Error while computing log_prob at site 'y':; "
                                   "cause: ZeroDivisionError: size cannot be zero")


def test_one_step_of_svi_is_flagged_never_ok():
    from study.run.runner import run_model

    # sigma starts at init_scale: on this Gaussian posterior the default start, the diagonal
    # Laplace sd, is the exact optimum, and a fit that starts at its answer is rightly ok.
    settings = Settings.make(quick=True, svi_steps=1, sigma_start="scale")
    result = run_model("seed_linear", ["svi_meanfield"], settings, progress=False)
    fit = result.fits["svi_meanfield"]
    assert fit.status == "flagged" and fit.ok
    # The limit: the Sidak bound at the study-wide rate over the pooled residual and the two
    # quick seeds' (3 tests: 4 SE).
    from study.checks.fixed_point import z_limit

    assert "fixed-point residual" in fit.reason and f"beyond {z_limit(3):.2g} SE" in fit.reason


def test_a_drifting_sigma_is_flagged():
    from study.core.results import Fit
    from study.run.runner import SIGMA_DRIFT_LIMIT, flags

    def fit(drift):
        return Fit(model="m", method="svi_meanfield", param_names=["a"], info={"sigma_drift": drift})

    assert flags(fit(SIGMA_DRIFT_LIMIT)) == [] and flags(fit(float("nan"))) == []
    assert "σ had not stopped moving" in flags(fit(2 * SIGMA_DRIFT_LIMIT))[0]
    # Where the fit measured its drift's noise, only the drift beyond that noise counts.
    noisy = Fit(model="m", method="svi_meanfield", param_names=["a"],
                info={"sigma_drift": 4 * SIGMA_DRIFT_LIMIT, "sigma_drift_beyond_noise": 0.0})
    moving = Fit(model="m", method="svi_meanfield", param_names=["a"],
                 info={"sigma_drift": 4 * SIGMA_DRIFT_LIMIT, "sigma_drift_beyond_noise": 2 * SIGMA_DRIFT_LIMIT})
    assert flags(noisy) == []
    assert "beyond its Monte Carlo noise" in flags(moving)[0]


def test_large_seeds_do_not_wrap_onto_small_ones():
    names = ("seed_linear", "svi_meanfield")
    # Seeds below 2**31 - 1 keep the seeds they always had (the default results do not move).
    mix = zlib.crc32(b"seed_linear/svi_meanfield")
    for seed in (0, 1, 12345, 2**31 - 2):  # the formula the study has always used
        assert Settings(seed=seed).fit_seed(*names) == (seed * 1_000_003 + mix) % (2**31 - 1)
    small = {Settings(seed=s).fit_seed(*names) for s in range(0, 2000)}
    large = [Settings(seed=s).fit_seed(*names) for s in
             [2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1] + list(range(2**31 + 5, 2**31 + 2000))]
    assert len(set(large)) == len(large) and not small & set(large)
    assert all(0 <= s < 2**32 for s in large)


# -- kills and interrupts at random points ----------------------------------------------------------------

RUN = ["--quick", "--steps", "150", "--models", "seed_linear", "linear_correlated",
       "--methods", "svi_meanfield", "laplace_full", "--no-progress"]


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(entry.parent.name)] = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, seed", [(signal.SIGKILL, 1), (signal.SIGKILL, 2), (signal.SIGINT, 3)])
def test_a_kill_at_a_random_point_leaves_no_worker_and_a_rerun_gives_the_same_bytes(tmp_path, signum, seed):
    out = tmp_path / "out"
    before = files_under(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "study.compare", *RUN, "--workers", "2", "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 300
    while len(_descendants(process.pid)) < 2:  # both workers started (and the resource tracker)
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, 8.0))  # a random point: start-up, fitting or writing
    workers = _descendants(process.pid)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    time.sleep(10)
    assert not [p for p in workers if _running(p)], "workers outlived their parent"
    if signum == signal.SIGINT:  # the workers run, so main() is running: Ctrl-C ends it with 130
        assert process.returncode == 130, err[-2000:]
        assert err.strip().splitlines() == [
            "interrupted: no output written or changed half-way; finished fits are in the cache, the same "
            "command resumes"]  # no "leaked semaphore" warning
    assert_contained(tmp_path, before, out)
    if out.is_dir():
        for path in out.rglob("*"):
            assert not path.is_file() or is_temporary(path) or path.suffix in (".npz", ".csv", ".json", ".nc",
                                                                                  ".md", ".html", ".png")

    # The same command resumes; its output is what a fresh run writes, to the byte.
    assert main([*RUN, "--workers", "1", "--out", str(out)]) == 0
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    fresh = tmp_path / "fresh"
    assert main([*RUN, "--workers", "1", "--out", str(fresh), "--no-cache"]) == 0
    assert (out / "comparison.csv").read_bytes() == (fresh / "comparison.csv").read_bytes()


# -- a model with many parameters: bounded figures and tables -----------------------------------------


def test_a_2000_parameter_report_is_bounded_and_says_so(tmp_path):
    # Its time is measured in benchmarks/large_report.py, not asserted here.
    sys.path.insert(0, str(ROOT / "tests"))
    from matplotlib.image import imread

    from report_data import large_study
    from study.report.summary import MAX_SHOWN_PARAMETERS
    from study.report.write import write_all

    d = 2000
    write_all(large_study(d), tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    stated = f"{d} parameters: per-parameter figures and tables show {MAX_SHOWN_PARAMETERS} of them"
    assert stated in markdown and f"comparison.csv and results.json hold all {d}" in markdown
    # The σ table and each ArviZ summary have one row per shown parameter; the CSV keeps every one.
    table_rows = [line for line in markdown.splitlines() if line.startswith("| w[")]
    assert len({row.split("|")[1].strip() for row in table_rows}) == MAX_SHOWN_PARAMETERS
    assert len(table_rows) == MAX_SHOWN_PARAMETERS * (1 + markdown.count("az.summary: "))
    rows = (tmp_path / "comparison.csv").read_text().splitlines()
    assert sum(1 for r in rows if r.startswith("wide,w[") and ",laplace_full," in r) == d
    height, width, _ = imread(tmp_path / "figures" / "intervals-wide.png").shape
    assert width < 2000 and height < 4000, (width, height)  # 125 columns, 600 inches, before
