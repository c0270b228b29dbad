"""A small synthetic study for the report tests: known sds, every kind of section, built in milliseconds.

Not a result: fixed numbers chosen so that the report's statements can be checked
exactly (e.g. σ_SVI / reference sd is 0.5 for every trusted parameter, 0.1 for the
untrusted ones).
"""

from __future__ import annotations

import numpy as np

from study.methods.reference import sd_mcse
from study.core.results import FAILED, OK, Fit, ModelResult
from study.core.results import StudyResult
from study.core.settings import Settings

TRUSTED_RATIO = 0.5  # σ_SVI / reference sd for every parameter of "gauss_ok"
UNTRUSTED_RATIO = 0.1  # ... and of "nuts_bad", whose NUTS reference did not mix


def _fit(model, method, names, mean, sd, rng, info, trajectory=None, chains=2, draws=200):
    z = mean + sd * rng.standard_normal((chains, draws, len(names)))
    if method == "reference" and info.get("kind") == "NUTS":  # as study.methods.reference stores it
        info = {**info, "sd_se": sd_mcse(z)}
    return Fit(model=model, method=method, param_names=names, mean=mean, sd=sd, draws=z, info=info,
               trajectory=trajectory)


def _trajectory(sd_end: np.ndarray, collapse: bool, steps: int = 400) -> dict:
    step = np.arange(0, steps, 4)
    t = step[:, None] / steps
    start = np.log(0.1) * np.ones_like(sd_end)
    if collapse:
        log_sigma = start - 6.0 * t
        loss = 50.0 + 5.0 * np.exp(-10 * step / steps)
    else:
        log_sigma = np.log(sd_end) + (start - np.log(sd_end)) * np.exp(-20 * t)
        loss = 60.0 + 5.0 * np.exp(-10 * step / steps) + np.cos(step)  # a deterministic wiggle for noise
    return {"step": step, "loss": loss, "log_sigma": log_sigma}


def _model(name, title, names, layout, diag_sd, svi_over_diag, ref_sd, reference_info, rng, description=""):
    d = len(names)
    mean = np.linspace(-1.0, 1.0, d)
    svi_sd = diag_sd * svi_over_diag
    svi_info = {"wall_seconds": 1.5, "steps": 400, "particles": 8, "final_elbo": -60.0, "final_elbo_se": 0.02,
                "sigma_drift": 0.004, "init": "MAP", "jit": True, "averaged_over_last_steps": 100}
    laplace_info = {"wall_seconds": 0.01, "map_grad_norm": 1e-12, "map_log_joint": -55.0, "newton_steps": 1,
                    "hessian_min_eigenvalue": float(1 / diag_sd.max() ** 2),
                    "hessian_max_eigenvalue": float(1 / diag_sd.min() ** 2),
                    "hessian_condition_number": float((diag_sd.max() / diag_sd.min()) ** 2)}
    fits = {
        "svi_meanfield": _fit(name, "svi_meanfield", names, mean, svi_sd, rng, svi_info,
                              _trajectory(svi_sd, collapse=False)),
        "expected_loss": _fit(name, "expected_loss", names, mean, svi_sd * 1e-4, rng,
                              {"wall_seconds": 1.0, "steps": 400, "median_log_sigma_slope_per_1000_steps": -2.5},
                              _trajectory(svi_sd, collapse=True)),
        "laplace_full": _fit(name, "laplace_full", names, mean, ref_sd, rng, laplace_info),
        "laplace_diag": _fit(name, "laplace_diag", names, mean, diag_sd, rng, laplace_info),
        "laplace_torch_full": Fit(name, "laplace_torch_full", names, status=FAILED,
                                  reason="RuntimeError: a failing fit is reported, not fatal"),
        "reference": _fit(name, "reference", names, mean, ref_sd, rng, reference_info),
    }
    return ModelResult(name=name, title=title, description=description, param_names=names, fits=fits,
                       reference_kind=reference_info["kind"], layout=layout, wall_seconds=3.0)


