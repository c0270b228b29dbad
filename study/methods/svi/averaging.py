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


def rows_kept(count: int, left: list[int]) -> torch.Tensor:
    """The indices of ``count`` rows without the rows ``left`` (those whose seed stopped)."""
    return torch.tensor([r for r in range(count) if r not in left], dtype=torch.long)


def _rows(value, keep: torch.Tensor):
    """``value``'s rows ``keep`` (a float, the sum before its first term, stays as it is)."""
    return value[keep] if torch.is_tensor(value) else value


class IterateAverager:
    """The averages and stopping checks of ``K`` seeds run in step, one row per seed.

    Fed the seeds' losses and guide snapshots after every step (``add``), it keeps what
    ``run_and_average`` describes for each seed: the recorded log sds, the sums over the
    averaging window, and, every ``check_every`` steps, the stopping rule (``converged``)
    on each seed's own window. A seed that stops leaves: ``add`` returns the rows that
    stopped, its ``AveragedIterates`` is in ``results``, and the remaining rows close up
    (the caller drops the same rows of its parameters). Every operation acts on each row on
    its own, so one seed's numbers do not depend on the others (``K = 1`` gives the numbers
    of a lone run).
    """

    def __init__(self, run: ModelRun, steps: int, seeds: int, stop_early: bool = False, hold_steps: int = 0):
        s = self.settings = run.settings
        self.steps = steps
        self.record_every = max(1, steps // 400)
        self.block = max(1, s.check_every)
        self.checking = stop_early and s.stop_early
        self.first_check = max(2 * self.block, int(steps * s.min_steps_fraction),
                               math.ceil(hold_steps / (1.0 - s.average_fraction)))
        # The window of a run that goes the whole way (summed step by step, as it always was).
        self.average_from = int(steps * (1.0 - s.average_fraction))
        self.middle = (self.average_from + steps) // 2
        self.sums = {"loc": 0.0, "spread": 0.0, "sd_first": 0.0, "sd_second": 0.0}
        self.window_parts = {"sd_first": [], "sd_second": []}  # sub-block means of a run that goes the whole way
        self.window_part = {"sd_first": [0.0, 0], "sd_second": [0.0, 0]}
        self.losses = np.empty((seeds, steps))
        self.seed_of = list(range(seeds))  # the seed of each remaining row
        self.record_steps: list[list[int]] = [[] for _ in range(seeds)]
        self.log_sd: list[list[np.ndarray]] = [[] for _ in range(seeds)]
        # Sums per block of `block` steps: any window of whole blocks is a sum of them.
        self.blocks: list[dict] = []
        self.current = self._empty_block()
        self.part_size = max(1, self.block // 4)  # sub-blocks for the batch-means SE of sigma's drift
        self.results: list[AveragedIterates | None] = [None] * seeds
        self.start = time.perf_counter()

    @staticmethod
    def _empty_block() -> dict:
        return {"loc": 0.0, "spread": 0.0, "sd": 0.0, "n": 0, "parts": [], "part": 0.0, "part_n": 0}

    @property
    def running(self) -> int:
        return len(self.seed_of)

    def _window(self, end: int) -> tuple[int, list[dict]]:
        """The averaging window of a run of ``end`` steps: its first step and its blocks."""
        count = max(2, int(round(end * self.settings.average_fraction / self.block)))
        count = min(count + count % 2, len(self.blocks) - len(self.blocks) % 2)  # two halves of whole blocks
        return end - sum(b["n"] for b in self.blocks[-count:]), self.blocks[-count:]

    def _record(self, step: int, sd: torch.Tensor) -> None:
        log_sd = sd.log().numpy()
        for row, seed in enumerate(self.seed_of):
            self.record_steps[seed].append(step)
            self.log_sd[seed].append(log_sd[row].copy())

    def add(self, step: int, losses, loc: torch.Tensor, spread: torch.Tensor, sd: torch.Tensor) -> list[int]:
        """Step ``step``'s losses ``(K,)`` and guide snapshot (leading dimension ``K``, one row per
        remaining seed). Returns the rows whose seed stopped at this step (empty when none did)."""
        s = self.settings
        self.losses[self.seed_of, step] = losses
        if step % self.record_every == 0 or step == self.steps - 1:
            self._record(step, sd)
        if step >= self.average_from:
            sums = self.sums
            sums["loc"] = sums["loc"] + loc
            sums["spread"] = sums["spread"] + spread
            half = "sd_first" if step < self.middle else "sd_second"
            sums[half] = sums[half] + sd
            acc = self.window_part[half]
            acc[0], acc[1] = acc[0] + sd, acc[1] + 1
            if acc[1] == self.part_size:
                self.window_parts[half].append(acc[0] / self.part_size)
                acc[0], acc[1] = 0.0, 0
        if step == self.steps - 1:
            return self._finish_all(loc, sd)
        if not self.checking:
            return []
        current = self.current
        current["loc"] = current["loc"] + loc
        current["spread"] = current["spread"] + spread
        current["sd"] = current["sd"] + sd
        current["n"] += 1
        current["part"] = current["part"] + sd
        current["part_n"] += 1
        if current["part_n"] == self.part_size:
            current["parts"].append(current["part"] / self.part_size)
            current["part"], current["part_n"] = 0.0, 0
        if current["n"] < self.block:
            return []
        self.blocks.append({k: current[k] for k in ("loc", "spread", "sd", "n", "parts")})
        self.current = self._empty_block()
        done = step + 1
        if done < self.first_check:
            return []
        begin, chosen = self._window(done)
        half = len(chosen) // 2
        sd_first = sum(b["sd"] for b in chosen[:half]) / sum(b["n"] for b in chosen[:half])
        sd_second = sum(b["sd"] for b in chosen[half:]) / sum(b["n"] for b in chosen[half:])
        first_parts = torch.stack([p for b in chosen[:half] for p in b["parts"]])
        second_parts = torch.stack([p for b in chosen[half:] for p in b["parts"]])
        stopped = [row for row, seed in enumerate(self.seed_of)
                   if converged(self.losses[seed, begin:done], sd_first[row], sd_second[row], s,
                                first_parts[:, row], second_parts[:, row])]
        for row in stopped:
            seed = self.seed_of[row]
            if self.record_steps[seed][-1] != step:  # the trajectory ends where the run did
                self.record_steps[seed].append(step)
                self.log_sd[seed].append(sd[row].log().numpy().copy())
            self.results[seed] = self._stopped_result(row, done, loc[row], sd[row])
        if stopped:
            self._drop(stopped)
        return stopped

    def _stopped_result(self, row: int, stopped: int, loc: torch.Tensor, sd: torch.Tensor) -> AveragedIterates:
        """Row ``row``'s averages over the window of a run stopped after ``stopped`` steps."""
        _, chosen = self._window(stopped)
        half = len(chosen) // 2
        first, second = chosen[:half], chosen[half:]
        n = sum(b["n"] for b in chosen)
        mean = sum(b["loc"][row] for b in chosen) / n
        spread_mean = sum(b["spread"][row] for b in chosen) / n
        sd_first = sum(b["sd"][row] for b in first) / sum(b["n"] for b in first)
        sd_second = sum(b["sd"][row] for b in second) / sum(b["n"] for b in second)
        first_parts = [p[row] for b in first for p in b["parts"]]
        second_parts = [p[row] for b in second for p in b["parts"]]
        return self._result(self.seed_of[row], stopped, mean, spread_mean, sd_first, sd_second, first_parts,
                            second_parts, loc, sd, n)

    def _finish_all(self, loc: torch.Tensor, sd: torch.Tensor) -> list[int]:
        """Every remaining row ran the whole way: its averages over the last ``average_fraction``."""
        sums, steps = self.sums, self.steps
        n = steps - self.average_from
        rows = list(range(self.running))
        for row in rows:
            first_parts = [p[row] for p in self.window_parts["sd_first"]]
            second_parts = [p[row] for p in self.window_parts["sd_second"]]
            self.results[self.seed_of[row]] = self._result(
                self.seed_of[row], steps, sums["loc"][row] / n, sums["spread"][row] / n,
                sums["sd_first"][row] / (self.middle - self.average_from),
                sums["sd_second"][row] / (steps - self.middle), first_parts, second_parts, loc[row], sd[row], n)
        self.seed_of = []
        return rows

    def _result(self, seed, stopped, mean, spread, sd_first, sd_second, first_parts, second_parts, loc, sd,
                n) -> AveragedIterates:
        if min(len(first_parts), len(second_parts)) >= 2:
            drift_se = drift_standard_error(torch.stack(first_parts), torch.stack(second_parts))
            drift_dof = len(first_parts) + len(second_parts) - 2
        else:
            drift_se, drift_dof = torch.zeros_like(sd_first), None
        return AveragedIterates(
            losses=self.losses[seed, :stopped].copy(), record_steps=np.asarray(self.record_steps[seed]),
            log_sd=np.stack(self.log_sd[seed]), mean=mean, spread=spread, sd_first=sd_first, sd_second=sd_second,
            drift_se=drift_se, drift_dof=drift_dof, last_loc=loc, last_sd=sd, averaged_steps=n,
            wall_seconds=time.perf_counter() - self.start,
        )

    def _drop(self, rows: list[int]) -> None:
        """The rows ``rows`` leave; every running sum keeps the others."""
        keep = rows_kept(self.running, rows)
        self.seed_of = [self.seed_of[int(r)] for r in keep]
        self.sums = {k: _rows(v, keep) for k, v in self.sums.items()}
        self.window_parts = {k: [p[keep] for p in v] for k, v in self.window_parts.items()}
        self.window_part = {k: [_rows(v[0], keep), v[1]] for k, v in self.window_part.items()}
        for b in self.blocks:
            for k in ("loc", "spread", "sd"):
                b[k] = b[k][keep]
            b["parts"] = [p[keep] for p in b["parts"]]
        # A check comes only at a block's end, so the block in progress is empty here.


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
    before that window lies past them. The bookkeeping is ``IterateAverager``'s, with one seed.
    """
    averager = IterateAverager(run, steps, 1, stop_early=stop_early, hold_steps=hold_steps)
    bar = tqdm(range(steps), desc=f"{run.name}: {method}", leave=False, disable=not run.progress, mininterval=1.0)
    validate = is_validation_enabled()
    for step in bar:
        # After the first block of steps, without Pyro's argument and support checks, as a
        # compiled step runs anyway: a step of an uncompiled network took 10-20% less time
        # without them (digits_mlp_1k). The first block keeps them, so that a model whose
        # first draws leave its support fails naming its line; a later NaN stops the fit below.
        with pyro.validation_enabled(validate and step < averager.block):
            value = svi.step(**(run.data if data is None else data))
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{method} loss became {value} at step {step}")
        loc, spread, sd = snapshot()
        if averager.add(step, [value], loc[None], spread[None], sd[None]):
            break
    bar.close()
    return averager.results[0]
