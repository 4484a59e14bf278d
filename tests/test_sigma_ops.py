"""Sigma operations and manual sigmas: split / concat round trips, flip (inversion runs
through a sampler and back), set first, denoise strength (ComfyUI's SplitSigmasDenoise
semantics), errors located at the parameter (directly and through the executor), and the
schedules tour workflow, whose split two-stage run equals one run over the whole schedule."""
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from samplegraph import NodeRunError, Runtime, WorkflowError
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.concat import Concat
from samplegraph.nodes.schedules.denoise_strength import DenoiseStrength
from samplegraph.nodes.schedules.exponential import Exponential
from samplegraph.nodes.schedules.flip import AscendingSigmas, Flip
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.schedules.manual import Manual
from samplegraph.nodes.schedules.set_first import SetFirst
from samplegraph.nodes.schedules.split_at_sigma import SplitAtSigma
from samplegraph.nodes.schedules.split_at_step import SplitAtStep

ROOT = Path(__file__).resolve().parents[1]
TEN = Sigmas.of([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])  # 10 steps


def values(s: Sigmas) -> list[float]:
    return s.values.tolist()


def test_split_at_step_shares_the_cut_level_and_concat_undoes_every_split():
    high, low = SplitAtStep(step=3).run(TEN)
    assert values(high) == [10.0, 9.0, 8.0, 7.0] and values(low) == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    karras = Karras(steps=12).run()
    for step in range(1, 12):
        high, low = SplitAtStep(step=step).run(karras)
        assert high.steps == step and low.steps == 12 - step and low.values[-1] == 0
        assert torch.equal(Concat().run(high, low).values, karras.values)


def test_split_at_sigma_cuts_at_the_first_level_at_or_below_sigma():
    for sigma, cut in ((7.0, 3), (6.5, 4), (1.5, 9), (9.99, 1)):
        high, low = SplitAtSigma(sigma=sigma).run(TEN)
        assert high.steps == cut and high.values[-1] == low.values[0] == TEN.values[cut]
        assert torch.equal(Concat().run(high, low).values, TEN.values)


def test_split_cuts_that_leave_a_part_without_a_step_are_errors_naming_the_parameter():
    with pytest.raises(NodeError, match="param 'step' is 10, but the input has 10 steps.*1 .. 9"):
        SplitAtStep(step=10).run(TEN)
    with pytest.raises(NodeError, match="param 'sigma' is 10.0.*level 0"):
        SplitAtSigma(sigma=10.0).run(TEN)  # the first level is already at or below: no high part
    with pytest.raises(NodeError, match="param 'sigma' is 0.5.*level 10"):
        SplitAtSigma(sigma=0.5).run(TEN)  # only the final 0 is below: no low step
    with pytest.raises(ValidationError, match="step\n.*greater than or equal to 1"):
        SplitAtStep(step=0)


def test_concat_keeps_a_downward_jump_and_refuses_to_go_up():
    joined = Concat().run(Sigmas.of([10.0, 5.0]), Sigmas.of([3.0, 1.0, 0.0]))
    assert values(joined) == [10.0, 5.0, 3.0, 1.0, 0.0]
    with pytest.raises(NodeError, match="input 'low' starts at sigma 6.*above the end of input 'high' \\(5\\)"):
        Concat().run(Sigmas.of([10.0, 5.0]), Sigmas.of([6.0, 0.0]))


def test_flip_reverses_with_a_leading_zero_replaced():
    flipped = Flip().run(Sigmas.of([4.0, 2.0, 1.0, 0.0]))
    assert isinstance(flipped, AscendingSigmas) and isinstance(flipped, Sigmas)
    assert values(flipped) == [1e-4, 1.0, 2.0, 4.0]
    assert values(Flip(first=0.5).run(Sigmas.of([4.0, 2.0, 1.0, 0.0])))[0] == 0.5
    assert values(Flip().run(Sigmas.of([4.0, 2.0]))) == [2.0, 4.0]  # no zero: a plain reversal
    with pytest.raises(NodeError, match="param 'first' is 2.0, above the next level 1"):
        Flip(first=2.0).run(Sigmas.of([4.0, 2.0, 1.0, 0.0]))
    with pytest.raises(NodeError, match="non-decreasing"):
        AscendingSigmas(torch.tensor([2.0, 1.0], dtype=torch.float64))


def test_a_flipped_schedule_inverts_data_through_a_sampler():
    """Euler up the flipped schedule (data -> noise), then down the original, returns the data (DDIM inversion)."""
    gmm = ModelGMM(preset="ring").run()
    x0 = gmm.sample(64, torch.Generator().manual_seed(0))  # (64, 2) float64
    down = Exponential(steps=400, sigma_min=1e-3, sigma_max=20.0).run()
    up = Flip(first=1e-3 / 2).run(down)
    euler, noise = Euler(), NoiseSource(0)
    latent = run_steps(euler, gmm, euler.init(x0, up), noise).x  # (64, 2) at sigma 20
    assert latent.std() > 10  # it really went to high noise
    back = run_steps(euler, gmm, euler.init(latent, down), noise).x  # (64, 2)
    err = (back - x0).norm(dim=1)  # (64,)
    assert err.median() < 0.05, err.median()  # an O(step) error; without inversion it is ~4 (the ring's radius)


