"""A cache of finished fits.

``<out>/cache/<model>/<method>-<key>.pkl`` holds one finished ``Fit``. The key
is a SHA-256 over everything that determines the fit, so a cached fit is the
fit the same command would compute now, to the byte:

* the source of the study's code (``study/**/*.py``) and of the model package
  (``models/*.py``: the built-in models, their helpers and the contract),
  plus the model file itself when it comes from ``--model``;
* the data (each tensor's name, dtype, shape and bytes) and, for a model that
  reads posteriordb, the database's files (name, size, modification time),
  since its reference draws are read from there, not from ``data()``;
* the model's name, the method, every setting (the master seed included) and
  the fit's own seed;
* the versions of Python and of the numerical packages, and the processor
  architecture.

What the key cannot see: modules a ``--model`` file imports from outside the
``models`` package. Change one of those and pass ``--no-cache``.

Only fits that finished are stored; a failed fit is computed again on the next
run. Entries are pickles: load only caches this study wrote.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from study.core.files import write_bytes
from study.core.results import Fit

CACHE_FORMAT = 1
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# -- the key -------------------------------------------------------------------------------


def _hash_files(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=None)
def code_hash() -> str:
    """SHA-256 of the study's and the model package's source files."""
    files = sorted((_PACKAGE_ROOT / "study").rglob("*.py")) + sorted((_PACKAGE_ROOT / "models").glob("*.py"))
    return _hash_files(files)


def data_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of a model's data: every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(data):
        value = data[name]
        digest.update(str(name).encode() + b"\0")
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # data() is checked to hold tensors; hash anything else by its repr
            digest.update(repr(value).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _posteriordb_fingerprint() -> str:
    from models._posteriordb import PosteriorDBUnavailable, database_root

    try:
        root = database_root()
    except PosteriorDBUnavailable:
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def _reference_summary_hash(posterior: str) -> str:
    """SHA-256 of the shipped summary of a posteriordb posterior's gold draws ("" if none)."""
    from models._posteriordb import summary_paths

    paths = [p for p in summary_paths(posterior) if p.is_file()]
    return _hash_files(paths) if paths else ""


def model_fingerprint(spec, source: str, data: Mapping[str, Any], versions: Mapping[str, str]) -> dict:
    """Everything about a model run that a fit's numbers depend on, except the method.

    Parameters
    ----------
    spec : models.ModelSpec
    source : str
        A built-in model's name, or the path of a ``--model`` file.
    data : mapping
        ``spec.data()``.
    versions : mapping
        Package versions (``study.runner.versions()``).
    """
    path = Path(source)
    model_file = _hash_files([path]) if path.suffix == ".py" and path.is_file() else ""
    return {
        "format": CACHE_FORMAT,
        "code": code_hash(),
        "model": spec.name,
        "model_file": model_file,
        "data": data_hash(data),
        "posteriordb": _posteriordb_fingerprint() if spec.needs_posteriordb else "",
        "reference_summary": _reference_summary_hash(spec.posteriordb) if spec.posteriordb else "",
        "versions": dict(sorted(versions.items())),
        "machine": platform.machine(),
        "dtype": str(torch.get_default_dtype()),
    }


def fit_key(fingerprint: Mapping[str, Any], method: str, settings) -> str:
    """The cache key of one fit: SHA-256 (hex) of the model fingerprint, method and settings."""
    document = {
        **fingerprint,
        "method": method,
        "settings": settings.as_dict(),
        "fit_seed": settings.fit_seed(fingerprint["model"], method),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def safe_name(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


# -- the cache ------------------------------------------------------------------------------


class FitCache:
    """Finished fits of one model run, on disk.

    Parameters
    ----------
    folder : Path
        The cache's root (``<out>/cache``); entries go to ``folder/<model>/``.
    fingerprint : dict
        ``model_fingerprint(...)`` of the model run.
    settings : study.settings.Settings
    """

    def __init__(self, folder: Path, fingerprint: dict, settings):
        self.root = Path(folder)
        self.fingerprint = fingerprint
        self.settings = settings
        self.folder = self.root / safe_name(fingerprint["model"])

    def key(self, method: str) -> str:
        return fit_key(self.fingerprint, method, self.settings)

    def path(self, method: str) -> Path:
        return self.folder / f"{safe_name(method)}-{self.key(method)[:32]}.pkl"

    def load(self, method: str) -> Fit | None:
        """The cached fit of ``method``, or None when there is none (or it is unreadable)."""
        path = self.path(method)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as handle:
                entry = pickle.load(handle)
        except Exception:  # unreadable (e.g. written by another version): compute again
            return None
        if not isinstance(entry, dict) or entry.get("key") != self.key(method):
            return None
        fit = entry.get("fit")
        return fit if isinstance(fit, Fit) and fit.method == method else None

    def store(self, method: str, fit: Fit) -> Path:
        """Write ``fit`` whole or not at all; returns the entry's path."""
        path = self.path(method)
        payload = pickle.dumps({"key": self.key(method), "fit": fit}, protocol=pickle.HIGHEST_PROTOCOL)
        write_bytes(path, payload)
        return path
