"""Read posteriordb posteriors: the copy shipped with the project, or a user's clone.

The project ships, under ``models/posteriordb/``, the posterior records, the data
sets and the Stan programs of posteriordb (stan-dev/posteriordb, BSD 3-clause
licence in ``models/posteriordb/LICENCE.md``), in posteriordb's own layout, and,
instead of the 10,000 gold draws of each posterior (24 MB), a summary of them in
the study's flat unconstrained coordinates (``reference_summaries/``, written by
``models/posteriordb/regenerate.py``). So the built-in posteriordb models run on
a fresh clone with no set-up.

A full clone is read instead when ``--posteriordb PATH`` or the environment
variable ``POSTERIORDB_PATH`` names one: then ``load_data`` and
``load_reference_draws`` read any posterior of that clone, gold draws included.
The shipped reference summaries are read from the project in either case, so
the study's numbers do not depend on whether a clone is configured.

Layout used (under ``<root>/posterior_database/``)::

    posteriors/<posterior>.json                          model_name, data_name
    data/data/<data_name>.json.zip                       the data, one JSON
    models/stan/<model_name>.stan                        the reference implementation
    reference_posteriors/draws/draws/<posterior>.json.zip
        gold draws: a list of chains, each {"beta[1]": [...], "sigma": [...]}
        (full clones only)
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "POSTERIORDB_PATH"
SHIPPED = Path(__file__).resolve().parent / "posteriordb"
"""The shipped copy: ``posterior_database/``, ``reference_summaries/``, ``LICENCE.md``."""
SUMMARIES = SHIPPED / "reference_summaries"


class PosteriorDBUnavailable(RuntimeError):
    """The posteriordb file a model needs is neither shipped nor in the configured clone."""


def configured_root() -> Path | None:
    """The ``posterior_database`` folder of the clone named by ``POSTERIORDB_PATH``, or None.

    Raises
    ------
    PosteriorDBUnavailable
        When the variable names a folder without a posteriordb layout.
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser()
    for candidate in (root / "posterior_database", root):
        if (candidate / "posteriors").is_dir():
            return candidate
    raise PosteriorDBUnavailable(
        f"{root} is not a posteriordb database (expected posterior_database/posteriors/ inside)"
    )


def database_root() -> Path:
    """The ``posterior_database`` folder read: the configured clone, else the shipped copy.

    Raises
    ------
    PosteriorDBUnavailable
        When ``POSTERIORDB_PATH`` is set but does not hold a posteriordb layout.
    """
    return configured_root() or SHIPPED / "posterior_database"


def _hint(path: Path) -> str:
    if configured_root() is None:
        return f" (not shipped with the project; point --posteriordb PATH or {ENV_VAR} at a posteriordb clone)"
    return f" ({path})"


def _read_zipped_json(path: Path):
    if not path.is_file():
        raise PosteriorDBUnavailable(f"posteriordb file missing: {path.name}{_hint(path)}")
    with zipfile.ZipFile(path) as archive:
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def posterior_info(posterior: str) -> dict:
    """The posterior's JSON record (names its model and data set)."""
    path = database_root() / "posteriors" / f"{posterior}.json"
    if not path.is_file():
        raise PosteriorDBUnavailable(f"posterior {posterior!r} not in the database{_hint(path)}")
    return json.loads(path.read_text())


def load_data(posterior: str) -> dict:
    """The posterior's data set as a dict of plain Python values (lists, numbers)."""
    data_name = posterior_info(posterior)["data_name"]
    return _read_zipped_json(database_root() / "data" / "data" / f"{data_name}.json.zip")


def stan_code(posterior: str) -> str:
    """The Stan program of the posterior (posteriordb's reference implementation)."""
    model_name = posterior_info(posterior)["model_name"]
    path = database_root() / "models" / "stan" / f"{model_name}.stan"
    if not path.is_file():
        raise PosteriorDBUnavailable(f"Stan program missing: {path.name}{_hint(path)}")
    return path.read_text()


def load_reference_draws(posterior: str) -> dict[str, np.ndarray]:
    """Gold reference draws, chains concatenated (needs a full clone: draws are not shipped).

    Returns
    -------
    dict[str, np.ndarray]
        Stan parameter name (``"beta[1]"``, 1-based) -> array of shape ``(chains * draws,)``.
    """
    return {name: chains.reshape(-1) for name, chains in load_reference_chains(posterior).items()}


