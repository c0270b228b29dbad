"""``python -m study.diagnose`` and ``study.diagnose(model, guide, data)``: the three verdicts, the outputs, bad input.

The Gaussian models (``seed_linear``, ``linear_correlated``) have a constant Hessian: there
``E_q[H_ii]`` is exact whatever the draws (Monte Carlo SE 0), so their checks are exact up to
rounding. The logistic regression below has a Hessian that varies over ``q``; its checks are
stated in multiples of the Monte Carlo SE.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
from cli_output import one_error_line
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

import study
from models import load_model_file
from study.core.joint import FlatJoint
from study.diagnose import (
    AT_FIXED_POINT, TOO_LARGE, TOO_SMALL, UNDETERMINED, GuideMismatch, main, site_verdict,
)

ROOT = Path(__file__).resolve().parents[1]
SEED_LINEAR = str(ROOT / "models" / "seed_linear.py")
LINEAR_CORRELATED = str(ROOT / "models" / "linear_correlated.py")


@pytest.fixture(autouse=True)
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def logistic_model(X, y):
    # (X * w).sum(-1), not X @ w: it broadcasts over vectorised particles.
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=X.dtype), 1.0))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=(X * w).sum(-1) + b), obs=y)


def logistic_data():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(X @ torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64) + 0.3)
    y = torch.bernoulli(p, generator=g)
    return {"X": X, "y": y}


def train_autonormal(model, data, steps=2000, seed=0, guide_class=AutoNormal):
    """ELBO, 16 vectorised particles, the learning rate decaying from 0.05 to 0.002."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = guide_class(model)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": (0.002 / 0.05) ** (1 / steps)})
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1))
    for _ in range(steps):
        svi.step(**data)
    return guide


def train_expected_loss(X, y, loglik, steps=600, seed=0):
    """The question's set-up: hand-written mu / log sigma on E_eps[-log p(y | mu + sigma eps)] alone."""
    torch.manual_seed(seed)
    k = X.shape[-1]
    mu = torch.zeros(k, requires_grad=True)
    log_sigma = torch.full((k,), -2.0, requires_grad=True)
    optimiser = torch.optim.Adam([mu, log_sigma], lr=0.02)
    for _ in range(steps):
        w = mu + log_sigma.exp() * torch.randn(32, k)
        loss = -loglik(w).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return mu.detach(), log_sigma.exp().detach()


def exact_precision(path):
    spec = load_model_file(path)
    post = spec.exact_posterior(spec.data())
    return post.mean, torch.linalg.inv(post.covariance)


# -- the verdict rule ------------------------------------------------------------------------


def test_the_verdict_rule():
    assert site_verdict(0.05, 0.0, 3.0)[0] == AT_FIXED_POINT  # inside the 0.1 floor
    assert site_verdict(-0.5, 0.2, 3.0)[0] == AT_FIXED_POINT  # inside 3 SE
    verdict, k, text = site_verdict(-0.75, 0.01, 3.0)
    assert verdict == TOO_SMALL and k == pytest.approx(2.0) and "KL/entropy" in text
    verdict, k, _ = site_verdict(3.0, 0.01, 3.0)
    assert verdict == TOO_LARGE and k == pytest.approx(2.0)
    assert site_verdict(-1.5, 0.01, 3.0)[0] == UNDETERMINED  # E_q[H] < 0 on average: no fixed point


# -- the three verdicts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def logistic_fit():
    torch.set_default_dtype(torch.float64)
    data = logistic_data()
    guide = train_autonormal(logistic_model, data)
    return data, guide


def test_converged_autonormal_is_at_the_fixed_point_and_the_module_is_callable(logistic_fit):
    data, guide = logistic_fit
    from study import diagnose

    result = diagnose(logistic_model, guide, data)
    assert result.verdicts == {"w": AT_FIXED_POINT, "b": AT_FIXED_POINT}, str(result)
    assert study.diagnose(logistic_model, guide, data).verdicts == result.verdicts  # same seed, same numbers
    for s in result.result["sites"]:
        assert s["mean_r_se"] > 0  # the logistic Hessian varies over q
        assert abs(s["mean_r"]) <= max(s["band"], 0.1)
    assert result.result["linear_response"] is True
    assert len(result.lines()) == 2


