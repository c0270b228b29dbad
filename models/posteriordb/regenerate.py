"""Write the shipped posteriordb files from a posteriordb clone.

Usage::

    python models/posteriordb/regenerate.py --posteriordb PATH [--posterior NAME ...] [--copy all]

For every built-in model that names a posteriordb posterior (``ModelSpec.posteriordb``)
it writes ``reference_summaries/<posterior>.json`` and ``.npz`` (``<reference_summary>``
for a reparameterisation of a posterior, ``ModelSpec.reference_summary``): the gold draws
(``reference_draws``, read from the clone) mapped to the study's flat unconstrained
coordinates (``study.core.joint.FlatJoint.unconstrain``), then per element the mean, the sd
(``ddof=1``), ArviZ's Monte Carlo standard errors of both (``az.mcse``, methods
``"mean"`` and ``"sd"``; Vehtari et al. 2021, from the chains) and a thinned sample
(every k-th draw of each chain, about 1000 in all) for figures and ``InferenceData``.

It also copies into ``posterior_database/`` (posteriordb's own layout) the record,
data set and Stan program of those posteriors (``--copy all``: of every posterior
in the clone), and posteriordb's ``LICENCE.md``. Everything it writes is
deterministic: the same clone gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the project root, when run as a script

THINNED_TOTAL = 1000  # draws kept for figures and InferenceData, over all chains


def summarise(spec, data=None) -> dict:
    """The summary of ``spec``'s gold draws in flat coordinates (reads the configured clone).

    Returns
    -------
    dict
        ``posterior, param_names, mean, sd, mcse_mean, mcse_sd, n_draws, n_chains``
        (lists of floats, JSON-ready) and ``thinned``: array ``(chains, k, d)``.
    """
    import arviz as az
    import torch

    from models._posteriordb import load_reference_chains, summary_name
    from study.core.joint import FlatJoint

    torch.set_default_dtype(torch.float64)
    data = spec.data() if data is None else data
    joint = FlatJoint(spec.model, data, spec.init_loc_fn)
    values = spec.reference_draws(data)
    with torch.no_grad():
        z = joint.unconstrain(values).numpy()
    n_chains = next(iter(load_reference_chains(spec.posteriordb).values())).shape[0]
    chains = z.reshape(n_chains, -1, z.shape[-1])  # reference_draws concatenates the chains in order
    dataset = az.convert_to_dataset({"z": chains}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcse_mean = np.asarray(az.mcse(dataset, method="mean")["z"].values, dtype=float)
        mcse_sd = np.asarray(az.mcse(dataset, method="sd")["z"].values, dtype=float)
    step = max(1, (chains.shape[0] * chains.shape[1]) // THINNED_TOTAL)
    return {
        "posterior": summary_name(spec),
        "param_names": list(joint.param_names),
        "mean": z.mean(0).tolist(),
        "sd": z.std(0, ddof=1).tolist(),
        "mcse_mean": mcse_mean.tolist(),
        "mcse_sd": mcse_sd.tolist(),
        "n_draws": int(z.shape[0]),
        "n_chains": int(n_chains),
        "thinned": np.ascontiguousarray(chains[:, ::step, :]),
    }


def write_summary(summary: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in summary.items() if k != "thinned"}
    record["thinned_shape"] = list(summary["thinned"].shape)
    (folder / f"{summary['posterior']}.json").write_text(json.dumps(record, indent=1) + "\n")
    with open(folder / f"{summary['posterior']}.npz", "wb") as handle:
        np.savez_compressed(handle, thinned=summary["thinned"])


def copy_posterior(source: Path, target: Path, posterior: str) -> None:
    """Copy the record, data set and Stan program of one posterior, in posteriordb's layout."""
    record_path = source / "posteriors" / f"{posterior}.json"
    record = json.loads(record_path.read_text())
    pairs = [
        (record_path, target / "posteriors" / record_path.name),
        (source / "data" / "data" / f"{record['data_name']}.json.zip",
         target / "data" / "data" / f"{record['data_name']}.json.zip"),
        (source / "models" / "stan" / f"{record['model_name']}.stan",
         target / "models" / "stan" / f"{record['model_name']}.stan"),
    ]
    for src, dst in pairs:
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriordb", type=Path, required=True, help="a posteriordb clone")
    parser.add_argument("--posterior", nargs="+", metavar="NAME",
                        help="only these posteriors (default: every built-in posteriordb model)")
    parser.add_argument("--copy", choices=("builtin", "all"), default="builtin",
                        help="copy the data of the built-in models' posteriors (default) or of every posterior")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: this one)")
    args = parser.parse_args(argv)

    os.environ["POSTERIORDB_PATH"] = str(args.posteriordb)
    from models import builtin_models
    from models._posteriordb import database_root, summary_name

    source = database_root()
    specs = [s for s in builtin_models().values() if s.posteriordb]
    if args.posterior:
        specs = [s for s in specs if summary_name(s) in set(args.posterior)]
    names = sorted(p.stem for p in (source / "posteriors").glob("*.json")) if args.copy == "all" else \
        sorted({s.posteriordb for s in specs})
    for name in names:
        copy_posterior(source, args.out / "posterior_database", name)
    licence = args.posteriordb / "LICENCE.md"
    if licence.is_file():
        shutil.copyfile(licence, args.out / "LICENCE.md")
    for spec in specs:
        write_summary(summarise(spec), args.out / "reference_summaries")
        print(f"{summary_name(spec)}: summary written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
