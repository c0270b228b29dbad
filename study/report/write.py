"""Write a study's outputs: every file appears whole or not at all.

Each file is written to a temporary name in its folder and renamed into place
(``study.core.files.atomic_path``; ``os.replace`` is atomic on POSIX), so an
interrupted run never leaves a half-written ``report.html``, ``comparison.csv``,
``results.json``, figure or ArviZ file. The report is written last.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from study.core.files import atomic_path, inside, write_text
from study.core.results import StudyResult
from study.report.build import make_all, prefill, render
from study.report.figure_cache import FigureCache, fit_inputs, report_code_hash
from study.report.idata import to_inference_data
from study.report.summary import study_answer
from study.report.table import comparison_rows, to_csv


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def results_document(study: StudyResult, answer: dict) -> dict:
    models = {}
    for m in study.models:
        models[m.name] = {
            "title": m.title,
            "status": m.status,
            "reason": m.reason,
            "notes": m.notes,
            "reference_kind": m.reference_kind,
            "parameters": m.param_names,
            "wall_seconds": m.wall_seconds,
            "scale_children": m.scale_children,
            "fits": {
                name: {
                    "status": fit.status,
                    "reason": fit.reason,
                    "info": fit.info,
                    "mean": fit.mean,
                    "sd": fit.sd,
                }
                for name, fit in m.fits.items()
            },
        }
    return _jsonable(
        {
            "command": study.command,
            "settings": study.settings.as_dict(),
            "versions": study.versions,
            "methods": study.methods,
            "wall_seconds": study.wall_seconds,
            "answer": answer,
            "models": models,
        }
    )


IDATA_MANIFEST = ".idata-cache.json"


def read_idata_manifest(out_dir: Path) -> dict:
    """``idata/.idata-cache.json``: which ArviZ file was written from which inputs (empty when absent or unreadable)."""
    try:
        stored = json.loads((Path(out_dir) / "idata" / IDATA_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def write_idata(study: StudyResult, out_dir: Path, drawn: dict | None = None) -> list[Path]:
    """``idata/<model>/<method>.nc`` for every fit with draws.

    A file is the same bytes for the same draws (``to_inference_data``), so a warm run
    leaves one alone when ``idata/.idata-cache.json`` says it was written from the same
    draws by the same report code (``study.report.figure_cache.fit_inputs``) and it is
    still there; ``drawn`` adds the manifest entries of the files the fit workers wrote
    (``draw_model_section``).
    """
    folder = Path(out_dir) / "idata"
    stored = read_idata_manifest(out_dir) | (drawn or {})
    code = report_code_hash()
    written: dict[str, str] = {}
    paths = []
    for model in study.models:
        model_written, model_paths = write_model_idata(model, out_dir, stored, code)
        written.update(model_written)
        paths.extend(model_paths)
    if paths:
        write_text(folder / IDATA_MANIFEST, json.dumps(written, indent=0, sort_keys=True) + "\n")
    return paths


def write_model_idata(model, out_dir: Path, stored: dict, code: str | None = None) -> tuple[dict, list[Path]]:
    """One model's ArviZ files (``write_idata``): written unless ``stored`` names them with the
    same key and they exist. Returns the manifest entries ``{name: key}`` and the paths."""
    folder = Path(out_dir) / "idata"
    code = report_code_hash() if code is None else code
    written: dict[str, str] = {}
    paths = []
    for fit in model.fits.values():
        if not fit.ok or fit.draws is None:
            continue
        path = inside(out_dir, "idata", model.name, f"{fit.method}.nc")
        name = path.relative_to(folder).as_posix()
        key = hashlib.sha256(f"{fit_inputs(model, fit)}\0{code}".encode()).hexdigest()
        if stored.get(name) != key or not path.is_file():
            with atomic_path(path) as tmp:
                to_inference_data(model, fit).to_netcdf(str(tmp))
        written[name] = key
        paths.append(path)
    return written, paths


def draw_model_section(model, report_dir: Path) -> tuple[dict, dict]:
    """The model's figures, analysis blocks and az.summary tables drawn into ``report_dir/figures``
    and its ArviZ files written to ``report_dir/idata`` now; their figure-cache and
    ArviZ-manifest entries (``study.report.build.model_artifacts``, ``write_model_idata``).

    Run in the fit worker that fitted the model (``study.run.runner.run_after``): a model's
    section depends on that model alone, so it is drawn while the other workers still fit,
    in a process that has the libraries loaded, instead of in a second pool after the last
    fit (starting one cost 6.5-7.9 s of imports here) and in the main process (the ArviZ
    files). ``write_all`` then reads the entries as a warm run reads its cache: the same
    files and bytes. NumPy's BLAS is held to one thread, one core per worker as for the fits.
    """
    from threadpoolctl import threadpool_limits

    from study.report import build
    from study.report.summary import model_answer

    report_dir = Path(report_dir)
    with threadpool_limits(limits=1):
        idata, _ = write_model_idata(model, report_dir, read_idata_manifest(report_dir))
        return build.model_artifacts(model, model_answer(model), report_dir / "figures", reuse=True), idata


def write_all(study: StudyResult, out_dir: Path, workers: int = 1) -> dict[str, Path]:
    """Write the CSV, the JSON, the ArviZ files, the figures and the report into ``out_dir``.

    ``workers`` > 1 draws the models' figures in that many processes (``build.prefill``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    answer = study_answer(study)
    write_text(out_dir / "comparison.csv", to_csv(comparison_rows(study)))
    write_text(out_dir / "results.json", json.dumps(results_document(study, answer), indent=1) + "\n")
    write_idata(study, out_dir, study.drawn_idata)
    cache = FigureCache(out_dir / "figures")
    cache.stored.update(study.drawn)  # sections the fit workers drew as their models finished
    prefill(study, answer, out_dir / "figures", cache, workers)
    model_figures, answer_figures = make_all(study, answer, out_dir / "figures", cache=cache)
    markdown, page = render(study, answer, out_dir, model_figures, answer_figures, cache=cache)
    cache.save()
    write_text(out_dir / "report.md", markdown)
    write_text(out_dir / "report.html", page)
    return {
        "csv": out_dir / "comparison.csv",
        "json": out_dir / "results.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
