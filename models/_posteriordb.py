"""Read a posteriordb database (stan-dev/posteriordb layout) by path.

The database is never copied into the project: point the study at a clone with
``--posteriordb PATH`` or the environment variable ``POSTERIORDB_PATH``.

Layout used (all under ``<root>/posterior_database/``)::

    posteriors/<posterior>.json                          model_name, data_name
    data/data/<data_name>.json.zip                       the data, one JSON
    reference_posteriors/draws/draws/<posterior>.json.zip
        gold draws: a list of chains, each {"beta[1]": [...], "sigma": [...]}
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

ENV_VAR = "POSTERIORDB_PATH"


class PosteriorDBUnavailable(RuntimeError):
    """No usable posteriordb database is configured."""


def database_root() -> Path:
    """The ``posterior_database`` folder of the configured database.

    Raises
    ------
    PosteriorDBUnavailable
        When ``POSTERIORDB_PATH`` is unset or does not hold a posteriordb layout.
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        raise PosteriorDBUnavailable(
            f"no posteriordb database given (use --posteriordb PATH or set {ENV_VAR})"
        )
    root = Path(raw).expanduser()
    for candidate in (root / "posterior_database", root):
        if (candidate / "posteriors").is_dir():
            return candidate
    raise PosteriorDBUnavailable(
        f"{root} is not a posteriordb database (expected posterior_database/posteriors/ inside)"
    )


def _read_zipped_json(path: Path):
    if not path.is_file():
        raise PosteriorDBUnavailable(f"posteriordb file missing: {path}")
    with zipfile.ZipFile(path) as archive:
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def posterior_info(posterior: str) -> dict:
    """The posterior's JSON record (names its model and data set)."""
    path = database_root() / "posteriors" / f"{posterior}.json"
    if not path.is_file():
        raise PosteriorDBUnavailable(f"posterior {posterior!r} not in the database ({path})")
    return json.loads(path.read_text())


def load_data(posterior: str) -> dict:
    """The posterior's data set as a dict of plain Python values."""
    data_name = posterior_info(posterior)["data_name"]
    return _read_zipped_json(database_root() / "data" / "data" / f"{data_name}.json.zip")


def load_reference_draws(posterior: str) -> dict[str, np.ndarray]:
    """Gold reference draws, chains concatenated.

    Returns
    -------
    dict[str, np.ndarray]
        Stan parameter name (``"beta[1]"``, 1-based) -> array of shape ``(chains * draws,)``.
    """
    chains = _read_zipped_json(
        database_root() / "reference_posteriors" / "draws" / "draws" / f"{posterior}.json.zip"
    )
    names = chains[0].keys()
    return {name: np.concatenate([np.asarray(c[name], dtype=np.float64) for c in chains]) for name in names}


def stack_indexed(draws: dict[str, np.ndarray], name: str, size: int) -> np.ndarray:
    """Stack Stan's ``name[1] .. name[size]`` into an array of shape ``(S, size)``."""
    return np.stack([draws[f"{name}[{i}]"] for i in range(1, size + 1)], axis=-1)