def load_reference_chains(posterior: str) -> dict[str, np.ndarray]:
    """Gold reference draws by chain: Stan parameter name -> array ``(chains, draws)``."""
    chains = _read_zipped_json(
        database_root() / "reference_posteriors" / "draws" / "draws" / f"{posterior}.json.zip"
    )
    names = chains[0].keys()
    return {name: np.stack([np.asarray(c[name], dtype=np.float64) for c in chains]) for name in names}


def stack_indexed(draws: dict[str, np.ndarray], name: str, size: int) -> np.ndarray:
    """Stack Stan's ``name[1] .. name[size]`` into an array of shape ``(S, size)``."""
    return np.stack([draws[f"{name}[{i}]"] for i in range(1, size + 1)], axis=-1)


def indexed_reference_draws(posterior: str, sizes: dict[str, int]) -> dict:
    """Gold draws of vector sites, ``name -> (S, size)`` tensors, for ``sizes = {name: size}``."""
    import torch

    draws = load_reference_draws(posterior)
    return {name: torch.tensor(stack_indexed(draws, name, size)) for name, size in sizes.items()}


@dataclass(frozen=True)
class ReferenceSummary:
    """posteriordb's gold draws summarised in the study's flat unconstrained coordinates.

    Attributes
    ----------
    posterior : str
    param_names : list[str]
        Flat element names (``"sigma (log)"``), length ``d``.
    mean, sd : np.ndarray
        Shape ``(d,)``, over all gold draws.
    mcse_mean, mcse_sd : np.ndarray
        Shape ``(d,)``: ArviZ's Monte Carlo standard errors of the mean and the sd
        (effective-sample-size based, Vehtari et al. 2021), from the chains.
    n_draws, n_chains : int
        Gold draws summarised, and their chains.
    thinned : np.ndarray
        Shape ``(chains, draws_per_chain, d)``: every k-th gold draw of each chain,
        for figures and ``InferenceData``; the moments above use every draw.
    """

    posterior: str
    param_names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    mcse_mean: np.ndarray
    mcse_sd: np.ndarray
    n_draws: int
    n_chains: int
    thinned: np.ndarray


def summary_name(spec) -> str:
    """The shipped summary a ``ModelSpec`` reads: ``reference_summary``, else its ``posteriordb`` ("" if none)."""
    return spec.reference_summary or spec.posteriordb


def summary_paths(posterior: str) -> tuple[Path, Path]:
    """The shipped summary's JSON (moments) and ``.npz`` (thinned draws) files."""
    return SUMMARIES / f"{posterior}.json", SUMMARIES / f"{posterior}.npz"


def has_reference_summary(posterior: str) -> bool:
    return all(p.is_file() for p in summary_paths(posterior))


def load_reference_summary(posterior: str) -> ReferenceSummary:
    """The shipped summary of the posterior's gold draws (no pickle: JSON and a plain ``.npz``).

    Raises
    ------
    PosteriorDBUnavailable
        When no summary is shipped for ``posterior`` (regenerate with
        ``models/posteriordb/regenerate.py``).
    """
    json_path, npz_path = summary_paths(posterior)
    if not (json_path.is_file() and npz_path.is_file()):
        raise PosteriorDBUnavailable(
            f"no shipped reference summary for {posterior!r} "
            "(write it with python models/posteriordb/regenerate.py --posteriordb PATH)"
        )
    record = json.loads(json_path.read_text())
    with np.load(npz_path, allow_pickle=False) as archive:
        thinned = np.asarray(archive["thinned"], dtype=np.float64)
    return ReferenceSummary(
        posterior=record["posterior"],
        param_names=list(record["param_names"]),
        mean=np.asarray(record["mean"], dtype=np.float64),
        sd=np.asarray(record["sd"], dtype=np.float64),
        mcse_mean=np.asarray(record["mcse_mean"], dtype=np.float64),
        mcse_sd=np.asarray(record["mcse_sd"], dtype=np.float64),
        n_draws=int(record["n_draws"]),
        n_chains=int(record["n_chains"]),
        thinned=thinned,
    )
