"""Guidance nodes that need a real network, on the shipped digits models: CADS (condition-annealed
sampling: identities, reproducible and batch-split-invariant condition noise, more diversity at a
high CFG scale with the class kept), skip-layer guidance with model.skip_blocks, and GFCG with the
clean or the noisy digits classifier on the weak model (whose own samples miss their class often enough to
measure; the main model is already at the ceiling), and reward-gradient guidance of the unconditional
model by the clean classifier's log p(3 | x0) through the network."""
import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.api import Registry
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.guidance.cads import CADS, row_normals
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.guidance.gfcg import GFCG
from samplegraph.nodes.guidance.reward_gradient import RewardGradient
from samplegraph.nodes.guidance.skip_layer import SkipLayerGuidance
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.digits_noisy_classifier import ModelDigitsNoisyClassifier
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.models.skip_blocks import ModelSkipBlocks
from samplegraph.nodes.rewards.classifier import RewardClassifier
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.karras import Karras

LABEL = 3


@pytest.fixture(scope="module")
def digits():
    return ModelDigits().run()


@pytest.fixture(scope="module")
def cond(digits):
    return ModelCondition(label=LABEL).run(digits)


@pytest.fixture(scope="module")
def uncond(digits):
    return ModelCondition().run(digits)


def probe(n: int = 48, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n).uniform_(-5.0, 4.3, generator=gen))  # (n,) 0.007..74
    return torch.randn(n, 8, 8, generator=gen) * sigma[:, None, None], sigma


def sample(denoise, n: int = 96, steps: int = 10) -> torch.Tensor:
    sigmas = Karras(steps=steps).run()
    x = torch.randn(n, 8, 8, generator=torch.Generator().manual_seed(0)) * 80.0  # (n, 8, 8)
    return run_steps(Euler(), denoise, Euler().init(x, sigmas), NoiseSource(0)).x


def nearest_mean_accuracy(x: torch.Tensor, label: int) -> float:
    """Share of samples nearest (in pixels) to the train-split mean image of `label`."""
    imgs, labels = digits_split("train")
    means = torch.stack([imgs[labels == c].mean(0) for c in range(10)]).flatten(1)  # (10, 64)
    return float((torch.cdist(x.flatten(1), means).argmin(1) == label).double().mean())


def diversity(x: torch.Tensor) -> float:
    return float(torch.pdist(x.flatten(1)).mean())


# --- CADS -------------------------------------------------------------------------------------

def test_cads_identities(cond):
    ctx = NodeContext.detached(seed=0)
    x, sigma = probe()
    gamma = CADS().gamma(sigma, 0.002, 80.0)
    clean = gamma == 1
    assert clean.any() and (~clean).any()
    annealed = CADS().run(cond, ctx)
    out = annealed(x, sigma)
    assert torch.equal(out[clean], cond(x[clean], sigma[clean]))  # gamma = 1: the plain condition, bit for bit
    assert not torch.allclose(out[~clean], cond(x[~clean], sigma[~clean]), atol=1e-3)
    quiet = CADS(noise_scale=0.0, psi=1.0).run(cond, ctx)(x, sigma)  # s = 0: sqrt(gamma) y rescaled back to y
    some = gamma > 0  # at gamma = 0 the condition is s n = 0 itself
    assert (~some).any() and torch.allclose(quiet[some], cond(x, sigma)[some], atol=2e-5, rtol=0)
    assert annealed.evaluations(sigma) == 1


