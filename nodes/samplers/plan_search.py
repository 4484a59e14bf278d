"""sampler.plan_search: per-step solver and step-time search on calibration trajectories, in the spirit of
the Unified Sampling Framework of Liu et al. (2023), "A Unified Sampling Framework for Solver Searching of
Diffusion Probabilistic Models" (USF / S3).

USF sees a sampler as a choice, per step, of the solver (and its order) and of the step's time points, and
searches that space for the configuration closest to the ground truth at a fixed NFE. The paper's search is
a predictor-based evolutionary search over thousands of configurations; this node is a cheaper, honest
stand-in: deterministic coordinate descent on the calibration batch, error = mean L2 distance of the final
samples to a many-step Heun solve of the same initial noise (seed `seed`, as latent.noise draws it).

- Start: each candidate alone, with the most Karras steps its NFE allows under the budget; the best.
- A round: for every step, try every other candidate there (kept when the NFE stays within budget and the
  error drops); then for every level between sigma_max and the final 0, try moving log sigma a fraction
  (1/2, then 1/4, ... as rounds go on) of the way to either neighbour (kept when the error drops).
- Runs of equal choices form the segments of a sampler.plan (each segment restarts its sampler there,
  as sampler.plan runs it), so the configuration found IS a workflow: its SolverPlan lists the samplers
  (kind and params), the switch steps and the sigmas for sampler.plan + schedule.manual (or, inside the same
  workflow, sampler.from_plan + the `sigmas` output), and the error it reports is what that workflow gives
  on the same noise, bit for bit."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..core.denoiser import CountingDenoiser, Denoiser
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..schedules.calibration import Calibrated, sample_error, solve
from ..schedules.karras import Karras
from .heun import Heun
from .plan import Plan


@dataclass(frozen=True)
class SolverPlan:
    """A found configuration: sampler.plan's samplers and switch_at, schedule.manual's values, its calibration
    error and NFE. `as_json()` is the JSON the node reports."""

    samplers: tuple[dict[str, Any], ...]  # {"kind": ..., "params": {...}} per segment
    switch_at: tuple[int, ...]
    sigmas: tuple[float, ...]
    error: float
    nfe: int

    def as_json(self) -> dict[str, Any]:
        return {"samplers": list(self.samplers), "switch_at": list(self.switch_at), "sigmas": list(self.sigmas),
                "error": self.error, "nfe": self.nfe}

    def workflow_nodes(self, prefix: str = "found") -> dict[str, dict[str, Any]]:
        """Workflow nodes of this configuration: its samplers, `{prefix}_sampler` (a sampler.plan, or the one
        sampler) and `{prefix}_sigmas` (a schedule.manual), to link into a `sample` node."""
        names = [f"{prefix}_s{k}" for k in range(len(self.samplers))]
        nodes = {name: {"kind": s["kind"], "params": s["params"]} for name, s in zip(names, self.samplers)}
        if self.switch_at:
            nodes[f"{prefix}_sampler"] = {"kind": "sampler.plan", "params": {"switch_at": list(self.switch_at)},
                                          "inputs": {"samplers": names}}
        else:
            nodes[f"{prefix}_sampler"] = nodes.pop(names[0])
        nodes[f"{prefix}_sigmas"] = {"kind": "schedule.manual", "params": {"values": list(self.sigmas)}}
        return nodes

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, self.as_json()

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> SolverPlan:
        return cls(tuple(meta["samplers"]), tuple(meta["switch_at"]), tuple(meta["sigmas"]), meta["error"],
                   meta["nfe"])


class PlanSearchResult(NamedTuple):
    plan: SolverPlan  # the configuration as data; sampler.from_plan turns it into a Sampler
    sigmas: Sigmas


@dataclass(frozen=True)
class Config:
    """A point of the search: the candidate index of each step and the schedule (S + 1,), ending in 0."""

    choice: tuple[int, ...]
    sigmas: tuple[float, ...]


@node("sampler.plan_search", version=1)
class PlanSearch(Calibrated):
    """Implements a per-step solver search in the spirit of USF (Liu et al. 2023), by coordinate descent."""

    nfe: int = Field(6, ge=1, description="budget: most denoiser calls of the configuration")
    rounds: int = Field(3, ge=0, description="coordinate-descent rounds (solver choices, then step times)")
    reference_steps: int = Field(200, ge=2, description="Karras steps of the Heun ground truth")
    sigma_min: float = Field(0.002, gt=0, description="lowest level before the final 0 (start and search bound)")
    sigma_max: float = Field(80.0, gt=0)

    def run(self, denoise: Denoiser, samplers: list[Sampler], ctx: NodeContext) -> PlanSearchResult:
        """The configuration of least calibration error within the NFE budget (its JSON is in the run report)."""
        if not samplers:
            raise NodeError("sampler.plan_search: input 'samplers' needs at least one candidate sampler")
        x = self.noise(self.sigma_max)  # (N, ...)
        truth = solve(Heun(), denoise, x, self.karras(self.reference_steps), self.seed)  # (N, ...)
        search = Search(self, denoise, samplers, x, truth)
        best = min((search.start(k) for k in range(len(samplers))), key=lambda r: r[0])
        for r in range(self.rounds):
            best = search.solver_round(best)
            best = search.time_round(best, 0.5 ** (r + 1))
        error, cfg, nfe = best
        plan = SolverPlan(tuple(describe(samplers[k]) for k in segment_choices(cfg.choice)),
                          switch_points(cfg.choice), cfg.sigmas, error, nfe)
        ctx.record(plan=plan.as_json())
        return PlanSearchResult(plan, Sigmas(torch.tensor(cfg.sigmas, dtype=torch.float64)))

    def karras(self, steps: int) -> Sigmas:
        return Karras(steps=steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max).run()


Result = tuple[float, Config, int]  # (error, configuration, NFE)


class Search:
    """The calibration batch, its ground truth and the evaluation of configurations."""

    def __init__(self, p: PlanSearch, denoise: Denoiser, samplers: list[Sampler], x: torch.Tensor,
                 truth: torch.Tensor):
        self.p, self.denoise, self.samplers, self.x, self.truth = p, denoise, samplers, x, truth

    def evaluate(self, cfg: Config) -> Result:
        """(error, cfg, NFE) of a configuration on the calibration batch."""
        sampler = assemble([self.samplers[k] for k in segment_choices(cfg.choice)], switch_points(cfg.choice))
        counted = CountingDenoiser(self.denoise)
        x = solve(sampler, counted, self.x, Sigmas(torch.tensor(cfg.sigmas, dtype=torch.float64)), self.p.seed)
        return sample_error(x, self.truth), cfg, counted.calls

    def start(self, k: int) -> Result:
        """Candidate k alone on the most Karras steps within the budget (inf error when not even one fits)."""
        found: Result = (math.inf, Config((k,), (self.p.sigma_max, 0.0)), 0)
        for steps in range(1, self.p.nfe + 1):
            result = self.evaluate(Config((k,) * steps, tuple(self.p.karras(steps).values.tolist())))
            if result[2] > self.p.nfe:
                break
            found = result
        return found

    def solver_round(self, best: Result) -> Result:
        """Every other candidate at every step, kept when within budget and better."""
        for i in range(len(best[1].choice)):
            for k in range(len(self.samplers)):
                choice = list(best[1].choice)
                if choice[i] == k:
                    continue
                choice[i] = k
                trial = self.evaluate(Config(tuple(choice), best[1].sigmas))
                if trial[2] <= self.p.nfe and trial[0] < best[0]:
                    best = trial
        return best

    def time_round(self, best: Result, fraction: float) -> Result:
        """Every level strictly between sigma_max and 0 moved in log sigma towards either neighbour."""
        floor = math.log(self.p.sigma_min)
        for i in range(1, len(best[1].sigmas) - 1):
            for side in (-1, 1):
                levels = list(best[1].sigmas)
                here = math.log(levels[i])
                there = math.log(levels[i + side]) if levels[i + side] > 0 else min(floor, here)
                levels[i] = math.exp(here + fraction * (there - here))
                trial = self.evaluate(Config(best[1].choice, tuple(levels)))
                if trial[2] <= self.p.nfe and trial[0] < best[0]:
                    best = trial
        return best


def segment_choices(choice: tuple[int, ...]) -> list[int]:
    """The candidate of each segment (run of equal choices)."""
    return [k for i, k in enumerate(choice) if i == 0 or choice[i - 1] != k]


def switch_points(choice: tuple[int, ...]) -> tuple[int, ...]:
    """The steps where the candidate changes (sampler.plan's switch_at)."""
    return tuple(i for i in range(1, len(choice)) if choice[i] != choice[i - 1])


def describe(sampler: Sampler) -> dict[str, Any]:
    """A sampler as workflow data: its kind and parameters."""
    return {"kind": sampler.__node_kind__, "params": sampler.model_dump(mode="json")}


def assemble(parts: list[Sampler], switch_at: tuple[int, ...]) -> Sampler:
    """The segments' samplers as one: the sampler itself for one segment, else a sampler.plan."""
    return Plan(switch_at=list(switch_at)).run(parts) if switch_at else parts[0]