def synthetic_study(quick: bool = False) -> StudyResult:
    """Two fitted models (one with an untrusted NUTS reference, 20 parameters) and one failed model."""
    rng = np.random.default_rng(0)
    names_a = ["w[0]", "w[1]", "w[2]"]
    diag_a = np.array([0.2, 0.3, 0.4])
    ref_a = diag_a * np.array([1.0, 1.02, 0.98]) / TRUSTED_RATIO
    # For a Gaussian the law's prediction is the conditional over the marginal sd, 1/√Hᵢᵢ / √(H⁻¹)ᵢᵢ.
    law_a = {"predicted_shrink": (diag_a / ref_a).tolist(), "predicted_shrink_se": [0.0] * 3,
             "predicted_shrink_source": "exact covariance"}
    ok = _model(
        "gauss_ok", "Gaussian, correlated", names_a, [("w", 0, (3,))], diag_a, np.array([1.0, 1.02, 0.98]),
        ref_a, {"kind": "analytic", "wall_seconds": 0.001, **law_a}, rng,
        description="A conjugate toy model.\n\n```\nw ~ Normal(0, 1)^3\ny ~ Normal(X w, 1)\n```\n\nIts ``w`` is correlated.",
    )
    names_b = [f"beta[{i}]" for i in range(19)] + ["sigma (log)"]
    diag_b = np.linspace(0.05, 0.5, 20)
    nuts = {"kind": "NUTS", "wall_seconds": 12.0, "chains": 2, "warmup": 100, "draws_per_chain": 100,
            "divergences": 3, "preconditioner": "Laplace (MAP, H^-1)", "max_tree_depth": 10,
            "min_ess_bulk": 40.0, "max_r_hat": 1.3}
    bad = _model(
        "nuts_bad", "Network with a stuck sampler", names_b, [("beta", 0, (19,)), ("sigma (log)", 19, ())],
        diag_b, np.full(20, 3.0), diag_b * 3.0 / UNTRUSTED_RATIO, nuts, rng,
        description="A model whose NUTS reference failed its checks.",
    )
    broken = ModelResult(name="broken_model", title="A model that fails to load", description="",
                         param_names=[], fits={}, status=FAILED, reason="ValueError: data() raised")
    assert ok.status == OK
    settings = Settings.make(quick=quick, svi_steps=400, particles=8)
    return StudyResult(models=[ok, bad, broken], settings=settings,
                       methods=["svi_meanfield", "expected_loss", "laplace_full", "laplace_diag",
                                "laplace_torch_full", "reference"],
                       wall_seconds=20.0,
                       versions={"python": "3.11", "torch": "2", "pyro-ppl": "1.9", "arviz": "0.23",
                                 "laplace-torch": "0.3", "numpy": "2"},
                       command="python -m study.compare --models gauss_ok nuts_bad broken_model")


def large_study(d: int = 2000) -> StudyResult:
    """One model with ``d`` parameters (fixed numbers, as above): the report must stay bounded."""
    rng = np.random.default_rng(1)
    names = [f"w[{i}]" for i in range(d)]
    diag = np.exp(rng.uniform(np.log(0.05), np.log(0.5), d))
    model = _model("wide", "A model with many parameters", names, [("w", 0, (d,))], diag,
                   np.exp(rng.normal(0.0, 0.1, d)), diag / TRUSTED_RATIO, {"kind": "analytic", "wall_seconds": 0.01},
                   rng)
    settings = Settings.make(quick=True, svi_steps=400, particles=8)
    return StudyResult(models=[model], settings=settings,
                       methods=["svi_meanfield", "expected_loss", "laplace_full", "laplace_diag",
                                "laplace_torch_full", "reference"],
                       wall_seconds=20.0, versions={"python": "3.11"}, command="python -m study.compare --model wide.py")
