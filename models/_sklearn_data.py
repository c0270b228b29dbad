"""scikit-learn's bundled data sets, read from the files scikit-learn installs, without importing it.

Importing scikit-learn imports SciPy: about 1.1 s of every process that reads one of these
models (a warm rerun of the study, each fit worker), which needs nothing else of either.
``breast_cancer``, ``digits`` and ``diabetes`` read the same files in the same way as
``sklearn.datasets.load_breast_cancer``, ``load_digits`` and ``load_diabetes`` (the
diabetes features scaled as ``sklearn.preprocessing.scale`` scales them, then divided by
sqrt(n)); ``tests/test_sklearn_data.py`` checks that the arrays equal scikit-learn's to the
bit. Where scikit-learn's files are not where it keeps them (``sklearn/datasets/data``), they
call scikit-learn's loaders instead.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np


def _data_file(name: str) -> Path | None:
    """``sklearn/datasets/data/<name>`` of the installed scikit-learn, found without importing it."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package: located, not executed
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def _gzip_csv(path: Path, **kwargs) -> np.ndarray:
    """As ``sklearn.datasets._base.load_gzip_compressed_csv_data``: ``np.loadtxt`` of the text."""
    with gzip.open(path, mode="rt", encoding="utf-8") as handle:
        return np.loadtxt(handle, **kwargs)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """``load_breast_cancer(return_X_y=True)``: ``X`` (569, 30), ``y`` (569,) in {0, 1}."""
    path = _data_file("breast_cancer.csv")
    if path is None:
        from sklearn.datasets import load_breast_cancer

        return load_breast_cancer(return_X_y=True)
    with open(path, encoding="utf-8") as handle:  # as sklearn.datasets._base.load_csv_data
        rows = csv.reader(handle)
        header = next(rows)
        n, d = int(header[0]), int(header[1])
        X, y = np.empty((n, d)), np.empty((n,), dtype=int)
        for i, row in enumerate(rows):
            X[i] = np.asarray(row[:-1], dtype=np.float64)
            y[i] = np.asarray(row[-1], dtype=int)
    return X, y


def digits() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits(return_X_y=True)``: ``X`` (1797, 64) pixel counts 0-16, ``y`` (1797,) in 0-9."""
    path = _data_file("digits.csv.gz")
    if path is None:
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    data = _gzip_csv(path, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    """``load_diabetes(return_X_y=True)``: ``X`` (442, 10) scaled as scikit-learn scales it, ``y`` (442,)."""
    data_path, target_path = _data_file("diabetes_data_raw.csv.gz"), _data_file("diabetes_target.csv.gz")
    if data_path is None or target_path is None:
        from sklearn.datasets import load_diabetes

        return load_diabetes(return_X_y=True)
    X, y = _gzip_csv(data_path), _gzip_csv(target_path)
    # sklearn.preprocessing.scale(X) for finite dense data, step by step, then / sqrt(n).
    mean, scale = np.nanmean(X, 0), np.nanstd(X, 0)
    X -= mean
    mean_1 = np.nanmean(X, 0)
    if not np.allclose(mean_1, 0):
        X -= mean_1
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    X /= scale
    mean_2 = np.nanmean(X, 0)
    if not np.allclose(mean_2, 0):
        X -= mean_2
    X /= X.shape[0] ** 0.5
    return X, y
