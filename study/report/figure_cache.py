"""Per-model figures of a warm run read back from disk instead of drawn again.

Drawing the per-model figures (forest plots of every method's intervals, σ against the
curvature, ...) is most of the time a warm run spends: every fit comes from the cache, yet
matplotlib drew the same pictures again. Each figure function's output is keyed by
everything it can see: the function's name, the report's own source code and the plotting
libraries' versions, the model's description, the answer's entry for the model, and every
fit's arrays and info (all but ``info["cache"]``, which says only whether the fit was read
back). A figure is reused only when its key matches the manifest in the figures folder and
every file it listed is still there; anything else is drawn again. The manifest keeps only
the keys of the last run, so it does not grow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import numpy as np

from study.core.files import write_text
from study.core.results import ModelResult
from study.report.document import Image

MANIFEST = ".figure-cache.json"
# Fit info that changes between a cold and a warm run without changing any figure.
VOLATILE_INFO = frozenset({"cache"})
_REPORT_ROOT = Path(__file__).resolve().parent


def _default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _json(value) -> bytes:
    return json.dumps(value, sort_keys=True, default=_default).encode()


def _array(digest, value) -> None:
    if value is None:
        digest.update(b"none\0")
        return
    array = np.ascontiguousarray(np.asarray(value))
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    digest.update(b"\0")


def report_code_hash() -> str:
    """SHA-256 of the report package's source and of the plotting libraries' versions."""
    import arviz
    import matplotlib

    digest = hashlib.sha256()
    for path in sorted(_REPORT_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(_REPORT_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"matplotlib {matplotlib.__version__} arviz {arviz.__version__}".encode())
    return digest.hexdigest()


def figure_inputs(model: ModelResult, answer_for_model: dict) -> str:
    """SHA-256 of everything about one model a figure function can see (see the module docstring)."""
    digest = hashlib.sha256()
    digest.update(_json({
        "name": model.name, "title": model.title, "description": model.description,
        "param_names": model.param_names, "notes": model.notes, "status": model.status,
        "reason": model.reason, "reference_kind": model.reference_kind, "layout": model.layout,
        "scale_children": model.scale_children,
    }))
    digest.update(_json(answer_for_model))
    for method in sorted(model.fits):
        fit = model.fits[method]
        info = {k: v for k, v in (fit.info or {}).items() if k not in VOLATILE_INFO}
        digest.update(_json({"method": method, "status": fit.status, "reason": fit.reason,
                             "param_names": fit.param_names, "info": info}))
        for value in (fit.mean, fit.sd, fit.draws):
            _array(digest, value)
        for name in sorted(fit.trajectory or {}):
            digest.update(name.encode())
            _array(digest, fit.trajectory[name])
    return digest.hexdigest()


def figure_key(figure: str, inputs: str, code: str) -> str:
    """The key of one figure function's output for one model: its name, the model's
    ``figure_inputs`` hash (computed once per model, however many figures it has) and the
    report's code hash."""
    return hashlib.sha256(f"{figure}\0{inputs}\0{code}".encode()).hexdigest()


class FigureCache:
    """The manifest of one figures folder: figure key -> the images it produced."""

    def __init__(self, fig_dir: Path):
        self.fig_dir = Path(fig_dir)
        self.code = report_code_hash()
        self.used: dict[str, list[dict]] = {}
        try:
            stored = json.loads((self.fig_dir / MANIFEST).read_text())
            self.stored = stored if isinstance(stored, dict) else {}
        except (OSError, ValueError):
            self.stored = {}

    def _inside(self, name) -> Path | None:
        if not isinstance(name, str):
            return None
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            return None
        return self.fig_dir.joinpath(*relative.parts)

    def get(self, key: str) -> list[Image] | None:
        """The images stored under ``key``, or None when any of them is missing."""
        entries = self.stored.get(key)
        if not isinstance(entries, list):
            return None
        images = []
        for entry in entries:
            if not isinstance(entry, dict):
                return None
            path = self._inside(entry.get("path"))
            if path is None or not path.is_file():
                return None
            images.append(Image(path, str(entry.get("alt", "")), str(entry.get("caption", ""))))
        self.used[key] = entries
        return images

    def put(self, key: str, images: list[Image]) -> None:
        entries = []
        for image in images:
            try:
                relative = Path(image.path).resolve().relative_to(self.fig_dir.resolve())
            except ValueError:
                return  # a figure outside the folder: never reused
            entries.append({"path": relative.as_posix(), "alt": image.alt, "caption": image.caption})
        self.used[key] = entries

    def save(self) -> None:
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.fig_dir / MANIFEST, json.dumps(self.used, indent=0, sort_keys=True) + "\n")
