"""Training-free acceleration (nodes/accel/): exact identities where nothing is reused, the caches' accounting,
SADA's criterion, T-Stitch's end points, ParaDiGMS' convergence to the sequential solver, guidance combinations."""
import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.accel.deep_cache import ModelDeepCache
from samplegraph.nodes.accel.paradigms import StepRule, paradigms
from samplegraph.nodes.accel.step_cache import ModelStepCache, sada_stable
from samplegraph.nodes.accel.stitch import ModelStitch
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.models.mnist import ModelMnist
from samplegraph.nodes.samplers.ddim import Ddim
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.karras import Karras

SIGMAS = Karras(steps=12, sigma_min=0.002, sigma_max=80.0).run()
X = torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(0)) * 80.0  # (16, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return ModelCondition(label=3).run(ModelDigits().run())


@pytest.fixture(scope="module")
def weak():
    return ModelCondition(label=3).run(ModelDigits(variant="weak").run())


def sample(denoise, sampler=None, x=X, sigmas=SIGMAS):
    return counted(denoise, sampler, x, sigmas)[0]


def counted(denoise, sampler=None, x=X, sigmas=SIGMAS):
    """Final x and the metrics run_steps reports (nfe; blocks_computed / blocks_skipped of a cached model)."""
    sampler = sampler or Euler()
    ctx = NodeContext.detached(seed=0)
    return run_steps(sampler, denoise, sampler.init(x, sigmas), NoiseSource(0), ctx).x, ctx.metrics


@pytest.mark.parametrize("sampler", [Euler(), Dpmpp2M()], ids=["euler", "dpmpp_2m"])
@pytest.mark.parametrize("criterion", ["rel_l1", "sada"])
def test_step_cache_threshold_zero_is_bit_identical(digits, sampler, criterion):
    x, metrics = counted(ModelStepCache(threshold=0.0, criterion=criterion).run(digits), sampler)
    assert torch.equal(x, sample(digits, sampler))
    assert metrics["blocks_skipped"] == 0 and metrics["blocks_computed"] == 3 * 16 * 12


def test_step_cache_skips_more_as_the_threshold_grows_and_stays_close(digits):
    plain = sample(digits)
    skipped, errors = [], []
    for threshold in (0.02, 0.1, 0.3):
        out, metrics = counted(ModelStepCache(threshold=threshold).run(digits))
        assert metrics["blocks_computed"] + metrics["blocks_skipped"] == 3 * 16 * 12
        skipped.append(metrics["blocks_skipped"])
        errors.append(float((out - plain).abs().mean()))
    assert skipped[0] < skipped[1] < skipped[2] and errors[1] < 0.1
    _, limited = counted(ModelStepCache(threshold=0.3, max_reuse=1).run(digits))
    assert limited["blocks_skipped"] < skipped[2]


def test_a_reused_block_adds_its_cached_residual(digits):
    """Same input twice with an infinite threshold: every block reuses, and the output is the plain one."""
    model = ModelStepCache(threshold=1e9).run(digits)
    cached = model.bound(())
    sigma = torch.full((16,), 3.0)
    first = cached(X / 20, sigma)
    again = cached(X / 20, sigma)
    assert model.memory_metrics(cached.memory) == {"blocks_computed": 3 * 16, "blocks_skipped": 3 * 16}
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, digits(X / 20, sigma))


def test_sada_criterion_matches_its_formula():
    """x_hat = x_n + h (0.625 d_n + 0.75 d_n-1 - 0.375 d_n-2); stable iff mean((x - x_hat) * second difference) <= 0.
    After an Euler step x - x_hat = 0.375 h (second difference): always stable for h < 0."""
    g = torch.Generator().manual_seed(1)
    d0, d1, d2, x_prev = (torch.randn(8, 5, generator=g) for _ in range(4))
    sigma_prev, sigma = torch.full((8,), 2.0), torch.full((8,), 1.5)
    euler = x_prev + (sigma - sigma_prev)[:, None] * d0
    assert sada_stable(euler, sigma, x_prev, sigma_prev, d0, d1, d2).all()
    second = d0 - 2 * d1 + d2
    pushed = euler + 10 * second  # residual along the second difference: unstable
    assert not sada_stable(pushed, sigma, x_prev, sigma_prev, d0, d1, d2).any()
    by_hand = ((pushed - (x_prev - 0.5 * (0.625 * d0 + 0.75 * d1 - 0.375 * d2))) * second).mean(1) <= 0
    assert torch.equal(sada_stable(pushed, sigma, x_prev, sigma_prev, d0, d1, d2), by_hand)


def test_deep_cache_interval_one_is_plain_and_counts_refreshes(digits):
    plain = ModelDeepCache(interval=1).run(digits)
    assert torch.equal(sample(plain), sample(digits))
    out, metrics = counted(ModelDeepCache(interval=3, shallow=1).run(digits))
    full, partial = 4, 8  # calls 0, 3, 6, 9 of 12 run every block; the others the shallow block only
    assert metrics["blocks_computed"] == 16 * (3 * full + 1 * partial)
    assert metrics["blocks_skipped"] == 16 * 2 * partial
    assert 0 < float((out - sample(digits)).abs().mean()) < 0.3
    with pytest.raises(NodeError, match="shallow"):
        ModelDeepCache(shallow=3).run(digits)