def test_cads_schedule_is_the_papers_piecewise_linear_gamma():
    rule = CADS(tau1=0.6, tau2=0.9)
    t = torch.tensor([0.0, 0.3, 0.6, 0.7, 0.75, 0.9, 1.0], dtype=torch.float64)
    sigma = 0.002 * (80.0 / 0.002) ** t
    expect = torch.tensor([1.0, 1.0, 1.0, 2 / 3, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(rule.gamma(sigma, 0.002, 80.0), expect, atol=1e-9)
    with pytest.raises(ValidationError, match="greater than tau1"):
        CADS(tau1=0.7, tau2=0.5)


def test_cads_noise_is_reproducible_and_batch_split_invariant(cond):
    x, sigma = probe()
    n = row_normals(7, x, sigma, 64)
    assert torch.equal(torch.cat([row_normals(7, x[:20], sigma[:20], 64), row_normals(7, x[20:], sigma[20:], 64)]), n)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    assert torch.equal(row_normals(7, x[perm], sigma[perm], 64), n[perm])
    assert not torch.equal(row_normals(8, x, sigma, 64), n)
    assert abs(float(n.mean())) < 0.05 and abs(float(n.std()) - 1) < 0.05
    a, b = CADS().run(cond, NodeContext.detached(seed=3)), CADS().run(cond, NodeContext.detached(seed=3))
    assert torch.equal(a(x, sigma), b(x, sigma))
    assert torch.allclose(torch.cat([a(x[:20], sigma[:20]), a(x[20:], sigma[20:])]), a(x, sigma), atol=1e-5)


def test_cads_raises_diversity_at_high_cfg_and_keeps_the_class(cond, uncond):
    """CFG 4 collapses the samples; CADS's annealed condition spreads them (mean pairwise pixel distance
    grows with the noise scale) while nearly all stay the target digit."""
    ctx = NodeContext.detached(seed=0)
    runs = [sample(CFG(scale=4.0).run(cond, uncond))] + [
        sample(CFG(scale=4.0).run(CADS(noise_scale=s).run(cond, ctx), uncond)) for s in (0.5, 2.0)]
    div = [diversity(x) for x in runs]
    assert div[0] < div[1] < div[2] and div[2] > div[0] + 0.2, div
    assert min(nearest_mean_accuracy(x, LABEL) for x in runs) > 0.85


def test_cads_composes_with_every_solver_family(cond, uncond):
    """12 steps: at 8, Heun with plain CFG 3 already lands only ~47% on a 3 (too coarse from sigma 80)."""
    ctx = NodeContext.detached(seed=0)
    guided = CFG(scale=3.0).run(CADS(noise_scale=0.5).run(cond, ctx), uncond)
    sigmas = Karras(steps=12).run()
    x = torch.randn(32, 8, 8, generator=torch.Generator().manual_seed(0)) * 80.0  # (32, 8, 8)
    registry = Registry.default(plugins=False)
    for name in ("euler", "heun", "dpmpp_2m", "euler_ancestral", "unipc"):
        sampler = registry.node_class(f"sampler.{name}")()
        out = run_steps(sampler, guided, sampler.init(x, sigmas), NoiseSource(0)).x
        assert nearest_mean_accuracy(out, LABEL) > 0.85, name


def test_cads_needs_a_condition_embedding():
    mix = ModelGMM(preset="ring", modes=8, classes=[0, 0, 1, 1, 2, 2, 3, 3]).run()
    with pytest.raises(NodeError, match="no condition embedding.*guidance.cads"):
        CADS().run(ModelCondition(label=1).run(mix), NodeContext.detached(seed=0))


# --- skip-layer guidance ----------------------------------------------------------------------

def test_skip_layer_guidance_on_the_digits_network(cond, uncond):
    x, sigma = probe()
    skipped = ModelSkipBlocks(blocks=[1]).run(cond)
    assert not torch.allclose(skipped(x, sigma), cond(x, sigma), atol=1e-3)
    cfg = CFG(scale=2.0).run(cond, uncond)(x, sigma)
    assert torch.equal(SkipLayerGuidance(scale=2.0, skip_scale=0.0).run(cond, uncond, skipped)(x, sigma), cfg)
    assert torch.equal(SkipLayerGuidance(scale=2.0, skip_scale=3.0).run(cond, uncond, cond)(x, sigma), cfg)
    slg = SkipLayerGuidance(scale=2.0, skip_scale=3.0, sigma_lo=0.1, sigma_hi=10.0).run(cond, uncond, skipped)
    out = slg(x, sigma)
    inside = (sigma > 0.1) & (sigma <= 10.0)
    assert torch.equal(out[~inside], cfg[~inside])
    assert torch.allclose(out[inside], cfg[inside] + 3.0 * (cond(x, sigma) - skipped(x, sigma))[inside], atol=1e-5)
    samples = sample(slg, n=48)
    assert nearest_mean_accuracy(samples, LABEL) > 0.85 and samples.abs().max() < 3.0


# --- GFCG -------------------------------------------------------------------------------------

def test_gfcg_raises_the_weak_models_class_accuracy():
    """Digit 8 from the weak model: the conditional alone lands ~80% on an 8 (nearest train-mean image, a
    measure independent of the guiding classifier), GFCG without CFG ~90%, and with CFG 1.5 GFCG beats
    CFG 1.5 alone; ref_scale 0 is exactly the unguided / CFG estimate."""
    weak = ModelDigits(variant="weak").run()
    clf = ModelDigitsClassifier().run()
    c, u = ModelCondition(label=8).run(weak), ModelCondition().run(weak)
    x, sigma = probe()
    assert torch.equal(GFCG(label=8, scale=1.5, ref_scale=0.0).run(c, u, weak, clf)(x, sigma),
                       CFG(scale=1.5).run(c, u)(x, sigma))
    plain = nearest_mean_accuracy(sample(c), 8)
    alone = nearest_mean_accuracy(sample(GFCG(label=8, scale=1.0, ref_scale=3.0).run(c, u, weak, clf)), 8)
    cfg = nearest_mean_accuracy(sample(CFG(scale=1.5).run(c, u)), 8)
    both = nearest_mean_accuracy(sample(GFCG(label=8, scale=1.5, ref_scale=3.0).run(c, u, weak, clf)), 8)
    assert alone > plain + 0.05 and both > cfg + 0.01, (plain, alone, cfg, both)


def test_gfcg_with_the_noisy_digits_classifier_raises_the_weak_models_class_accuracy():
    """The same setting judged by model.digits_noisy_classifier on x_sigma (not the clean verifier): ref_scale
    0 is exactly CFG; measured by nearest train-mean image, the conditional's ~79% 8s rise to ~99% with GFCG
    alone and CFG 1.5's ~95% to 100% with GFCG on top."""
    weak = ModelDigits(variant="weak").run()
    judge = ModelDigitsNoisyClassifier().run()
    c, u = ModelCondition(label=8).run(weak), ModelCondition().run(weak)
    x, sigma = probe()
    assert torch.equal(GFCG(label=8, scale=1.5, ref_scale=0.0).run(c, u, weak, noisy_classifier=judge)(x, sigma),
                       CFG(scale=1.5).run(c, u)(x, sigma))
    plain = nearest_mean_accuracy(sample(c), 8)
    alone = nearest_mean_accuracy(sample(GFCG(label=8, scale=1.0, ref_scale=2.0).run(c, u, weak,
                                                                                     noisy_classifier=judge)), 8)
    cfg = nearest_mean_accuracy(sample(CFG(scale=1.5).run(c, u)), 8)
    both = nearest_mean_accuracy(sample(GFCG(label=8, scale=1.5, ref_scale=2.0).run(c, u, weak,
                                                                                    noisy_classifier=judge)), 8)
    assert alone > plain + 0.1 and both > cfg + 0.03, (plain, alone, cfg, both)


# --- reward-gradient guidance through a real network ------------------------------------------

def test_reward_gradient_steers_the_unconditional_model_to_a_class(uncond):
    """r = log p(3 | x0) of the clean classifier, differentiated through the denoiser: the mean reward
    and the share of 3s (by the independent nearest-mean measure) rise with the scale."""
    reward = RewardClassifier(label=LABEL).run(ModelDigitsClassifier().run())
    rewards, shares = [], []
    for scale in (0.0, 0.2, 1.0):
        x = sample(RewardGradient(scale=scale, sigma_hi=20.0).run(uncond, reward), n=64)
        with torch.no_grad():
            rewards.append(float(reward(x).mean()))
        shares.append(nearest_mean_accuracy(x, LABEL))
    assert rewards[0] < rewards[1] < rewards[2] and shares[0] < 0.1 < 0.4 < shares[1] < shares[2], (rewards, shares)
