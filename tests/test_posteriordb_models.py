"""Every built-in posteriordb model against posteriordb's gold draws.

Parametrized over the built-in models that name a posteriordb posterior
(``ModelSpec.posteriordb``), discovered, never listed by hand. The gold draws come
from a posteriordb clone (``POSTERIORDB_PATH``): these tests skip without one and
fail when ``REQUIRE_POSTERIORDB=1``.

Fast: the shipped reference summaries equal a fresh summary of the gold draws; the
log density is finite at gold draws; constrained values survive the round trip
through the study's flat coordinates. Slow: NUTS on the Pyro model reproduces every
element's mean and sd within a Bonferroni-corrected multiple of the Monte Carlo SE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import time
import warnings

import arviz as az
import numpy as np
import pytest
import torch
from scipy.stats import norm

from models import builtin_models
from models._posteriordb import load_reference_draws, load_reference_summary, summary_name
from models.posteriordb.regenerate import summarise
from study.methods.reference import fit_nuts

from conftest import make_run, needs_posteriordb

POSTERIORDB_MODELS = sorted(name for name, spec in builtin_models().items() if spec.posteriordb)
N_CHECK_DRAWS = 20
USER_MODEL = Path(__file__).resolve().parent / "fixture_models" / "posteriordb_user_model.py"


def _every_kth(values: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    n = next(iter(values.values())).shape[0]
    index = torch.linspace(0, n - 1, count).round().long()
    return {k: v[index] for k, v in values.items()}


def test_every_posteriordb_model_has_a_shipped_summary():
    assert POSTERIORDB_MODELS, "no built-in model names a posteriordb posterior"
    for name in POSTERIORDB_MODELS:
        spec = builtin_models()[name]
        summary = load_reference_summary(summary_name(spec))  # raises when not shipped
        run = make_run(name)
        assert summary.param_names == run.joint.param_names, name
        assert summary.thinned.shape[-1] == run.joint.dim and summary.n_draws >= 1000


@needs_posteriordb
@pytest.mark.parametrize("name", POSTERIORDB_MODELS)
def test_shipped_summary_is_the_summary_of_the_gold_draws(name):
    spec = builtin_models()[name]
    shipped = load_reference_summary(summary_name(spec))
    fresh = summarise(spec)
    assert shipped.param_names == fresh["param_names"]
    assert (shipped.n_draws, shipped.n_chains) == (fresh["n_draws"], fresh["n_chains"])
    # Same computation on the same draws. On the machine that wrote the summaries it is equal
    # to the bit; on a CPU whose kernels round differently the unconstraining transforms differ
    # by an ulp, and gp_pois_regr's ill-conditioned kernel solve amplifies that (measured on an
    # AVX-512 machine: its draws 2.3e-6 sd apart, means and sds 2e-7 of their Monte Carlo SE
    # apart, the MCSEs 6e-9 relative; every other posterior within 1e-15 relative). The bounds
    # sit about 50x above that (1e-5 MCSE for means and sds, 1e-4 sd for the draws), far
    # below any Monte Carlo difference: a different draw, element or transform fails them.
    for key, se in (("mean", shipped.mcse_mean), ("sd", shipped.mcse_sd)):
        np.testing.assert_array_less(np.abs(getattr(shipped, key) - np.asarray(fresh[key])), 1e-5 * se,
                                     err_msg=key)
    for key in ("mcse_mean", "mcse_sd"):
        np.testing.assert_allclose(getattr(shipped, key), fresh[key], rtol=1e-7, err_msg=key)
    gap = np.abs(shipped.thinned - fresh["thinned"])
    np.testing.assert_array_less(gap, np.broadcast_to(1e-4 * shipped.sd, gap.shape), err_msg="thinned")


@needs_posteriordb
@pytest.mark.parametrize("name", POSTERIORDB_MODELS)
def test_log_density_is_finite_at_gold_draws(name):
    run = make_run(name)
    values = _every_kth(run.spec.reference_draws(run.data), N_CHECK_DRAWS)
    with torch.no_grad():
        z = run.joint.unconstrain(values)
        log_density = run.joint.log_joint_batched(z)
    assert log_density.shape == (N_CHECK_DRAWS,)
    assert torch.isfinite(log_density).all(), log_density


def _numpy_unconstrained_first(site, x: np.ndarray, size: int) -> np.ndarray | None:
    """The flat value of a site's first element by numpy from its constrained draws ``x``.

    ``x`` holds the first element's draws; ``size`` is the site's length (for the simplex).
    None where the support's first coordinate has no one-line formula.
    """
    from pyro.distributions import constraints

    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    kind = type(support).__name__
    if support is constraints.real or kind == "_OrderedVector":  # ordered: the first is itself
        return x
    if kind == "_PositiveOrderedVector":  # Pyro: exp of an ordered vector
        return np.log(x)
    if isinstance(support, (constraints.greater_than, constraints.greater_than_eq)):  # positive, nonnegative
        return np.log(x - float(support.lower_bound))
    if isinstance(support, constraints.interval):
        low, high = float(support.lower_bound), float(support.upper_bound)
        u = (x - low) / (high - low)
        return np.log(u) - np.log1p(-u)
    if support is constraints.simplex:  # stick-breaking: logit of the first share, shifted by log(K - 1)
        return np.log(x) - np.log1p(-x) + np.log(size - 1)
    return None


@needs_posteriordb
@pytest.mark.parametrize("name", POSTERIORDB_MODELS)
def test_gold_draws_round_trip_through_flat_coordinates(name):
    import pyro.poutine as poutine

    run = make_run(name)
    values = _every_kth(run.spec.reference_draws(run.data), N_CHECK_DRAWS)
    with torch.no_grad():
        z = run.joint.unconstrain(values)
        back = run.joint.constrain(z)
    assert z.shape == (N_CHECK_DRAWS, run.joint.dim)
    for site in run.joint.sites:
        torch.testing.assert_close(back[site.name], values[site.name].to(back[site.name].dtype),
                                   rtol=1e-9, atol=1e-10, msg=lambda m: f"{site.name}: {m}")

    # One element per site, where the support has a closed-form map, by numpy from the
    # raw gold draw of the Stan parameter of the same name (name[1] for a vector).
    raw = load_reference_draws(run.spec.posteriordb)
    if run.spec.reference_summary:  # a reparameterisation: its draws are the gold draws mapped
        own = {k: v.numpy() for k, v in run.spec.reference_draws(run.data).items()}
        raw = {(k if v.ndim == 1 else f"{k}[1]"): (v if v.ndim == 1 else v.reshape(len(v), -1)[:, 0])
               for k, v in own.items()}
    index = np.linspace(0, len(next(iter(raw.values()))) - 1, N_CHECK_DRAWS).round().astype(int)
    first = {k: v[0] for k, v in values.items()}  # conditioned: a flat prior cannot be sampled
    trace = poutine.trace(poutine.condition(run.spec.model, data=first)).get_trace(**run.data)
    checked = []
    for site in run.joint.sites:
        key = site.name if len(site.shape) == 0 else f"{site.name}[1]"
        if key not in raw:
            continue
        expected = _numpy_unconstrained_first(trace.nodes[site.name], raw[key][index], site.shape.numel())
        if expected is None:
            continue
        np.testing.assert_allclose(z[:, site.offset].numpy(), expected, rtol=1e-9, atol=1e-10, err_msg=key)
        checked.append(key)
    assert checked, "no site could be checked against numpy"


# ---------------------------------------------------------------------------------------------
# Slow: NUTS on the Pyro model against the gold draws.

NUTS_CHAINS = int(os.environ.get("PDB_NUTS_CHAINS", 4))
NUTS_WARMUP = int(os.environ.get("PDB_NUTS_WARMUP", 400))
NUTS_DRAWS = int(os.environ.get("PDB_NUTS_DRAWS", 400))
FAMILY_FALSE_ALARM = 0.01


def _element_count() -> int:
    return sum(len(load_reference_summary(summary_name(builtin_models()[n])).param_names) for n in POSTERIORDB_MODELS)


def _z_threshold() -> float:
    """k such that all |z| < k with probability 1 - FAMILY_FALSE_ALARM under a right translation.

    Bonferroni over every test of the suite: a mean and an sd per element of every
    posteriordb model (two-sided), so the chance that a correct translation fails
    somewhere is at most 1% (about 4.3 SE for 300 elements).
    """
    tests = 2 * _element_count()
    return float(norm.isf(FAMILY_FALSE_ALARM / (2 * tests)))


def _mcse(draws: np.ndarray, method: str) -> np.ndarray:
    dataset = az.convert_to_dataset({"z": draws}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(az.mcse(dataset, method=method)["z"].values, dtype=float)


def _sd_mcse_tail_aware(draws: np.ndarray, gold_thinned: np.ndarray) -> np.ndarray:
    """MCSE of each element's sd from NUTS draws ``(chains, draws, d)``, tail-aware.

    ArviZ's ``mcse(method="sd")`` is (sd / 2) * sqrt((kurtosis - 1) / ESS) with the
    kurtosis and the ESS of the squared deviations taken from the draws themselves. On a
    heavy-tailed element a short chain rarely visits the tail, so its own kurtosis, and with
    it the SE, comes out too small exactly when its sd does (one_comp_mm_elim_abs's
    log V_m: gold excess kurtosis 12, skew 2.2; 4 x 400 NUTS draws put its sd at 0.83 of
    the gold's with an ArviZ SE that made that z = -5.6). Under the null hypothesis that
    the translation is right, NUTS samples the gold posterior, so the gold draws' kurtosis
    (from the shipped 1,000 thinned draws) is the better estimate of the same quantity; the
    larger of the two is used, so no SE is ever smaller than ArviZ's.
    """
    flat = draws.reshape(-1, draws.shape[-1])
    squares = (draws - flat.mean(0)) ** 2
    dataset = az.convert_to_dataset({"z": squares}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess_squares = np.asarray(az.ess(dataset, method="mean")["z"].values, dtype=float)
    variance = squares.reshape(-1, draws.shape[-1]).mean(0)
    own_kurtosis = (squares.reshape(-1, draws.shape[-1]) ** 2).mean(0) / variance**2
    centred = gold_thinned - gold_thinned.mean(0)
    gold_kurtosis = (centred**4).mean(0) / (centred**2).mean(0) ** 2
    kurtosis = np.maximum(own_kurtosis, gold_kurtosis)
    return np.sqrt(variance * (kurtosis - 1.0) / ess_squares / 4.0)


@pytest.fixture(scope="session")
def z_table_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("posteriordb_z_scores")


@pytest.mark.slow
@needs_posteriordb
@pytest.mark.parametrize("name", POSTERIORDB_MODELS)
def test_nuts_on_the_pyro_model_matches_the_gold_draws(name, z_table_dir):
    run = make_run(name, nuts_chains=NUTS_CHAINS, nuts_warmup=NUTS_WARMUP, nuts_draws=NUTS_DRAWS)
    gold = load_reference_summary(summary_name(run.spec))
    start = time.perf_counter()
    nuts = fit_nuts(run)  # the study's own NUTS on the flat joint (Laplace-preconditioned where it can)
    seconds = time.perf_counter() - start
    draws = np.asarray(nuts.draws)
    # Combined Monte Carlo SE: NUTS and the gold draws err independently.
    se_mean = np.sqrt(_mcse(draws, "mean") ** 2 + gold.mcse_mean**2)
    tail_se = _sd_mcse_tail_aware(draws, gold.thinned.reshape(-1, draws.shape[-1]))
    se_sd = np.sqrt(np.maximum(np.asarray(nuts.info["sd_se"]), tail_se) ** 2 + gold.mcse_sd**2)
    z_mean = (nuts.mean - gold.mean) / se_mean
    z_sd = (nuts.sd - gold.sd) / se_sd
    k = _z_threshold()
    record = {
        "posterior": summary_name(run.spec), "elements": gold.param_names, "z_mean": z_mean.tolist(),
        "z_sd": z_sd.tolist(), "max_abs_z_mean": float(np.max(np.abs(z_mean))),
        "max_abs_z_sd": float(np.max(np.abs(z_sd))), "k": k,
        "sd_se_arviz": list(map(float, nuts.info["sd_se"])), "sd_se_tail_aware": tail_se.tolist(), "nuts_seconds": seconds,
        "min_ess_bulk": nuts.info["min_ess_bulk"], "max_r_hat": nuts.info["max_r_hat"],
        "divergences": nuts.info["divergences"], "chains": NUTS_CHAINS, "warmup": NUTS_WARMUP,
        "draws_per_chain": NUTS_DRAWS,
    }
    (z_table_dir / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(f"\n{name}: max|z| mean {record['max_abs_z_mean']:.2f}, sd {record['max_abs_z_sd']:.2f} "
          f"(k = {k:.2f}, {len(z_mean)} elements, NUTS {seconds:.0f} s, min ESS {record['min_ess_bulk']:.0f}, "
          f"max R-hat {record['max_r_hat']:.3f}, {record['divergences']} divergences) -> {z_table_dir}")
    for element, zm, zs in zip(gold.param_names, z_mean, z_sd):
        print(f"  {element:32s} z_mean {zm:+6.2f}  z_sd {zs:+6.2f}")
    # The MCSEs are only trustworthy from chains that mixed (Vehtari et al. 2021: R-hat < 1.01
    # and bulk ESS > 100 per chain is their bar; 1.05 and 100 in all is the study's).
    assert nuts.info["max_r_hat"] < 1.05 and nuts.info["min_ess_bulk"] > 100, record
    bad = [(e, round(a, 2), round(b, 2)) for e, a, b in zip(gold.param_names, z_mean, z_sd)
           if not (abs(a) < k and abs(b) < k)]
    assert not bad, f"|z| >= {k:.2f}: {bad}"


def test_lotka_volterra_rk4_matches_a_tight_reference_solver():
    # The fixed-step RK4 of the Lotka-Volterra model against scipy's DOP853 at tolerance
    # 1e-12, at 20 posterior draws (the shipped thinned gold sample). Stan's own rk45 runs at
    # relative tolerance 1e-5; the fixed-step error must be below that in log population.
    from scipy.integrate import solve_ivp

    from models.pdb_lotka_volterra import POSTERIOR, rk4_populations

    run = make_run(POSTERIOR)
    thinned = load_reference_summary(POSTERIOR).thinned.reshape(-1, run.joint.dim)
    index = np.linspace(0, len(thinned) - 1, N_CHECK_DRAWS).round().astype(int)
    values = run.joint.constrain(torch.as_tensor(thinned[index]))
    ts = run.data["ts"]
    ours = rk4_populations(values["z_init"], values["theta"], ts).numpy()
    worst = 0.0
    for draw in range(N_CHECK_DRAWS):
        a, b, c, d = values["theta"][draw].tolist()
        exact = solve_ivp(lambda t, z: [(a - b * z[1]) * z[0], (d * z[0] - c) * z[1]], (0.0, float(ts[-1])),
                          values["z_init"][draw].tolist(), t_eval=ts.numpy(), method="DOP853",
                          rtol=1e-12, atol=1e-12).y.T
        error = np.max(np.abs(np.log(ours[draw]) - np.log(exact)))
        assert error < 1e-5, (draw, error)
        worst = max(worst, error)
    print(f"largest log-population error of RK4: {worst:.2e}")


def test_lotka_volterra_map_search_leaves_the_local_mode():
    # From the model's init L-BFGS ends in a local mode whose cycle is too short; the extra
    # seeded starts (map_starts) must find the mode at the gold draws. The best end point must
    # beat the first start's, and its log joint must be at least that of the gold draws' mean
    # (the mode is the maximum, so a larger -log p than at the mean means a wrong mode).
    from models.pdb_lotka_volterra import POSTERIOR
    from study.methods.laplace import find_map

    run = make_run(POSTERIOR)
    assert run.spec.map_starts > 1
    found = find_map(run)
    gold_mean = torch.as_tensor(load_reference_summary(POSTERIOR).thinned.reshape(-1, run.joint.dim).mean(0))
    at_gold_mean = float(-run.joint.log_joint(gold_mean))
    assert found["potential"] <= at_gold_mean, (found["potential"], at_gold_mean)
    assert found["start_potentials"][0] > found["potential"] + 10, found["start_potentials"]


def _contract_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "models" / "model_contract.md").read_text()
    section = text[text.index("## posteriordb posteriors"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


def test_the_documented_user_model_is_the_tested_file():
    assert _contract_example() == USER_MODEL.read_text()


@needs_posteriordb
def test_a_user_model_file_reads_a_clone_through_the_same_helpers():
    # The documented user model translates earnings-logearn_height exactly like the built-in
    # one; read through the clone, its gold-draw reference is the built-in's shipped summary.
    from models import load_model_file
    from study.core.context import ModelRun
    from study.methods.reference import fit_gold_draws
    from study.core.settings import Settings

    spec = load_model_file(USER_MODEL)
    run = ModelRun.create(spec, Settings.make())
    reference = fit_gold_draws(run)
    shipped = load_reference_summary("earnings-logearn_height")
    assert reference.param_names == shipped.param_names
    np.testing.assert_allclose(reference.mean, shipped.mean, rtol=1e-12)
    np.testing.assert_allclose(reference.sd, shipped.sd, rtol=1e-12)
