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

The report's analysis blocks (text, tables and figures together: a model's fixed-point,
ablation, guide and data-size blocks; the answer's detail and across-models figures) are
cached the same way as whole block lists (``FigureCache.blocks``), as plain JSON. A block
list computed from one model is keyed by that model's inputs; one computed from the whole
study by ``study_inputs``: every model's inputs, the answer and the settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import numpy as np

from study.core.files import write_text
from study.core.results import ModelResult
from study.report.document import Bullets, Code, Details, Heading, Image, Numbered, Paragraph, Section, Table

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
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in sorted(_REPORT_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(_REPORT_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"matplotlib {version('matplotlib')} arviz {version('arviz')}".encode())
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


def fit_inputs(model: ModelResult, fit) -> str:
    """SHA-256 of what one fit's ArviZ file is written from: the model's name and layout,
    the method and the draws."""
    digest = hashlib.sha256()
    digest.update(_json({"name": model.name, "layout": model.layout, "method": fit.method}))
    _array(digest, fit.draws)
    return digest.hexdigest()


def study_inputs(model_inputs: dict[str, str], answer: dict, settings: dict, methods) -> str:
    """SHA-256 of everything about the whole run a study-level block can see: every model's
    ``figure_inputs`` (by name), the answer, the settings and the methods run."""
    digest = hashlib.sha256()
    digest.update(_json({"models": model_inputs, "settings": settings, "methods": list(methods)}))
    digest.update(_json(answer))
    return digest.hexdigest()


_TEXT_BLOCKS = {cls.__name__: cls for cls in (Heading, Paragraph, Bullets, Numbered, Table, Code)}
_NESTED_BLOCKS = {cls.__name__: cls for cls in (Details, Section)}


class _NotCacheable(Exception):
    """A block the JSON form cannot hold (an image outside the figures folder, an unknown type)."""


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
        self.used: dict[str, list[dict] | dict] = {}
        self.model_inputs: dict[str, str] = {}
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

    def _images(self, key: str) -> list[Image] | None:
        """The images a figure entry (a list of ``{path, alt, caption}``) names, or None when
        it is not one or a file is missing."""
        entries = self.stored.get(key)
        if not isinstance(entries, list):
            return None
        try:
            return [self._decode({**entry, "type": "Image"}) for entry in entries]
        except (_NotCacheable, TypeError):
            return None

    def _blocks(self, key: str) -> list | None:
        """The blocks a block entry (``{"blocks": [...]}``) holds, or None when it is not one
        or a file it names is missing."""
        entry = self.stored.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("blocks"), list):
            return None
        try:
            return [self._decode(b) for b in entry["blocks"]]
        except (_NotCacheable, TypeError):
            return None

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored with every file it names (without marking it used)."""
        return self._images(key) is not None or self._blocks(key) is not None

    def get(self, key: str) -> list[Image] | None:
        """The images stored under ``key``, or None when any of them is missing."""
        images = self._images(key)
        if images is not None:
            self.used[key] = self.stored[key]
        return images

    def put(self, key: str, images: list[Image]) -> None:
        try:
            entries = [self._encode(image) for image in images]
        except _NotCacheable:
            return  # a figure outside the folder: never reused
        self.used[key] = [{k: v for k, v in entry.items() if k != "type"} for entry in entries]

    def _encode(self, block) -> dict:
        name = type(block).__name__
        if isinstance(block, Image):
            try:
                relative = Path(block.path).resolve().relative_to(self.fig_dir.resolve())
            except ValueError as error:
                raise _NotCacheable(block.path) from error
            return {"type": "Image", "path": relative.as_posix(), "alt": block.alt, "caption": block.caption}
        if name in _TEXT_BLOCKS and type(block) is _TEXT_BLOCKS[name]:
            return {"type": name, **{k: v for k, v in vars(block).items()}}
        if name in _NESTED_BLOCKS and type(block) is _NESTED_BLOCKS[name]:
            fields = {k: v for k, v in vars(block).items() if k != "blocks"}
            return {"type": name, **fields, "blocks": [self._encode(b) for b in block.blocks]}
        raise _NotCacheable(name)

    def _decode(self, entry):
        if not isinstance(entry, dict):
            raise _NotCacheable(entry)
        fields = {k: v for k, v in entry.items() if k != "type"}
        kind = entry.get("type")
        if kind == "Image":
            path = self._inside(fields.get("path"))
            if path is None or not path.is_file():
                raise _NotCacheable(fields.get("path"))
            return Image(path, str(fields.get("alt", "")), str(fields.get("caption", "")))
        if kind in _TEXT_BLOCKS:
            return _TEXT_BLOCKS[kind](**fields)
        if kind in _NESTED_BLOCKS:
            fields["blocks"] = [self._decode(b) for b in fields.get("blocks", [])]
            return _NESTED_BLOCKS[kind](**fields)
        raise _NotCacheable(kind)

    def blocks(self, key: str, make) -> list:
        """The block list stored under ``key`` when every figure it names is still there;
        otherwise ``make()``, stored for the next run when the JSON form can hold it."""
        made = self._blocks(key)
        if made is not None:
            self.used[key] = self.stored[key]
            return made
        made = list(make() or [])
        try:
            self.used[key] = {"blocks": [self._encode(b) for b in made]}
        except _NotCacheable:
            pass
        return made

    def inputs_of(self, model: ModelResult, answer_for_model: dict) -> str:
        """``figure_inputs`` of one model, computed once per run."""
        if model.name not in self.model_inputs:
            self.model_inputs[model.name] = figure_inputs(model, answer_for_model)
        return self.model_inputs[model.name]

    def save(self) -> None:
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.fig_dir / MANIFEST, json.dumps(self.used, indent=0, sort_keys=True) + "\n")
