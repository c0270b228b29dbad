"""Pyro models of the study, one file each, discovered automatically.

A model file defines ``SPEC = ModelSpec(...)`` (see ``models/model_contract.md``).
Files whose name starts with an underscore are helpers, not models.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from pathlib import Path

from ._contract import GaussianPosterior, LaplaceTorchProblem, ModelSpec

__all__ = [
    "GaussianPosterior",
    "LaplaceTorchProblem",
    "ModelFileError",
    "ModelSpec",
    "builtin_models",
    "default_models",
    "model_groups",
    "load_model_file",
]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message is one line."""


def _spec_of(module, origin: str) -> ModelSpec:
    if not hasattr(module, "SPEC"):
        raise ModelFileError(f"{origin} defines no module-level SPEC = ModelSpec(...)")
    spec = module.SPEC
    if not isinstance(spec, ModelSpec):
        raise ModelFileError(
            f"{origin}: SPEC is a {type(spec).__name__}, expected models.ModelSpec"
        )
    if not spec.description and module.__doc__:
        # The file's docstring tells the model's story (pseudo-code included).
        spec = _with_description(spec, inspect.cleandoc(module.__doc__))
    return spec


def _with_description(spec: ModelSpec, description: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, description=description)


def builtin_models() -> dict[str, ModelSpec]:
    """Every ``SPEC`` in this package, by name, in file-name order."""
    specs: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not hasattr(module, "SPEC"):
            continue
        spec = _spec_of(module, f"models/{info.name}.py")
        specs[spec.name] = spec
    return specs


# A model tagged with this runs only when selected by name or by one of its groups
# (e.g. the larger rungs of the network ladder).
ON_REQUEST = "on_request"


def default_models() -> dict[str, ModelSpec]:
    """The built-in models of the default study: all but those tagged ``"on_request"``."""
    return {name: spec for name, spec in builtin_models().items() if ON_REQUEST not in spec.tags}


def model_groups() -> dict[str, list[str]]:
    """Tag -> the built-in models that carry it (e.g. ``"networks"``); ``"on_request"`` is not a group."""
    groups: dict[str, list[str]] = {}
    for name, spec in builtin_models().items():
        for tag in spec.tags:
            if tag != ON_REQUEST:
                groups.setdefault(tag, []).append(name)
    return groups


def load_model_file(path: str | Path) -> ModelSpec:
    """Import a model file from anywhere and return its ``SPEC``.

    Raises
    ------
    ModelFileError
        With a one-line message when the file is missing, fails to import
        (naming the failing line), or has no valid ``SPEC``.
    """
    path = Path(path)
    expected = "a .py file that defines SPEC = ModelSpec(...)"
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path} (expected {expected})")
    if path.suffix != ".py":
        raise ModelFileError(f"model file must be a .py file: {path} (expected {expected})")
    module_name = f"_user_model_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any error in user code becomes one clear line
        del sys.modules[module_name]
        # The import machinery may name the file by its absolute path.
        target = path.resolve()
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == target]
        where = f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""
        message = str(error).splitlines()[0] if str(error) else ""
        raise ModelFileError(
            f"model file {path} failed to import: {type(error).__name__}: {message}{where}"
        ) from None
    return _spec_of(module, str(path))
