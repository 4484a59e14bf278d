"""Guidance nodes on an exact class-conditional Gaussian mixture: every identity that theory
makes exact (CFG scale 1 / 0, APG = CFG, autoguidance with itself, classifier guidance with
an exact classifier = Bayes' rule, guidance outside its interval), honest NFE accounting,
the clamp pitfall, and composition with every solver family through the `sample` node."""
import math

import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser, Denoiser, FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.guidance.apg import APG
from samplegraph.nodes.guidance.autoguidance import Autoguidance
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.guidance.cfg_rescale import CFGRescale
from samplegraph.nodes.guidance.cfg_zero_star import CFGZeroStar
from samplegraph.nodes.guidance.classifier import ClassifierGuidance
from samplegraph.nodes.guidance.common import evaluations_of
from samplegraph.nodes.api import Registry
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.models.gmm_classifier import ModelGMMClassifier
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras

CLASSES = [0, 0, 1, 1, 2, 2, 3, 3]  # adjacent ring modes share a class
LABEL = 1
F64 = torch.float64


@pytest.fixture(scope="module")
def mix() -> GaussianMixture:
    return ModelGMM(preset="ring", modes=8, std=0.4, classes=CLASSES).run()


@pytest.fixture(scope="module")
def cond(mix):
    return ModelCondition(label=LABEL).run(mix)


@pytest.fixture(scope="module")
def uncond(mix):
    return ModelCondition().run(mix)


