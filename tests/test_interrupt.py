"""Interruption: no half-written file, ever; a rerun resumes from the fit cache."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models import builtin_models
from study.core.files import atomic_path, is_temporary, remove_stale_temporaries, write_bytes
from study.run.cache import FitCache, entry_bytes, model_fingerprint
from study.compare import main
from study.core.results import Fit
from study.run.runner import versions
from study.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixture_models"
OUTPUTS = ("comparison.csv", "results.json", "report.md", "report.html")


# -- atomic files ---------------------------------------------------------------------------


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_finished_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    path = tmp_path / "sub" / "comparison.csv"
    write_bytes(path, b"a,b\n")
    assert path.read_bytes() == b"a,b\n"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert os.listdir(path.parent) == ["comparison.csv"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / "cache" / "m" / f".fit.npz.{_dead_pid()}.k2j4h5l6.tmp"
    alive = tmp_path / f".report.html.{os.getppid()}.a1b2c3d4.tmp"  # a live process may still be writing
    other = tmp_path / "notes.tmp"  # not ours
    for path in (dead, alive, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    assert is_temporary(dead) and is_temporary(alive) and not is_temporary(other)
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()


# -- the cache key ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_linear():
    torch.set_default_dtype(torch.float64)
    spec = builtin_models()["seed_linear"]
    return spec, spec.data()


def _key(spec, data, settings, method="svi_meanfield", source="seed_linear", folder=Path(".")) -> str:
    return FitCache(folder, model_fingerprint(spec, source, data, versions()), settings).key(method)


def test_the_cache_key_covers_what_determines_a_fit(seed_linear, tmp_path):
    spec, data = seed_linear
    settings = Settings.make(quick=True)
    key = _key(spec, data, settings)
    assert key == _key(spec, dict(data), settings)  # a function of the contents only
    changed = {
        "seed": _key(spec, data, replace(settings, seed=1)),
        "steps": _key(spec, data, replace(settings, svi_steps=settings.svi_steps + 1)),
        "method": _key(spec, data, settings, method="expected_loss"),
        "data": _key(spec, {**data, "y": data["y"] + 1e-12}, settings),
        "dtype": _key(spec, {**data, "x": data["x"].float()}, settings),
        "model name": _key(replace(spec, name="other"), data, settings),
    }
    assert len(set(changed.values()) | {key}) == len(changed) + 1, changed
    model_file = tmp_path / "model.py"
    model_file.write_text("# one version\n")
    first = _key(spec, data, settings, source=str(model_file))
    model_file.write_text("# another version\n")
    assert _key(spec, data, settings, source=str(model_file)) != first


def test_the_cache_key_changes_with_the_code(seed_linear, tmp_path, monkeypatch):
    import shutil

    import study.run.cache as cache_module

    spec, data = seed_linear
    settings = Settings.make(quick=True)
    copy = tmp_path / "package"
    for folder in ("study", "models"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_module, "_PACKAGE_ROOT", copy)
    cache_module.code_hash.cache_clear()
    try:
        before = _key(spec, data, settings)
        for edited in (copy / "study" / "methods" / "svi" / "loop.py", copy / "models" / "_glm.py"):
            edited.write_text(edited.read_text() + "\n# an edit\n")
            cache_module.code_hash.cache_clear()
            after = _key(spec, data, settings)
            assert after != before, edited
            before = after
        # The report only reads finished fits: editing it keeps every key.
        edited = copy / "study" / "report" / "summary.py"
        edited.write_text(edited.read_text() + "\n# an edit\n")
        cache_module.code_hash.cache_clear()
        assert _key(spec, data, settings) == before
    finally:
        monkeypatch.undo()
        cache_module.code_hash.cache_clear()


def test_the_cache_key_changes_with_the_package_versions(seed_linear):
    spec, data = seed_linear
    settings = Settings.make(quick=True)

    def key(found):
        return FitCache(Path("."), model_fingerprint(spec, "seed_linear", data, found), settings).key("laplace_full")

    base = versions()
    assert key(dict(base)) == key(base)
    for package in ("torch", "pyro-ppl", "arviz", "numpy", "python"):
        assert key({**base, package: base[package] + ".post1"}) != key(base), package


def test_the_cache_key_changes_with_the_posteriordb_files(seed_linear, tmp_path, monkeypatch):
    spec, data = seed_linear
    spec = replace(spec, needs_posteriordb=True)  # as a posteriordb model: its reference draws are files
    settings = Settings.make(quick=True)
    database = tmp_path / "posteriordb" / "posterior_database"
    (database / "posteriors").mkdir(parents=True)
    draws = database / "reference_posteriors" / "draws" / "draws" / "m.json.zip"
    draws.parent.mkdir(parents=True)
    draws.write_bytes(b"draws v1")
    monkeypatch.setenv("POSTERIORDB_PATH", str(tmp_path / "posteriordb"))
    before = _key(spec, data, settings)
    assert _key(spec, data, settings) == before
    draws.write_bytes(b"draws v2, longer")  # new reference draws
    after = _key(spec, data, settings)
    assert after != before
    (database / "posteriors" / "m.json").write_text("{}")  # a new file
    assert _key(spec, data, settings) != after


def test_an_unreadable_or_foreign_entry_is_ignored(seed_linear, tmp_path):
    spec, data = seed_linear
    cache = FitCache(tmp_path, model_fingerprint(spec, "seed_linear", data, versions()), Settings.make(quick=True))
    assert cache.load("laplace_full") is None
    fit = Fit(model="seed_linear", method="laplace_full", param_names=["beta"])
    cache.store("laplace_full", fit)
    assert cache.load("laplace_full").method == "laplace_full"
    cache.path("laplace_full").write_bytes(b"not an entry")
    assert cache.load("laplace_full") is None
    cache.path("laplace_full").write_bytes(entry_bytes("another key", fit))
    assert cache.load("laplace_full") is None


# -- a real process, interrupted ----------------------------------------------------------------

ARGS = ["--quick", "--steps", "150", "--models", "seed_linear", "linear_correlated", "--methods",
        "svi_meanfield", "expected_loss", "laplace_full", "laplace_diag", "reference", "--no-progress"]
N_FITS = 10


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and a
    # Python child that inherits SIG_IGN never raises KeyboardInterrupt: the test would then
    # depend on how the suite was launched (`.ci/run &` ran the whole study to exit 0).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.compare", *ARGS, "--workers", str(workers), "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )


def _entries(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cache").rglob("*.npz")) if (out / "cache").is_dir() else []


def _wait_for_entries(process: subprocess.Popen, out: Path, n: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_entries(out)) < n:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no fit finished in time"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether ``pid`` has ended (a zombie waiting to be reaped has ended too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _assert_nothing_half_written(out: Path, allow_temporaries: bool) -> None:
    for name in OUTPUTS:
        assert not (out / name).exists(), f"{name} written by an interrupted run"
    for path in out.rglob("*"):
        if path.is_file() and is_temporary(path):
            assert allow_temporaries, f"temporary file left behind: {path}"
        elif path.is_file():
            assert path.suffix == ".npz", path
            with np.load(path, allow_pickle=False) as archive:  # whole entries only
                assert "document" in archive.files


def test_sigint_then_sigkill_then_a_rerun_that_resumes(tmp_path):
    out = tmp_path / "out"

    # Ctrl-C (SIGINT to the main process) while fits run in two worker processes.
    process = _start(out, workers=2)
    _wait_for_entries(process, out, 1)
    workers = _children(process.pid)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert all(_gone(pid) for pid in workers), "worker processes outlived the interrupted run"
    _assert_nothing_half_written(out, allow_temporaries=False)
    after_sigint = len(_entries(out))
    assert 1 <= after_sigint < N_FITS

    # kill -9 while fits run in the main process: no handler runs at all.
    process = _start(out, workers=1)
    _wait_for_entries(process, out, after_sigint + 1)
    process.kill()
    process.communicate(timeout=60)
    _assert_nothing_half_written(out, allow_temporaries=True)
    reused = len(_entries(out))
    assert reused < N_FITS
    # What a kill in the middle of writing an entry leaves: a temporary file named after
    # the dead process. The rerun must remove it and never read it.
    planted = out / "cache" / "seed_linear" / f".svi_meanfield-0.npz.{process.pid}.x1y2z3w4.tmp"
    planted.write_bytes(b"\x80half an entry")

    result = subprocess.run(
        [sys.executable, "-m", "study.compare", *ARGS, "--workers", "1", "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{reused} of {N_FITS} fits reused" in result.stdout
    assert not planted.exists()
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    assert len(_entries(out)) == N_FITS

    # Every number is what the same command computes from scratch.
    fresh = tmp_path / "fresh"
    assert main([*ARGS, "--workers", "1", "--out", str(fresh), "--no-cache"]) == 0
    assert not (fresh / "cache").exists()
    assert (out / "comparison.csv").read_bytes() == (fresh / "comparison.csv").read_bytes()


def test_sigterm_exits_130_and_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "out"
    process = _start(out, workers=1)
    _wait_for_entries(process, out, 1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err
    _assert_nothing_half_written(out, allow_temporaries=False)
    assert 1 <= len(_entries(out)) < N_FITS


def test_an_interrupt_removes_what_a_worker_stopped_mid_write_left(tmp_path, monkeypatch):
    # The race a two-worker Ctrl-C can lose: the main process terminates a worker that is
    # renaming a cache entry into place, so the worker's own clean-up never runs. Once
    # run_study has joined its workers, their temporaries are stale and must go.
    import study.compare as compare

    out = tmp_path / "out"
    left = out / "cache" / "seed_linear" / f".svi_meanfield-0.npz.{_dead_pid()}.a1b2c3d4.tmp"

    def stopped_mid_write(*args, **kwargs):
        left.parent.mkdir(parents=True)
        left.write_bytes(b"half an entry")
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_study", stopped_mid_write)
    assert main(["--quick", "--models", "seed_linear", "--no-progress", "--out", str(out)]) == 130
    assert not left.exists()


def test_a_rerun_reuses_every_fit_and_no_cache_recomputes(tmp_path, capsys):
    argv = ["--quick", "--steps", "150", "--models", "seed_linear", "--methods", "svi_meanfield", "laplace_full",
            "reference", "--workers", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "0 of 3 fits reused" in capsys.readouterr().out
    first = (tmp_path / "comparison.csv").read_bytes()
    assert main(argv) == 0
    assert "3 of 3 fits reused" in capsys.readouterr().out
    assert (tmp_path / "comparison.csv").read_bytes() == first
    assert main(argv + ["--no-cache"]) == 0
    assert "cache off" in capsys.readouterr().out
    assert (tmp_path / "comparison.csv").read_bytes() == first
    assert main(argv + ["--seed", "1"]) == 0  # another seed is another key
    assert "0 of 3 fits reused" in capsys.readouterr().out