def test_a_guide_trained_on_the_expected_loss_is_collapsed_by_its_factor():
    """Gaussian model: E_q[H] = Lambda exactly, so k = 1/sqrt(mean_i sigma_i^2 Lambda_ii) to rounding."""
    spec = load_model_file(LINEAR_CORRELATED)
    data = spec.data()
    X, y = data["X"], data["y"]
    mu, sigma = train_expected_loss(X, y, lambda w: -0.5 * ((y - w @ X.T) ** 2).sum(-1))
    _, precision = exact_precision(LINEAR_CORRELATED)
    assert float(sigma.max()) < 0.05  # it collapsed: the fixed point is ~0.17
    result = study.diagnose(spec.model, {"w": {"loc": mu, "scale": sigma}}, data)
    site = result.site("w")
    assert site["verdict"] == TOO_SMALL and "KL/entropy" in site["text"]
    expected_k = 1.0 / math.sqrt(float((sigma**2 * precision.diagonal()).mean()))
    assert site["factor"] == pytest.approx(expected_k, rel=1e-9)
    assert f"{expected_k:.3g}" in str(result)


def test_collapse_on_a_non_gaussian_posterior_against_independent_draws(logistic_fit):
    """The factor's E_q[H] agrees with a fresh Monte Carlo estimate within 4 combined SE."""
    data, _ = logistic_fit
    X, y = data["X"], data["y"]
    Xb = torch.cat([X, torch.ones(len(X), 1)], dim=1)
    mu, sigma = train_expected_loss(
        Xb, y, lambda wb: dist.Bernoulli(logits=wb @ Xb.T).log_prob(y).sum(-1))
    guide = {"w": {"loc": mu[:3], "scale": sigma[:3]}, "b": {"loc": mu[3], "scale": sigma[3]}}
    result = study.diagnose(logistic_model, guide, data)
    assert set(result.verdicts.values()) == {TOO_SMALL}, str(result)
    joint = FlatJoint(logistic_model, data)
    g = torch.Generator().manual_seed(99)
    z = mu + sigma * torch.randn(2000, 4, generator=g)
    h = joint.hessian_diagonal_batched(z)  # (2000, 4): independent draws
    for site in joint.sites:
        pair_r = (sigma[site.slice] ** 2 * h[:, site.slice] - 1).mean(1)
        fresh, fresh_se = float(pair_r.mean()), float(pair_r.std() / math.sqrt(len(pair_r)))
        s = result.site(site.name)
        assert abs(s["mean_r"] - fresh) <= 4 * math.hypot(s["mean_r_se"], fresh_se) + 1e-12


def test_a_converged_guide_with_every_sigma_doubled_is_too_large():
    spec = load_model_file(LINEAR_CORRELATED)
    mean, precision = exact_precision(LINEAR_CORRELATED)
    sigma = precision.diagonal().rsqrt()  # the mean-field fixed point of a Gaussian posterior
    at = study.diagnose(spec.model, {"w": {"loc": mean, "scale": sigma}}, spec.data())
    assert at.verdicts == {"w": AT_FIXED_POINT} and abs(at.site("w")["mean_r"]) < 1e-9
    # Linear response is exact for a Gaussian posterior: the marginal sds.
    lr = at.result["parameters"]["lr_sd"]
    np.testing.assert_allclose(lr, torch.linalg.inv(precision).diagonal().sqrt().numpy(), rtol=1e-8)
    doubled = study.diagnose(spec.model, {"w": {"loc": mean, "scale": 2 * sigma}}, spec.data())
    assert doubled.verdicts == {"w": TOO_LARGE}
    assert doubled.factors["w"] == pytest.approx(2.0, rel=1e-9)


def test_doubled_sigma_of_a_trained_autonormal_is_too_large(logistic_fit):
    data, guide = logistic_fit
    doubled = {name: {"loc": guide._get_loc_and_scale(name)[0].detach(),
                      "scale": 2 * guide._get_loc_and_scale(name)[1].detach()} for name in ("w", "b")}
    result = study.diagnose(logistic_model, doubled, data)
    assert result.verdicts == {"w": TOO_LARGE, "b": TOO_LARGE}, str(result)