def noisy(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points at log-uniform noise levels 0.01..80, each at its own sigma (per-particle sigma)."""
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(0.01), math.log(80.0), generator=gen))  # (n,)
    x0 = 4.0 * torch.randn(n, 2, dtype=F64, generator=gen)  # (n, 2)
    return x0 + sigma[:, None] * torch.randn(n, 2, dtype=F64, generator=gen), sigma


def accuracy(mix: GaussianMixture, x: torch.Tensor, label: int) -> float:
    """Fraction of clean samples whose exact posterior class p(class | x0) is `label`."""
    post = mix.class_log_posterior(x.to(F64), x.new_zeros(x.shape[0], dtype=F64))  # (B, C)
    return float((post.argmax(1) == label).double().mean())


# --- the conditional model itself ---------------------------------------------------------

def test_conditionals_average_to_the_unconditional_denoiser(mix, uncond):
    """E[x0 | x] = sum_c p(c | x) E[x0 | x, c]: the restricted mixtures and the class posterior
    are the exact conditionals of one joint model."""
    x, sigma = noisy()
    post = mix.class_log_posterior(x, sigma).exp()  # (B, 4)
    total = sum(post[:, [c]] * ModelCondition(label=c).run(mix)(x, sigma) for c in range(4))  # (B, 2)
    assert torch.allclose(total, uncond(x, sigma), atol=1e-10, rtol=0)
    assert torch.allclose(post.sum(1), torch.ones_like(sigma), atol=1e-12)


def test_condition_node_restricts_and_weakens(mix):
    c = ModelCondition(label=2).run(mix)
    assert torch.equal(c.means, mix.means[4:6]) and torch.allclose(c.weights, torch.full((2,), 0.5, dtype=F64))
    weak = ModelCondition(label=2, weakness=2.0).run(mix)
    assert torch.equal(weak.stds, 2 * c.stds) and torch.equal(weak.means, c.means)
    assert ModelCondition().run(mix) is mix
    with pytest.raises(NodeError, match="class 7 has no component"):
        ModelCondition(label=7).run(mix)
    with pytest.raises(NodeError, match="set model.gmm 'classes'"):
        ModelCondition(label=0).run(ModelGMM().run())
    with pytest.raises(ValidationError, match="give one label each"):
        ModelGMM(preset="ring", modes=8, classes=[0, 1])
    with pytest.raises(ValidationError, match="weakness"):
        ModelCondition(weakness=0.5)


def test_labels_survive_the_cache_codec(mix):
    tensors, meta = mix.cache_encode()
    back = GaussianMixture.cache_decode(tensors, meta)
    assert torch.equal(back.classes, mix.classes)


# --- exact identities -----------------------------------------------------------------------

def test_cfg_scale_one_is_conditional_and_zero_is_unconditional(cond, uncond):
    x, sigma = noisy()
    assert torch.allclose(CFG(scale=1.0).run(cond, uncond)(x, sigma), cond(x, sigma), atol=1e-12, rtol=0)
    assert torch.equal(CFG(scale=0.0).run(cond, uncond)(x, sigma), uncond(x, sigma))
    guided = CFG(scale=3.0).run(cond, uncond)(x, sigma)
    assert torch.allclose(guided, uncond(x, sigma) + 3 * (cond(x, sigma) - uncond(x, sigma)), atol=1e-12, rtol=0)


def test_apg_without_projection_or_threshold_is_cfg(cond, uncond):
    x, sigma = noisy()
    for scale in (0.0, 1.0, 4.0):
        apg = APG(scale=scale, eta=1.0).run(cond, uncond)(x, sigma)
        assert torch.allclose(apg, CFG(scale=scale).run(cond, uncond)(x, sigma), atol=1e-10, rtol=0)


def test_apg_removes_the_parallel_component_and_caps_the_norm(cond, uncond):
    x, sigma = noisy()
    x0_c, x0_u = cond(x, sigma), uncond(x, sigma)
    update = APG(scale=2.0, eta=0.0).run(cond, uncond)(x, sigma) - x0_c  # (B, 2) = orthogonal part
    assert (update * x0_c).sum(1).abs().max() < 1e-10 * (1 + x0_c.norm(dim=1).max() ** 2)
    capped = APG(scale=2.0, eta=1.0, norm_threshold=0.5).run(cond, uncond)(x, sigma) - x0_c  # (B, 2)
    diff = x0_c - x0_u
    assert capped.norm(dim=1).max() <= 0.5 + 1e-12
    big = diff.norm(dim=1) > 0.5
    assert big.any() and torch.allclose(capped[~big], diff[~big], atol=1e-12, rtol=0)


def test_autoguidance_with_the_same_model_is_the_model(mix, cond):
    x, sigma = noisy()
    same = Autoguidance(scale=2.5).run(cond, ModelCondition(label=LABEL).run(mix))
    assert torch.allclose(same(x, sigma), cond(x, sigma), atol=1e-12, rtol=0)
    weak = ModelCondition(label=LABEL, weakness=2.0).run(mix)
    assert not torch.allclose(Autoguidance(scale=2.5).run(cond, weak)(x, sigma), cond(x, sigma))


def test_cfg_rescale_zero_is_cfg_and_one_matches_the_conditional_std(cond, uncond):
    x, sigma = noisy()
    plain = CFG(scale=4.0).run(cond, uncond)(x, sigma)
    assert torch.allclose(CFGRescale(scale=4.0, rescale=0.0).run(cond, uncond)(x, sigma), plain, atol=1e-12, rtol=0)
    full = CFGRescale(scale=4.0, rescale=1.0).run(cond, uncond)(x, sigma)
    assert torch.allclose(full.std(1), cond(x, sigma).std(1), atol=1e-9, rtol=0)
    assert torch.allclose(full / full.norm(dim=1, keepdim=True), plain / plain.norm(dim=1, keepdim=True), atol=1e-9)


def test_cfg_zero_star_formula(cond, uncond):
    """v = eps - x0 of each estimate; s* = <v_c, v_u> / |v_u|^2; v_g = s* v_u + w (v_c - s* v_u);
    x0_g is the estimate with velocity v_g. Without s* it is plain CFG (v is affine in x0)."""
    x, sigma = noisy()
    s = sigma[:, None]
    x0_c, x0_u = cond(x, sigma), uncond(x, sigma)
    v_c, v_u = (x - x0_c) / s - x0_c, (x - x0_u) / s - x0_u  # (B, 2)
    star = (v_c * v_u).sum(1, keepdim=True) / ((v_u * v_u).sum(1, keepdim=True) + 1e-8)  # (B, 1)
    v_g = star * v_u + 3.0 * (v_c - star * v_u)
    expect = x / (1 + s) - s / (1 + s) * v_g
    assert torch.allclose(CFGZeroStar(scale=3.0).run(cond, uncond)(x, sigma), expect, atol=1e-10, rtol=1e-12)
    plain = CFGZeroStar(scale=3.0, optimized_scale=False).run(cond, uncond)(x, sigma)
    assert torch.allclose(plain, CFG(scale=3.0).run(cond, uncond)(x, sigma), atol=1e-9, rtol=1e-12)
    # s* minimises |v_c - s v_u|: <v_c - s* v_u, v_u> = 0, but for the 1e-8 guard (= 1e-8 s*)
    residual = ((v_c - star * v_u) * v_u).sum(1)  # (B,)
    assert torch.allclose(residual, 1e-8 * star[:, 0], atol=1e-12, rtol=0)


def test_cfg_zero_star_zero_init_costs_nothing_and_keeps_x_t(cond, uncond):
    x, sigma = noisy()
    inner_c, inner_u = CountingDenoiser(cond), CountingDenoiser(uncond)
    guided = CFGZeroStar(scale=3.0, zero_above=10.0).run(inner_c, inner_u)
    out = guided(x, sigma)
    high = sigma > 10.0
    assert high.any() and (~high).any()
    assert torch.equal(out[high], x[high] / (1 + sigma[high, None]))  # zero flow velocity
    assert torch.allclose(out[~high], CFGZeroStar(scale=3.0).run(cond, uncond)(x[~high], sigma[~high]), atol=1e-12)
    assert guided.evaluations(sigma[high]) == 0 and guided.evaluations(sigma) == 2


def test_classifier_guidance_with_an_exact_classifier_is_bayes(mix, cond, uncond):
    """grad log p(x | y) = grad log p(x) + grad log p(y | x): scale 1 on the unconditional model
    gives the conditional denoiser exactly."""
    x, sigma = noisy()
    classifier = ModelGMMClassifier().run(mix)
    guided = ClassifierGuidance(label=LABEL, scale=1.0).run(uncond, classifier)
    assert torch.allclose(guided(x, sigma), cond(x, sigma), atol=1e-9, rtol=1e-9)
    assert torch.equal(ClassifierGuidance(label=LABEL, scale=0.0).run(uncond, classifier)(x, sigma), uncond(x, sigma))
    with pytest.raises(NodeError, match="4 classes"):
        ClassifierGuidance(label=9).run(uncond, classifier)(x, sigma)


def same(d):
    return d


GUIDES = {  # name -> (cond, uncond, mixture, wrap, **interval) -> guided Denoiser; wrap sees every inner model
    "cfg": lambda c, u, mix, w=same, **iv: CFG(scale=3.0, **iv).run(w(c), w(u)),
    "cfg_rescale": lambda c, u, mix, w=same, **iv: CFGRescale(scale=3.0, **iv).run(w(c), w(u)),
    "apg": lambda c, u, mix, w=same, **iv: APG(scale=3.0, norm_threshold=2.0, **iv).run(w(c), w(u)),
    "cfg_zero_star": lambda c, u, mix, w=same, **iv: CFGZeroStar(scale=3.0, **iv).run(w(c), w(u)),
    "autoguidance": lambda c, u, mix, w=same, **iv: Autoguidance(scale=2.0, **iv).run(
        w(c), w(ModelCondition(label=LABEL, weakness=2.0).run(mix))),
    "classifier": lambda c, u, mix, w=same, **iv: ClassifierGuidance(label=LABEL, scale=2.0, **iv).run(
        w(u), w(ModelGMMClassifier().run(mix))),
}


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_outside_the_interval_is_unguided_exactly(name, mix, cond, uncond):
    """Kynkaanniemi et al. (2024): rows outside (sigma_lo, sigma_hi] get the plain model's estimate,
    bit for bit, inside rows the full-interval guidance, and the batch may mix both."""
    x, sigma = noisy()
    base = uncond if name == "classifier" else cond
    everywhere = GUIDES[name](cond, uncond, mix)(x, sigma)
    windowed = GUIDES[name](cond, uncond, mix, sigma_lo=0.5, sigma_hi=5.0)(x, sigma)
    inside = (sigma > 0.5) & (sigma <= 5.0)
    assert inside.any() and (~inside).any()
    assert torch.equal(windowed[~inside], base(x, sigma)[~inside])
    assert torch.allclose(windowed[inside], everywhere[inside], atol=1e-12, rtol=0)
    assert not torch.allclose(everywhere[inside], base(x, sigma)[inside])  # guidance does something there


def test_interval_bounds_are_half_open_and_checked(cond, uncond):
    """(sigma_lo, sigma_hi]: sigma_hi itself is guided, sigma_lo is not; an empty interval is an error."""
    sigma = torch.tensor([0.5, 5.0], dtype=F64)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    out = CFG(scale=3.0, sigma_lo=0.5, sigma_hi=5.0).run(cond, uncond)(x, sigma)
    assert torch.equal(out[0], cond(x, sigma)[0])
    assert torch.equal(out[1], CFG(scale=3.0).run(cond, uncond)(x, sigma)[1])
    with pytest.raises(ValidationError, match="greater than sigma_lo"):
        CFG(sigma_lo=2.0, sigma_hi=1.0)


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_batch_split_invariance_and_evaluation_count(name, mix, cond, uncond):
    """Rows are independent (so a split batch gives the same rows), and `evaluations(sigma)` is the
    number of batched inner calls (model or classifier) one call really makes."""
    x, sigma = noisy()
    counters: list[CountingDenoiser] = []

    def count(d):
        counters.append(CountingDenoiser(d))
        return counters[-1]

    guided = GUIDES[name](cond, uncond, mix, count, sigma_lo=0.5, sigma_hi=5.0)
    whole = guided(x, sigma)
    assert torch.equal(torch.cat([guided(x[:100], sigma[:100]), guided(x[100:], sigma[100:])]), whole)
    for rows, expect in ((sigma > 0, 2), (sigma > 5.0, 1), ((sigma > 1.0) & (sigma < 2.0), 2)):
        before = sum(c.calls for c in counters)
        guided(x[rows], sigma[rows])
        assert sum(c.calls for c in counters) - before == guided.evaluations(sigma[rows]) == expect


def test_nested_guidance_counts_recursively(mix, cond, uncond):
    inner = CFG(scale=2.0).run(cond, uncond)
    nested = Autoguidance(scale=2.0).run(inner, CFG(scale=2.0, sigma_hi=1.0).run(cond, uncond))
    sigma = torch.tensor([0.5, 3.0], dtype=F64)
    assert evaluations_of(nested, sigma) == 2 + 2  # the weak branch's cfg is active for sigma 0.5
    assert evaluations_of(nested, sigma[1:]) == 2 + 1
    assert evaluations_of(cond, sigma) == 1


def test_sampling_loop_nfe_equals_the_sum_of_evaluations(cond, uncond):
    """What run_steps counts (outer calls) times the guided evaluations per call is the true NFE,
    here 2 per call in the interval and 1 outside: Heun, 10 steps, interval (0.5, 5]."""
    counted_c, counted_u = CountingDenoiser(cond), CountingDenoiser(uncond)
    guided = CFG(scale=3.0, sigma_lo=0.5, sigma_hi=5.0).run(counted_c, counted_u)
    seen: list[int] = []

    class Recorder(Denoiser):
        def __call__(self, x, sigma):
            seen.append(guided.evaluations(sigma))
            return guided(x, sigma)

    sigmas = Karras(steps=10).run()
    state = Heun().init(torch.randn(64, 2, dtype=F64) * 80.0, sigmas)
    ctx = NodeContext.detached()
    run_steps(Heun(), Recorder(), state, NoiseSource(0), ctx)
    assert ctx.metrics["nfe"] == len(seen) == 19
    assert counted_c.calls + counted_u.calls == sum(seen) and counted_c.calls == 19 and 0 < counted_u.calls < 19


# --- the clamp pitfall ----------------------------------------------------------------------

def test_clamping_x0_without_recomputing_eps_reverses_guidance(cond, uncond):
    """At high noise CFG at scale 8 pushes x0 far outside the data range. Clamping that estimate is
    safe here because samplers derive eps = (x - x0) / sigma from the clamped x0; a DDIM-style step
    that keeps the guided eps instead moves x away from the class."""
    guided = CFG(scale=8.0).run(cond, uncond)
    toward = torch.tensor([math.cos(3 * math.pi / 8), math.sin(3 * math.pi / 8)], dtype=F64)  # class 1's centre
    gen = torch.Generator().manual_seed(0)
    for sigma, sigma_next in ((20.0, 18.0), (5.0, 4.5)):
        x = sigma * torch.randn(4096, 2, dtype=F64, generator=gen)  # (B, 2)
        s = torch.full((4096,), sigma, dtype=F64)
        x0 = guided(x, s)
        clamped = x0.clamp(-4.5, 4.5)
        clamp = FunctionDenoiser(lambda x_, s_: guided(x_, s_).clamp(-4.5, 4.5))
        start = Euler().init(x, Sigmas(torch.tensor([sigma, sigma_next], dtype=F64)))
        ours = Euler().step(clamp, start, NoiseSource(0)).x  # (B, 2) eps recomputed from the clamped x0
        assert torch.allclose(ours, clamped + sigma_next / sigma * (x - clamped), atol=1e-9)
        naive = clamped + sigma_next * (x - x0) / sigma  # stale eps of the unclamped guided estimate
        x0_u = uncond(x, s)
        unguided = x0_u + sigma_next / sigma * (x - x0_u)  # (B, 2)
        assert float(((ours - x) @ toward).mean()) > float(((unguided - x) @ toward).mean()) + 0.15
        assert float(((naive - x) @ toward).mean()) < -10.0


# --- composition with every solver family ---------------------------------------------------

SOLVERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral", "unipc")  # first order, Heun, multistep, SDE, UniPC


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_every_guidance_composes_with_every_solver(name, mix, cond, uncond):
    """Through the `sample` node, each guided Denoiser lands > 95% of samples in the class's modes."""
    sigmas = Karras(steps=16).run()
    ctx = NodeContext.detached(seed=0)
    latent = LatentNoise(batch=512, shape=[2], dtype="float64").run(sigmas, ctx)
    guided = GUIDES[name](cond, uncond, mix)
    registry = Registry.default(plugins=False)
    for solver_name in SOLVERS:
        x = Sample().run(guided, sigmas, registry.node_class(f"sampler.{solver_name}")(), latent, ctx)
        acc = accuracy(mix, x, LABEL)
        assert acc > 0.95, f"{name} + {solver_name}: accuracy {acc:.3f}"
    unguided = Sample().run(uncond, sigmas, Heun(), latent, ctx)
    assert accuracy(mix, unguided, LABEL) < 0.4  # the control: about 1/4 without conditioning
