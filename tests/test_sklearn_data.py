"""The bundled data sets read without importing scikit-learn equal scikit-learn's loaders to the bit."""

import subprocess
import sys

import numpy as np
import pytest

from models import _sklearn_data

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.mark.parametrize("name, loader", [
    ("breast_cancer", "load_breast_cancer"), ("digits", "load_digits"), ("diabetes", "load_diabetes")])
def test_each_data_set_equals_scikit_learns_to_the_bit(name, loader):
    X, y = getattr(_sklearn_data, name)()
    X_ref, y_ref = getattr(sklearn_datasets, loader)(return_X_y=True)
    assert X.dtype == X_ref.dtype and y.dtype == y_ref.dtype
    assert X.shape == X_ref.shape and y.shape == y_ref.shape
    assert X.tobytes() == X_ref.tobytes() and y.tobytes() == y_ref.tobytes()


def test_reading_them_imports_neither_scikit_learn_nor_scipy():
    code = ("import sys; from models import _sklearn_data as s; s.breast_cancer(); s.digits(); s.diabetes(); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_the_files_they_fall_back_to_scikit_learns_loaders(monkeypatch):
    monkeypatch.setattr(_sklearn_data, "_data_file", lambda name: None)
    X, y = _sklearn_data.diabetes()
    X_ref, y_ref = sklearn_datasets.load_diabetes(return_X_y=True)
    assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