def test_set_first_replaces_the_first_level_but_never_makes_the_schedule_rise():
    assert values(SetFirst(sigma=20.0).run(TEN))[:3] == [20.0, 9.0, 8.0]
    assert values(SetFirst(sigma=9.0).run(TEN))[:2] == [9.0, 9.0]
    with pytest.raises(NodeError, match="param 'sigma' is 8.5, below the second level 9"):
        SetFirst(sigma=8.5).run(TEN)


def test_denoise_strength_keeps_the_last_rounded_fraction_of_steps():
    # k = round(strength * 10): 0.5 -> 5, 0.25 -> round(2.5) = 2 (half to even, as ComfyUI's Python round),
    # 0.35 -> round(3.5) = 4, 1.0 -> all
    for strength, k in ((0.5, 5), (0.25, 2), (0.35, 4), (1.0, 10), (0.06, 1)):
        assert values(DenoiseStrength(strength=strength).run(TEN)) == values(TEN)[10 - k:], strength
    with pytest.raises(NodeError, match="param 'strength' is 0.05, which keeps 0 of the input's 10 steps"):
        DenoiseStrength(strength=0.05).run(TEN)
    with pytest.raises(ValidationError, match="strength"):
        DenoiseStrength(strength=0.0)


def test_manual_sigmas_are_validated_entry_by_entry():
    assert values(Manual(values=[3.0, 1.0, 1.0, 0.0]).run()) == [3.0, 1.0, 1.0, 0.0]
    assert values(Manual(values=[3.0, 1.0]).run()) == [3.0, 1.0]  # a partial schedule, e.g. one to split-join
    with pytest.raises(ValidationError, match="values\n.*entry 2 \\(2.0\\) is above entry 1 \\(1.0\\)"):
        Manual(values=[3.0, 1.0, 2.0, 0.0])
    with pytest.raises(ValidationError, match="entry 1 is -1.0"):
        Manual(values=[3.0, -1.0])
    with pytest.raises(ValidationError, match="at least 2"):
        Manual(values=[3.0])


# ----------------------------------------------------------------- through the executor


def tour(**changes) -> dict:
    doc = {"version": 1, "seed": 3, "nodes": {
        "model": {"kind": "model.gmm"},
        "full": {"kind": "schedule.exponential", "params": {"steps": 12}},
        "split": {"kind": "sigmas.split_at_step", "params": {"step": 5}, "inputs": {"sigmas": "full"}},
        "noise": {"kind": "latent.noise", "params": {"batch": 32, "shape": [2], "dtype": "float64"},
                  "inputs": {"sigmas": "full"}},
        "euler": {"kind": "sampler.euler"},
        "first": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "split.high", "sampler": "euler",
                                               "latent": "noise"}},
        "second": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "split.low", "sampler": "euler",
                                                "latent": "first"}},
        "whole": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "full", "sampler": "euler",
                                               "latent": "noise"}},
    }, "outputs": ["second", "whole"]}
    for name, params in changes.items():
        doc["nodes"][name]["params"] = params
    return doc


def test_a_two_stage_run_over_a_split_equals_one_run_over_the_whole_schedule():
    out = Runtime(device="cpu").run(tour()).outputs
    assert torch.equal(out["second"], out["whole"])  # Euler keeps no memory between steps


def test_a_bad_split_is_a_node_run_error_naming_node_and_parameter():
    with pytest.raises(NodeRunError, match="node 'split' \\(sigmas.split_at_step\\): param 'step' is 12"):
        Runtime(device="cpu").run(tour(split={"step": 12}))
    with pytest.raises(WorkflowError) as info:
        Runtime(device="cpu").run(tour(split={"step": 0}))
    assert info.value.problems[0].node == "split" and "step" in str(info.value.problems[0])


def test_split_and_flipped_sigmas_survive_the_disk_cache(tmp_path):
    doc = {"version": 1, "nodes": {"s": {"kind": "schedule.karras", "params": {"steps": 4}},
                                   "split": {"kind": "sigmas.split_at_step", "params": {"step": 2},
                                             "inputs": {"sigmas": "s"}},
                                   "f": {"kind": "sigmas.flip", "inputs": {"sigmas": "s"}}},
           "outputs": ["f", "split.high", "split.low"]}
    first = Runtime(device="cpu", cache_dir=tmp_path).run(doc)
    again = Runtime(device="cpu", cache_dir=tmp_path).run(doc)
    assert {n.node: n.cache for n in again.report.nodes} == {"s": "disk", "split": "disk", "f": "disk"}
    assert isinstance(again.outputs["f"], AscendingSigmas)
    assert torch.equal(again.outputs["f"].values, first.outputs["f"].values)
    assert torch.equal(again.outputs["split.low"].values, first.outputs["split.low"].values)


def test_the_schedules_tour_workflow_runs():
    result = Runtime(device="cpu").run(ROOT / "workflows" / "schedules_tour.json")
    # exact 512-sample draws of the ring score 0.17 .. 0.31 (10 seeds); skipping the high part of
    # the schedule scores 0.53, stopping at sigma 1 scores 1.9
    assert result.outputs["sliced_w2"] < 0.4