def test_caches_need_a_block_network():
    with pytest.raises(NodeError, match="blocks"):
        ModelStepCache().run(ModelGMM().run())


def test_stitch_end_points_are_the_models_exactly(digits, weak):
    large, small = sample(digits), sample(weak)
    assert torch.equal(sample(ModelStitch(switch_sigma=80.0).run(weak, digits)), large)
    assert torch.equal(sample(ModelStitch(switch_sigma=0.001).run(weak, digits)), small)
    mixed = sample(ModelStitch(switch_sigma=1.0).run(weak, digits))
    assert not torch.equal(mixed, large) and not torch.equal(mixed, small)


def test_stitch_splits_rows_by_sigma(digits, weak):
    stitched = ModelStitch(switch_sigma=1.0).run(weak, digits)
    x, sigma = X[:4] / 40, torch.tensor([5.0, 0.5, 2.0, 1.0])
    out = stitched(x, sigma)
    early = sigma > 1.0
    torch.testing.assert_close(out[early], weak(x[early], sigma[early]))
    torch.testing.assert_close(out[~early], digits(x[~early], sigma[~early]))


def test_stitch_refuses_models_of_other_spaces(digits):
    with pytest.raises(NodeError, match="parametrisation"):
        ModelStitch().run(ModelDigits(variant="flow").run(), digits)
    with pytest.raises(NodeError, match="sample shape"):
        ModelStitch().run(ModelMnist().run(), digits)


@pytest.mark.parametrize("rule", [("euler", 0.0), ("ddim", 0.0), ("ddim", 1.0)], ids=["euler", "ddim", "ddim_eta1"])
def test_paradigms_window_one_is_the_sequential_sampler(digits, rule):
    kind, eta = rule
    sequential = sample(digits, Euler() if kind == "euler" else Ddim(eta=eta))
    out, rounds, evals = paradigms(digits, SIGMAS.values, X, StepRule(kind, eta, NoiseSource(0), torch.arange(16)),
                                   window=1, tolerance=0.1)
    assert torch.equal(out, sequential) and rounds == evals == 12


@pytest.mark.parametrize("rule", [("euler", 0.0), ("ddim", 1.0)], ids=["ode", "sde_predrawn_noise"])
def test_paradigms_converges_to_the_sequential_solver_as_the_tolerance_shrinks(rule):
    kind, eta = rule
    gmm = ModelGMM(preset="ring", std=0.3).run()
    sigmas = Karras(steps=50, sigma_min=0.002, sigma_max=80.0).run()
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    step = Euler() if kind == "euler" else Ddim(eta=eta)
    sequential = sample(gmm, step, x, sigmas)
    errors, rounds = [], []
    tolerances = (1e-1, 1e-3, 1e-5, 1e-7)
    for tol in tolerances:
        out, r, _ = paradigms(gmm, sigmas.values, x, StepRule(kind, eta, NoiseSource(0), torch.arange(256)), 16, tol)
        errors.append(float((out - sequential).abs().max()))
        rounds.append(r)
    assert all(err < tol for err, tol in zip(errors, tolerances))  # max error below the tolerance
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert all(a <= b for a, b in zip(rounds, rounds[1:])) and rounds[-1] < 40  # of 50 sequential steps


def test_guidance_over_a_cached_model_is_a_clear_error(digits):
    guided = CFG(scale=2.0).run(ModelStepCache(threshold=0.1).run(digits), digits)
    with pytest.raises(NodeError, match="connect it directly to 'sample'"):
        sample(guided)


def test_search_over_a_cached_model_is_a_clear_error(digits):
    from samplegraph.nodes.search.budget import BudgetDenoiser

    with pytest.raises(NodeError, match="model.step_cache"):
        BudgetDenoiser(ModelStepCache().run(digits), None, torch.zeros(16, dtype=torch.long))


def test_guidance_over_stitched_models_and_paradigms_over_guidance_work(digits, weak):
    uncond_l = ModelDigits().run()
    uncond_s = ModelDigits(variant="weak").run()
    stitched = CFG(scale=2.0).run(ModelStitch(switch_sigma=80.0).run(weak, digits),
                                  ModelStitch(switch_sigma=80.0).run(uncond_s, uncond_l))
    plain = CFG(scale=2.0).run(digits, uncond_l)
    assert torch.equal(sample(stitched), sample(plain))
    out, _, _ = paradigms(plain, SIGMAS.values, X, StepRule("euler", 0.0, NoiseSource(0), torch.arange(16)), 1, 0.1)
    assert torch.equal(out, sample(plain))


def test_the_run_report_counts_blocks_and_rounds():
    from pathlib import Path

    from samplegraph import Runtime
    from samplegraph.graph.workflow import Workflow

    root = Path(__file__).resolve().parents[1] / "workflows"
    runtime = Runtime(device="cpu")
    for name, keys in (("step_cache", ("blocks_computed", "blocks_skipped")), ("paradigms", ("rounds",))):
        wf = Workflow.load(root / f"{name}.json")
        report = runtime.run(wf, outputs=["sample"]).report
        metrics = next(n.metrics for n in report.nodes if n.node == "sample")
        assert all(metrics[k] > 0 for k in keys)
    assert metrics["rounds"] < metrics["steps"] == 50
