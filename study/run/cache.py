"""A cache of finished fits.

``<out>/cache/<model>/<method>-<key>.npz`` holds one finished ``Fit``. The key
is a SHA-256 over everything that determines the fit, so a cached fit is the
fit the same command would compute now, to the byte:

* the source of the study's code (``study/**/*.py`` except ``study/report/``, which only
  reads finished fits: editing the report keeps the cache warm) and of the model package
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

Fits that finished are stored, and so are fits that failed with an ``ArithmeticError``
(the study's ``NotPositiveDefinite``: a Hessian that is not positive definite is a
property of the model, the data and the seed, which the key fixes, so the same key fails
the same way); any other failure (out of memory, a killed worker, a bug) is computed
again on the next run. Entries are plain data, never pickles: one ``.npz`` file (NumPy's zip of
``.npy`` arrays) holding a UTF-8 JSON document and the fit's arrays, read with
``allow_pickle=False``, so an entry someone crafted or downloaded cannot run
code. The JSON describes the ``Fit`` field by field; numbers round-trip exactly
(``float`` via ``repr``, NaN and inf included; NumPy arrays and scalars keep
their dtype as ``.npy`` members; tuples, None and nested dicts are tagged). An
entry that is unreadable, of another format, or whose key or fields do not
match is ignored and the fit is computed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from study.core.files import safe_component, write_bytes
from study.core.results import Fit

CACHE_FORMAT = 2  # 1: pickles; 2: JSON + .npz, no pickles
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
    """SHA-256 of the study's source files (all but ``study/report/``) and the model package's."""
    report = _PACKAGE_ROOT / "study" / "report"
    study = [p for p in (_PACKAGE_ROOT / "study").rglob("*.py") if report not in p.parents]
    files = sorted(study) + sorted((_PACKAGE_ROOT / "models").glob("*.py"))
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
    from models._posteriordb import summary_name

    path = Path(source)
    model_file = _hash_files([path]) if path.suffix == ".py" and path.is_file() else ""
    return {
        "format": CACHE_FORMAT,
        "code": code_hash(),
        "model": spec.name,
        "model_file": model_file,
        "data": data_hash(data),
        "posteriordb": _posteriordb_fingerprint() if spec.needs_posteriordb else "",
        "reference_summary": _reference_summary_hash(summary_name(spec)) if summary_name(spec) else "",
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
    """A file-name-safe version of a model name (``study.core.files.safe_component``)."""
    return safe_component(name)


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
        return self.folder / f"{safe_name(method)}-{self.key(method)[:32]}.npz"

    def load(self, method: str) -> Fit | None:
        """The cached fit of ``method``, or None when there is none (or it is unreadable or crafted)."""
        path = self.path(method)
        if not path.is_file():
            return None
        try:
            fit = read_entry(path, self.key(method))
        except Exception:  # unreadable, another format, or not ours: compute again
            return None
        return fit if fit.method == method else None

    def store(self, method: str, fit: Fit) -> Path:
        """Write ``fit`` whole or not at all; returns the entry's path."""
        path = self.path(method)
        write_bytes(path, entry_bytes(self.key(method), fit))
        return path


# -- plain-data entries -----------------------------------------------------------------------

_FIT_FIELDS = ("model", "method", "param_names", "mean", "sd", "draws", "info", "trajectory", "status", "reason")
_DOCUMENT = "document"  # the .npz member holding the JSON document


class CacheEntryError(ValueError):
    """A cache entry that is not a plain-data fit this study wrote."""


def _encode(value, arrays: dict):
    """``value`` as JSON-able data; NumPy arrays and scalars go to ``arrays`` (by name)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # exact, NaN and inf included
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.hasobject or array.dtype.kind not in "biufcSU":
            raise TypeError(f"cannot cache an array of dtype {array.dtype}")
        name = f"a{len(arrays)}"
        arrays[name] = array
        return {"array": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, arrays) for v in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    raise TypeError(f"cannot cache a {type(value).__name__}")


def _decode(value, arrays):
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict) and len(value) == 1 and "float" in value:
        return float(value["float"])
    if isinstance(value, dict) and len(value) == 1 and "tuple" in value:
        return tuple(_decode(v, arrays) for v in value["tuple"])
    if isinstance(value, dict) and len(value) == 1 and "dict" in value:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value["dict"]}
    if isinstance(value, dict) and set(value) == {"array", "scalar"}:
        array = arrays[str(value["array"])]
        return array[()] if value["scalar"] else array
    raise CacheEntryError(f"not a cached value: {str(value)[:80]}")


def entry_bytes(key: str, fit: Fit) -> bytes:
    """One cache entry: the fit as a JSON document plus ``.npy`` arrays in one ``.npz``."""
    arrays: dict[str, np.ndarray] = {}
    fields = {name: _encode(getattr(fit, name), arrays) for name in _FIT_FIELDS}
    document = {"format": CACHE_FORMAT, "key": key, "fit": fields}
    arrays[_DOCUMENT] = np.frombuffer(json.dumps(document, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_entry(path: Path, key: str) -> Fit:
    """The ``Fit`` stored in ``path`` under ``key``; never unpickles anything.

    Raises
    ------
    CacheEntryError
        When the entry is of another format, under another key, or malformed;
        NumPy's own errors (e.g. ``ValueError`` for pickled data) pass through.
    """
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    raw = arrays.pop(_DOCUMENT, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CacheEntryError("no document")
    document = json.loads(raw.tobytes().decode("utf-8"))
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT or document.get("key") != key:
        raise CacheEntryError("another format or key")
    fields = document.get("fit")
    if not isinstance(fields, dict) or set(fields) != set(_FIT_FIELDS):
        raise CacheEntryError("not a fit")
    values = {name: _decode(fields[name], arrays) for name in _FIT_FIELDS}
    for name in ("model", "method", "status", "reason"):
        if not isinstance(values[name], str):
            raise CacheEntryError(f"{name} is not a str")
    if not isinstance(values["param_names"], list) or not isinstance(values["info"], dict):
        raise CacheEntryError("param_names or info malformed")
    for name in ("mean", "sd", "draws"):
        if values[name] is not None and not isinstance(values[name], np.ndarray):
            raise CacheEntryError(f"{name} is not an array")
    return Fit(**values)