def independent_model(y):
    w = pyro.sample("w", dist.Normal(torch.zeros(y.shape[-1], dtype=y.dtype), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(w, 0.5).to_event(1), obs=y)


def test_above_the_dense_limit_the_residual_comes_from_gradients_and_no_marginal_sd_is_given():
    """d = 2,500: Price's gradient-only residual, H_ii at the mean on a subset; posterior precision 5."""
    y = torch.linspace(-1, 1, 2500)
    sigma = torch.full((2500,), 5.0**-0.5)
    at = study.diagnose(independent_model, {"w": {"loc": 0.8 * y, "scale": sigma}}, {"y": y})
    site = at.site("w")
    assert at.verdicts == {"w": AT_FIXED_POINT}, str(at)
    assert 0 < site["mean_r_se"] < 0.02 and abs(site["mean_r"]) <= 4 * site["mean_r_se"]
    assert "gradients only" in at.result["method"]["estimator"]
    assert "no marginal sd can be given" in at.result["method"]["linear_response"]
    assert at.result["parameters"]["lr_sd"] is None
    h = at.result["parameters"]["hessian_at_mean"]
    assert 0 < np.isfinite(h).sum() < 2500 and np.allclose(h[np.isfinite(h)], 5.0)
    small = study.diagnose(independent_model, {"w": {"loc": 0.8 * y, "scale": sigma / 3}}, {"y": y})
    assert small.verdicts == {"w": TOO_SMALL}
    # k = 1/sqrt(1 + mean r) with 1 + mean r ~ 1/9: 6 SE of mean r is 6 SE * 9/2 of k, relatively.
    assert small.factors["w"] == pytest.approx(3.0, rel=6 * small.site("w")["mean_r_se"] * 9 / 2)


# -- the command line: param stores, loc/scale files, outputs ---------------------------------


def save_store(path: Path) -> Path:
    pyro.get_param_store().save(str(path))
    return path


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    torch.set_default_dtype(torch.float64)
    spec = load_model_file(SEED_LINEAR)
    train_autonormal(spec.model, spec.data(), steps=1500)
    return save_store(tmp_path_factory.mktemp("store") / "seed.pt")


def test_the_command_line_diagnoses_a_saved_autonormal_and_writes_every_output(seed_store, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--model", SEED_LINEAR, "--params", str(seed_store), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("beta (1 parameter)") and AT_FIXED_POINT in lines[0]
    assert len(lines) == 2 and lines[1].startswith("wrote ")
    result = json.loads((out / "diagnosis.json").read_text())
    assert result["guide"] == "AutoNormal" and result["sites"][0]["verdict"] == AT_FIXED_POINT
    _, precision = exact_precision(SEED_LINEAR)
    assert result["parameters"]["inv_sqrt_expected_hessian"][0] == pytest.approx(float(precision[0, 0]) ** -0.5)
    assert result["parameters"]["inv_sqrt_hessian_at_mean"][0] == pytest.approx(float(precision[0, 0]) ** -0.5)
    assert result["command"].startswith("python -m study.diagnose --model")
    for name in ("diagnosis.md", "diagnosis.html"):
        text = (out / name).read_text()
        assert AT_FIXED_POINT in text and "1/√E_q[Hᵢᵢ]" in text
    assert (out / "diagnosis.png").stat().st_size > 1000
    assert "data:image/png;base64," in (out / "diagnosis.html").read_text()


def test_an_autodiagonalnormal_store_reads_as_the_same_guide(tmp_path, capsys):
    """The same (loc, scale) as an AutoDiagonalNormal store and as a loc/scale file: the same diagnosis."""
    spec = load_model_file(LINEAR_CORRELATED)
    mean, precision = exact_precision(LINEAR_CORRELATED)
    sigma = 2 * precision.diagonal().rsqrt()
    pyro.clear_param_store()
    guide = AutoDiagonalNormal(spec.model)
    guide(**spec.data())
    state = pyro.get_param_store().get_state()
    state["params"]["AutoDiagonalNormal.loc"] = mean.clone()
    state["params"]["AutoDiagonalNormal.scale"] = torch.log(torch.expm1(sigma))  # softplus^-1
    torch.save(state, tmp_path / "diag.pt")
    torch.save({"w": {"loc": mean, "scale": sigma}}, tmp_path / "locscale.pt")
    assert main(["--model", LINEAR_CORRELATED, "--params", str(tmp_path / "diag.pt"), "--out", str(tmp_path / "a")]) == 0
    assert main(["--model", LINEAR_CORRELATED, "--params", str(tmp_path / "locscale.pt"), "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "diagnosis.json").read_text())
    b = json.loads((tmp_path / "b" / "diagnosis.json").read_text())
    assert a["guide"] == "AutoDiagonalNormal" and b["guide"] == "loc/scale"
    assert a["sites"][0]["verdict"] == TOO_LARGE
    np.testing.assert_allclose(a["parameters"]["r"], b["parameters"]["r"], rtol=1e-12)
    assert capsys.readouterr().err == ""


# -- bad input -------------------------------------------------------------------------------


def _autonormal_state(model_path):
    spec = load_model_file(model_path)
    pyro.clear_param_store()
    guide = AutoNormal(spec.model)
    guide(**spec.data())
    return pyro.get_param_store().get_state()


def _hostile(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "missing_site":
        torch.save(_autonormal_state(SEED_LINEAR), path)  # its site is beta; the model's is w
    elif kind == "wrong_shape":
        torch.save({"w": {"loc": torch.zeros(5), "scale": torch.ones(5)}}, path)
    elif kind == "extra_site":
        torch.save({"w": {"loc": torch.zeros(6), "scale": torch.ones(6)},
                    "v": {"loc": torch.zeros(1), "scale": torch.ones(1)}}, path)
    elif kind == "multivariate":
        spec = load_model_file(LINEAR_CORRELATED)
        pyro.clear_param_store()
        AutoMultivariateNormal(spec.model)(**spec.data())
        save_store(path)
    elif kind == "nan_scale":
        state = _autonormal_state(LINEAR_CORRELATED)
        with torch.no_grad():
            state["params"]["AutoNormal.scales.w"][2] = float("nan")
        torch.save(state, path)
    elif kind == "negative_scale":
        torch.save({"w": {"loc": torch.zeros(6), "scale": torch.tensor([1.0, 1.0, -0.5, 1.0, 1.0, 1.0])}}, path)
    elif kind == "infinite_loc":
        torch.save({"w": {"loc": torch.tensor([0.0, math.inf, 0, 0, 0, 0]), "scale": torch.ones(6)}}, path)
    elif kind == "bogus_constraint":
        state = _autonormal_state(LINEAR_CORRELATED)
        state["constraints"]["AutoNormal.scales.w"] = torch.ones(6)
        torch.save(state, path)
    elif kind == "integer_constraint":
        state = _autonormal_state(LINEAR_CORRELATED)
        state["constraints"]["AutoNormal.scales.w"] = torch.distributions.constraints.nonnegative_integer
        torch.save(state, path)
    elif kind == "text":
        path.write_text("loc = 1, scale = 2\n")
    elif kind == "tensor":
        torch.save(torch.ones(6), path)
    elif kind == "other_dict":
        torch.save({"state_dict": {"weight": torch.ones(6)}, "epoch": 3}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing_site", r"missing site: the guide has no site 'w'"),
        ("wrong_shape", r"wrong shape: site 'w': the guide's loc has shape \(5,\), the model's unconstrained value \(6,\)"),
        ("extra_site", r"extra site: the guide's site 'v' is not a latent site"),
        ("multivariate", r"another guide type: AutoMultivariateNormal has 'AutoMultivariateNormal.scale_tril'"),
        ("nan_scale", r"non-finite scale: site 'w' \(AutoNormal.scales.w\): scale\[2\] = nan"),
        ("negative_scale", r"negative scale: site 'w' \(w.scale\): scale\[2\] = -0.5"),
        ("infinite_loc", r"non-finite loc: site 'w': loc\[1\] = inf"),
        ("bogus_constraint", r"the constraint of 'AutoNormal.scales.w' is a Tensor, not a constraint"),
        ("integer_constraint", r"the constraint of 'AutoNormal.scales.w', .* maps no real numbers"),
        ("text", r"not a Pyro param store or a loc/scale file: torch.load\(weights_only=True\) refused it"),
        ("tensor", r"not a Pyro param store .* it holds Tensor"),
        ("other_dict", r"not a Pyro param store .* it holds a dict with keys 'state_dict', 'epoch'"),
        ("empty", r"not a Pyro param store or a loc/scale file"),
        ("absent", r"--params .*absent.pt: file not found"),
        ("folder", r"--params .*folder: not a file"),
    ],
)
def test_each_hostile_file_exits_2_with_one_line_naming_the_mismatch(tmp_path, capsys, kind, message):
    if kind == "folder":
        (tmp_path / "folder").mkdir()
    path = tmp_path / {"absent": "absent.pt", "folder": "folder"}[kind] if kind in ("absent", "folder") else _hostile(kind, tmp_path)
    out = tmp_path / "out"
    assert main(["--model", LINEAR_CORRELATED, "--params", str(path), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert re.search(message, line), line
    assert not out.exists()  # nothing computed, nothing written


def test_the_python_function_raises_one_line_on_a_mismatch():
    spec = load_model_file(LINEAR_CORRELATED)
    with pytest.raises(GuideMismatch, match=r"wrong shape: site 'w'"):
        study.diagnose(spec.model, {"w": {"loc": torch.zeros(3), "scale": torch.ones(3)}}, spec.data())
    with pytest.raises(GuideMismatch, match=r"reads mean-field guides"):
        study.diagnose(spec.model, object(), spec.data())


class Payload:
    """Unpickling it calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_a_crafted_pickle_is_refused_and_runs_no_code(tmp_path, container):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    state = {"params": {"AutoNormal.locs.w": Payload(marker)}, "constraints": {}}
    if container == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path)
    # The payload is live: an ordinary (unsafe) load runs it.
    if container == "pickle":
        pickle.loads(path.read_bytes()).get("params")["AutoNormal.locs.w"].close()
    else:
        torch.load(path, weights_only=False)["params"]["AutoNormal.locs.w"].close()
    assert marker.exists()
    marker.unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "study.diagnose", "--model", LINEAR_CORRELATED, "--params", str(path),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused it (it refers to io.open" in lines[0], run.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_importing_the_study_does_not_import_the_diagnosis():
    code = ("import sys, study, study.compare; print('study.diagnose' in sys.modules); "
            "import study.diagnose as d; print(callable(d), callable(study.diagnose))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()
    assert out == ["False", "True", "True"]


# -- the README's examples -------------------------------------------------------------------


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Diagnose your own fit")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_shows_the_example_file_as_it_is():
    python = re.search(r"```python\n(.*?)```", readme_section(), re.S).group(1)
    source = (ROOT / "examples" / "train_autonormal.py").read_text()
    assert python.strip() in source


@pytest.mark.slow  # two trainings (about 30 s)
def test_the_readme_examples_run_as_written(tmp_path):
    """The README's commands, verbatim but for the interpreter, from a folder laid out like the repository."""
    section = readme_section()
    commands = [line for line in re.search(r"```\n(\.venv.*?)```", section, re.S).group(1).splitlines() if line]
    assert len(commands) == 4 and all(c.startswith(".venv/bin/python ") for c in commands)
    for name in ("models", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "reports").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outputs = []
    for command in commands:
        argv = [sys.executable] + command.split()[1:]
        run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr[-2000:])
        outputs.append(run.stdout)
    assert "w (6 parameters)" in outputs[1] and AT_FIXED_POINT in outputs[1]
    for name in ("diagnosis.json", "diagnosis.md", "diagnosis.html", "diagnosis.png"):
        assert (tmp_path / "reports" / "diagnose" / name).is_file()
    quoted = re.search(r"`(σ too small by a factor [0-9.]+): ", section).group(1)
    assert quoted in outputs[3], outputs[3]


LOGNORMAL_MODEL = '''
import torch, pyro, pyro.distributions as dist
from models import ModelSpec

def model(y):
    s = pyro.sample("s", dist.LogNormal(torch.zeros((), dtype=torch.float64), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(0.0, s), obs=y)

def data():
    return {"y": torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)}

SPEC = ModelSpec(name="lognormal_scale", model=model, data=data)
'''


def test_a_diagnosis_that_cannot_be_computed_exits_1_with_one_line(tmp_path, capsys):
    """log sigma = 800: sigma overflows to inf, so log p and its gradient are not finite at the draws."""
    path = tmp_path / "lognormal_scale.py"
    path.write_text(LOGNORMAL_MODEL)
    torch.save({"s": {"loc": torch.tensor(800.0), "scale": torch.tensor(1.0)}}, tmp_path / "p.pt")
    assert main(["--model", str(path), "--params", str(tmp_path / "p.pt"), "--out", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys)
    assert line.startswith("error: the diagnosis could not be computed: FloatingPointError"), line
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_exits_2(seed_store, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["--model", SEED_LINEAR, "--params", str(seed_store), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in one_error_line(capsys)
