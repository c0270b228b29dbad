"""The iterate averages of an SVI run and its stopping checks, step by step."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from study.core.context import ModelRun
from study.methods.svi.objectives import NonFiniteLoss
from study.methods.svi.stopping import converged, drift_standard_error


@dataclass
class AveragedIterates:
    """What ``run_and_average`` kept of a run: every loss, the recorded log sds, the averages."""

    losses: np.ndarray  # (steps,)
    record_steps: np.ndarray  # (r,): about 400 recorded steps, the last one included
    log_sd: np.ndarray  # (r, d)
    mean: torch.Tensor  # (d,): the average of the means over the window
    spread: torch.Tensor  # the average of the spread (sd or covariance) over the window
    sd_first: torch.Tensor  # (d,): the average sd over the first half of the window
    sd_second: torch.Tensor  # (d,): ... and over its second half
    drift_se: torch.Tensor  # (d,): Monte Carlo SE of sd_second / sd_first - 1 (0 where unknown)
    drift_dof: int | None  # degrees of freedom behind drift_se (None where unknown)
    last_loc: torch.Tensor
    last_sd: torch.Tensor
    averaged_steps: int
    wall_seconds: float


def run_and_average(svi: SVI, run: ModelRun, method: str, steps: int, snapshot,
                    stop_early: bool = False, data=None, hold_steps: int = 0) -> AveragedIterates:
    """Up to ``steps`` SVI steps; iterates averaged over the last ``average_fraction`` of them.

    ``snapshot()`` returns ``(loc, spread, sd)`` of the guide after a step: ``spread`` is
    what is averaged as the fit's spread (the sd vector of a mean-field guide, the
    covariance of a richer one) and ``sd`` is recorded and split over the two halves of
    the window, which tells whether sigma has stopped moving. Raises ``NonFiniteLoss``
    at the first NaN or infinite loss.

    With ``stop_early`` (and ``Settings.stop_early``), every ``check_every`` steps from
    ``min_steps_fraction`` of ``steps`` on, the window is the last ``average_fraction``
    of the steps run so far (whole blocks of ``check_every`` steps), and the run stops
    as soon as ``converged`` holds on it; ``steps`` is the cap. ``data`` replaces ``run.data`` (e.g. on a GPU).
    With ``hold_steps`` (the learning rate held at its start, ``scale_plan``), no check comes
    before that window lies past them.
    """
    s = run.settings
    record_every = max(1, steps // 400)
    block = max(1, s.check_every)
    checking = stop_early and s.stop_early
    first_check = max(2 * block, int(steps * s.min_steps_fraction),
                      math.ceil(hold_steps / (1.0 - s.average_fraction)))
    # The window of a run that goes the whole way (summed step by step, as it always was).
    average_from = int(steps * (1.0 - s.average_fraction))
    middle = (average_from + steps) // 2
    sums = {"loc": 0.0, "spread": 0.0, "sd_first": 0.0, "sd_second": 0.0}
    window_parts = {"sd_first": [], "sd_second": []}  # sub-block means of a run that goes the whole way
    window_part = {"sd_first": [0.0, 0], "sd_second": [0.0, 0]}
    losses = np.empty(steps)
    record_steps, log_sd = [], []
    # Sums per block of `block` steps: any window of whole blocks is a sum of them.
    blocks: list[dict] = []
    current = {"loc": 0.0, "spread": 0.0, "sd": 0.0, "n": 0, "parts": [], "part": 0.0, "part_n": 0}
    part_size = max(1, block // 4)  # sub-blocks for the batch-means SE of sigma's drift
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"{run.name}: {method}", leave=False, disable=not run.progress, mininterval=1.0)

    def window(end: int) -> tuple[int, list[dict]]:
        """The averaging window of a run of ``end`` steps: its first step and its blocks."""
        count = max(2, int(round(end * s.average_fraction / block)))
        count = min(count + count % 2, len(blocks) - len(blocks) % 2)  # two halves of whole blocks
        return end - sum(b["n"] for b in blocks[-count:]), blocks[-count:]

    stopped = steps
    validate = is_validation_enabled()
    for step in bar:
        # After the first block of steps, without Pyro's argument and support checks, as a
        # compiled step runs anyway: a step of an uncompiled network took 10-20% less time
        # without them (digits_mlp_1k). The first block keeps them, so that a model whose
        # first draws leave its support fails naming its line; a later NaN stops the fit below.
        with pyro.validation_enabled(validate and step < block):
            value = svi.step(**(run.data if data is None else data))
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{method} loss became {value} at step {step}")
        losses[step] = value
        loc, spread, sd = snapshot()
        if step % record_every == 0 or step == steps - 1:
            record_steps.append(step)
            log_sd.append(sd.log().numpy().copy())
        if step >= average_from:
            sums["loc"] = sums["loc"] + loc
            sums["spread"] = sums["spread"] + spread
            half = "sd_first" if step < middle else "sd_second"
            sums[half] = sums[half] + sd
            acc = window_part[half]
            acc[0], acc[1] = acc[0] + sd, acc[1] + 1
            if acc[1] == part_size:
                window_parts[half].append(acc[0] / part_size)
                acc[0], acc[1] = 0.0, 0
        if not checking:
            continue
        current["loc"] = current["loc"] + loc
        current["spread"] = current["spread"] + spread
        current["sd"] = current["sd"] + sd
        current["n"] += 1
        current["part"] = current["part"] + sd
        current["part_n"] += 1
        if current["part_n"] == part_size:
            current["parts"].append(current["part"] / part_size)
            current["part"], current["part_n"] = 0.0, 0
        if current["n"] == block or step == steps - 1:
            if current["part_n"]:
                current["parts"].append(current["part"] / current["part_n"])
            blocks.append({k: current[k] for k in ("loc", "spread", "sd", "n", "parts")})
            current = {"loc": 0.0, "spread": 0.0, "sd": 0.0, "n": 0, "parts": [], "part": 0.0, "part_n": 0}
            done = step + 1
            if done >= first_check and done < steps:
                begin, chosen = window(done)
                half = len(chosen) // 2
                sd_first = sum(b["sd"] for b in chosen[:half]) / sum(b["n"] for b in chosen[:half])
                sd_second = sum(b["sd"] for b in chosen[half:]) / sum(b["n"] for b in chosen[half:])
                first_parts = torch.stack([p for b in chosen[:half] for p in b["parts"]])
                second_parts = torch.stack([p for b in chosen[half:] for p in b["parts"]])
                if converged(losses[begin:done], sd_first, sd_second, s, first_parts, second_parts):
                    stopped = done
                    if record_steps[-1] != step:  # the trajectory ends where the run did
                        record_steps.append(step)
                        log_sd.append(sd.log().numpy().copy())
                    break
    bar.close()
    if stopped < steps:
        _, chosen = window(stopped)
        half = len(chosen) // 2
        first, second = chosen[:half], chosen[half:]
        n = sum(b["n"] for b in chosen)
        mean = sum(b["loc"] for b in chosen) / n
        spread_mean = sum(b["spread"] for b in chosen) / n
        sd_first = sum(b["sd"] for b in first) / sum(b["n"] for b in first)
        sd_second = sum(b["sd"] for b in second) / sum(b["n"] for b in second)
        first_parts = [p for b in first for p in b["parts"]]
        second_parts = [p for b in second for p in b["parts"]]
    else:
        n = steps - average_from
        mean, spread_mean = sums["loc"] / n, sums["spread"] / n
        sd_first, sd_second = sums["sd_first"] / (middle - average_from), sums["sd_second"] / (steps - middle)
        first_parts, second_parts = window_parts["sd_first"], window_parts["sd_second"]
    if min(len(first_parts), len(second_parts)) >= 2:
        drift_se = drift_standard_error(torch.stack(first_parts), torch.stack(second_parts))
        drift_dof = len(first_parts) + len(second_parts) - 2
    else:
        drift_se, drift_dof = torch.zeros_like(sd_first), None
    return AveragedIterates(
        losses=losses[:stopped], record_steps=np.asarray(record_steps), log_sd=np.stack(log_sd),
        mean=mean, spread=spread_mean, sd_first=sd_first, sd_second=sd_second, drift_se=drift_se, drift_dof=drift_dof,
        last_loc=loc, last_sd=sd, averaged_steps=n, wall_seconds=time.perf_counter() - start,
    )
