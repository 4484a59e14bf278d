"""CFG++ (Chung et al. 2024) on an exact class-conditional Gaussian mixture: the re-noise contract
(Denoiser.estimates, separate_renoise, supports_renoise), parity with ComfyUI's sample_*_cfg_pp
formulas written out independently here, a hand-computed VP DDIM step of the paper, the exact
identities (lambda 0 = unconditional, outside the interval = the conditional step bit for bit),
NFE accounting, search strategies (BudgetDenoiser), and the refusal of samplers that would ignore
the re-noise estimate."""
import math

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.api import Registry
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.guidance.cfg_pp import CFGPP
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.rewards.reward import LinearReward
from samplegraph.nodes.samplers.ddim import Ddim
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.samplers.time_shift import TimeShift
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.best_of_n import BestOfN
from samplegraph.nodes.search.budget import Budget, BudgetDenoiser

F64 = torch.float64
LABEL = 1
SIGMAS = Karras(steps=12).run()


@pytest.fixture(scope="module")
def mix():
    return ModelGMM(preset="ring", modes=8, std=0.4, classes=[0, 0, 1, 1, 2, 2, 3, 3]).run()


@pytest.fixture(scope="module")
def cond(mix):
    return ModelCondition(label=LABEL).run(mix)


@pytest.fixture(scope="module")
def uncond(mix):
    return ModelCondition().run(mix)


def start(n: int = 256) -> torch.Tensor:
    return 80.0 * torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(3))  # (n, 2)


def solve(sampler, denoise, x, noise=NoiseSource(0)):
    return run_steps(sampler, denoise, sampler.init(x, SIGMAS), noise).x


def accuracy(mix, x: torch.Tensor) -> float:
    post = mix.class_log_posterior(x.to(F64), x.new_zeros(x.shape[0], dtype=F64))  # (B, C)
    return float((post.argmax(1) == LABEL).double().mean())


# --- ComfyUI's CFG++ samplers, written from their published formulas (comfy/k_diffusion/sampling.py) ---

def comfy_euler_ancestral_cfg_pp(c, u, lam, x, sigmas, eta, noise):
    """x = denoised + to_d(x, sigma, uncond) * sigma_down, then + noise * sigma_up (eta = 0: euler_cfg_pp)."""
    particle = torch.arange(x.shape[0])
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        sig = torch.full((x.shape[0],), float(s), dtype=F64)
        x0_u = u(x, sig)
        denoised = x0_u + lam * (c(x, sig) - x0_u)
        up = min(float(sn), eta * math.sqrt(float(sn) ** 2 * (float(s) ** 2 - float(sn) ** 2) / float(s) ** 2))
        down = math.sqrt(float(sn) ** 2 - up ** 2)
        x = denoised + (x - x0_u) / s * down
        if sn > 0 and eta > 0:
            x = x + noise.like(x, particle, i) * up
    return x


def comfy_dpmpp_2m_cfg_pp(c, u, lam, x, sigmas):
    """sample_dpmpp_2m_cfg_pp: x = denoised + denoised_mix + exp(-h) x, history = old uncond_denoised."""
    old_u = None
    for i in range(len(sigmas) - 1):
        sig = torch.full((x.shape[0],), float(sigmas[i]), dtype=F64)
        x0_u = u(x, sig)
        denoised = x0_u + lam * (c(x, sig) - x0_u)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_u is None or sigmas[i + 1] == 0:
            mix_ = -torch.exp(-h) * x0_u
        else:
            r = (t + sigmas[i - 1].log()) / h
            mix_ = -torch.exp(-h) * x0_u - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_u)
        x = denoised + mix_ + torch.exp(-h) * x
        old_u = x0_u
    return x


@pytest.mark.parametrize("lam", [0.4, 1.0])
def test_euler_and_ddim_match_comfyui_euler_cfg_pp(lam, cond, uncond):
    x = start()
    ref = comfy_euler_ancestral_cfg_pp(cond, uncond, lam, x, SIGMAS.values, 0.0, None)
    guided = CFGPP(scale=lam).run(cond, uncond)
    for sampler in (Euler(), Ddim(), EulerAncestral(eta=0.0)):
        assert torch.allclose(solve(sampler, guided, x), ref, atol=1e-10, rtol=1e-10), type(sampler).__name__


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_euler_ancestral_and_ddim_eta_match_comfyui_euler_ancestral_cfg_pp(eta, cond, uncond):
    """DDIM with eta is k-diffusion's ancestral split, so both equal ComfyUI's euler_ancestral_cfg_pp."""
    x, noise = start(), NoiseSource(7)
    ref = comfy_euler_ancestral_cfg_pp(cond, uncond, 0.8, x, SIGMAS.values, eta, noise)
    guided = CFGPP(scale=0.8).run(cond, uncond)
    assert torch.allclose(solve(EulerAncestral(eta=eta), guided, x, noise), ref, atol=1e-10, rtol=1e-10)
    assert torch.allclose(solve(Ddim(eta=eta), guided, x, noise), ref, atol=1e-10, rtol=1e-10)


def test_dpmpp_2m_matches_comfyui_dpmpp_2m_cfg_pp(cond, uncond):
    x = start()
    for lam in (0.3, 1.0):
        ref = comfy_dpmpp_2m_cfg_pp(cond, uncond, lam, x, SIGMAS.values)
        assert torch.allclose(solve(Dpmpp2M(), CFGPP(scale=lam).run(cond, uncond), x), ref, atol=1e-10, rtol=1e-10)


def test_one_ddim_step_is_the_papers_vp_update(cond, uncond):
    """Chung et al. (2024), Alg. 2: x_{t-1} = sqrt(a_{t-1}) x0_lambda + sqrt(1 - a_{t-1}) eps_u(x_t), in VP
    coordinates x_vp = sqrt(a) x with sigma^2 = (1 - a) / a."""
    a_t, a_prev, lam = 0.2, 0.5, 0.7
    sigma, sigma_prev = math.sqrt((1 - a_t) / a_t), math.sqrt((1 - a_prev) / a_prev)
    x = start(64) / 40.0  # (64, 2) at sigma = 2
    sig = torch.full((64,), sigma, dtype=F64)
    x_vp = math.sqrt(a_t) * x
    eps_u = (x_vp - math.sqrt(a_t) * uncond(x, sig)) / math.sqrt(1 - a_t)  # the unconditional eps-prediction
    x0_lam = uncond(x, sig) + lam * (cond(x, sig) - uncond(x, sig))
    x_prev_vp = math.sqrt(a_prev) * x0_lam + math.sqrt(1 - a_prev) * eps_u
    state = Ddim().init(x, Sigmas(torch.tensor([sigma, sigma_prev, 0.0], dtype=F64)))
    out = Ddim().step(CFGPP(scale=lam).run(cond, uncond), state, NoiseSource(0))
    assert torch.allclose(out.x, x_prev_vp / math.sqrt(a_prev), atol=1e-12, rtol=1e-12)
    assert torch.allclose(out.denoised, x0_lam, atol=1e-12)  # the state records the guided x0


def test_lambda_zero_is_the_unconditional_sampler_bit_for_bit(cond, uncond):
    x = start()
    for sampler in (Euler(), EulerAncestral(), Ddim(eta=0.5), Dpmpp2M()):
        assert torch.equal(solve(sampler, CFGPP(scale=0.0).run(cond, uncond), x), solve(sampler, uncond, x))


def test_outside_the_interval_it_is_the_conditional_step_bit_for_bit(cond, uncond):
    x = start()
    below = CFGPP(scale=1.0, sigma_hi=1e-3).run(cond, uncond)  # below sigma_min = 0.002: never active
    for sampler in (Euler(), EulerAncestral(), Dpmpp2M()):
        assert torch.equal(solve(sampler, below, x), solve(sampler, cond, x))
    sigma = torch.exp(torch.linspace(math.log(0.01), math.log(80.0), 256, dtype=F64))  # (256,)
    x0, x0_r = CFGPP(scale=0.6, sigma_lo=0.5, sigma_hi=5.0).run(cond, uncond).estimates(x, sigma)
    inside = (sigma > 0.5) & (sigma <= 5.0)
    assert inside.any() and (~inside).any()
    assert torch.equal(x0[~inside], cond(x, sigma)[~inside]) and torch.equal(x0_r[~inside], x0[~inside])
    assert torch.equal(x0_r[inside], uncond(x[inside], sigma[inside]))
    assert torch.allclose(x0[inside], CFG(scale=0.6).run(cond, uncond)(x, sigma)[inside], atol=1e-12)


def test_plain_denoisers_give_one_tensor_and_the_counter_forwards(cond, uncond):
    x, sigma = start(8), torch.full((8,), 3.0, dtype=F64)
    x0, x0_r = cond.estimates(x, sigma)
    assert x0 is x0_r and not cond.separate_renoise
    guided = CFGPP(scale=0.5, sigma_lo=1.0).run(cond, uncond)
    counted = CountingDenoiser(guided)
    assert counted.separate_renoise
    a, b = counted.estimates(x, sigma)
    assert counted.calls == 2 and torch.equal(a, guided(x, sigma)) and torch.equal(b, uncond(x, sigma))
    counted.estimates(x, sigma / 10)
    assert counted.calls == 3  # outside the interval only the conditional model runs


def test_nfe_counts_both_models_inside_the_interval(cond, uncond):
    ctx = NodeContext.detached()
    x = start()
    guided = CFGPP(scale=0.8, sigma_lo=0.5, sigma_hi=5.0).run(cond, uncond)
    run_steps(Dpmpp2M(), guided, Dpmpp2M().init(x, SIGMAS), NoiseSource(0), ctx)
    s = SIGMAS.values[:-1]
    assert ctx.metrics["nfe"] == 12 + int(((s > 0.5) & (s <= 5.0)).sum()) == sum(
        guided.evaluations(v[None]) for v in s)


def test_budget_denoiser_chunks_both_estimates_and_charges_once(cond, uncond):
    x, sigma = start(10), torch.linspace(0.1, 20.0, 10, dtype=F64)
    guided = CFGPP(scale=0.7, sigma_hi=5.0).run(cond, uncond)
    budget = Budget(groups=1)
    den = BudgetDenoiser(guided, budget, torch.zeros(10, dtype=torch.long), max_batch=3)
    got = den.estimates(x, sigma)
    assert den.separate_renoise and budget.calls == 1 and budget.chunks == 4
    for a, b in zip(got, guided.estimates(x, sigma)):
        assert torch.equal(a, b)
    plain = BudgetDenoiser(cond, budget, torch.zeros(10, dtype=torch.long), max_batch=3).estimates(x, sigma)
    assert plain[0] is plain[1]


@pytest.mark.parametrize("solver", ["heun", "unipc", "dpmpp_2m_sde", "lms"])
def test_samplers_that_ignore_the_renoise_estimate_are_refused(solver, cond, uncond):
    ctx = NodeContext.detached(seed=0)
    latent = LatentNoise(batch=8, shape=[2], dtype="float64").run(SIGMAS, ctx)
    sampler = Registry.default(plugins=False).node_class(f"sampler.{solver}")()
    with pytest.raises(NodeError, match="separate re-noise estimate.*sampler.euler"):
        Sample().run(CFGPP().run(cond, uncond), SIGMAS, sampler, latent, ctx)
    with pytest.raises(NodeError, match="re-noise"):  # a wrapper hides the estimates: refused too
        Sample().run(CFGPP().run(cond, uncond), SIGMAS, TimeShift().run(Euler()), latent, ctx)


def test_cfg_pp_composes_with_every_renoise_solver(mix, cond, uncond):
    """Through the `sample` node CFG++ concentrates samples on the class, more with larger lambda."""
    ctx = NodeContext.detached(seed=0)
    latent = LatentNoise(batch=512, shape=[2], dtype="float64").run(SIGMAS, ctx)
    base = accuracy(mix, Sample().run(uncond, SIGMAS, Euler(), latent, ctx))
    assert base < 0.4
    for solver in (Euler(), EulerAncestral(), Ddim(), Dpmpp2M()):
        accs = [accuracy(mix, Sample().run(CFGPP(scale=lam).run(cond, uncond), SIGMAS, solver, latent, ctx))
                for lam in (0.3, 1.0)]
        assert accs[1] > 0.95 and accs[1] >= accs[0] > base, (type(solver).__name__, accs)


def test_search_strategies_step_cfg_pp_through_the_budget_denoiser(cond, uncond):
    """best_of_n with one candidate per group is the plain sample: the chunked BudgetDenoiser hands the
    sampler both estimates, so CFG++ inside a search strategy matches the `sample` node."""
    ctx = NodeContext.detached(seed=0)
    latent = LatentNoise(batch=64, shape=[2], dtype="float64").run(SIGMAS, ctx)
    guided = CFGPP(scale=0.9).run(cond, uncond)
    searched = BestOfN(n=1, max_batch=24).run(guided, SIGMAS, EulerAncestral(), latent,
                                              LinearReward(torch.tensor([1.0, 0.0])), ctx)
    plain = Sample().run(guided, SIGMAS, EulerAncestral(), latent, ctx)
    assert torch.allclose(searched, plain, atol=1e-12, rtol=0)
    assert not torch.allclose(plain, Sample().run(CFG(scale=0.9).run(cond, uncond), SIGMAS, EulerAncestral(),
                                                  latent, ctx), atol=1e-3)



def test_search_strategies_refuse_cfg_pp_where_it_would_be_ignored(cond, uncond):
    """A strategy stepping with a sampler that ignores the re-noise estimate, or with its own kernel, refuses CFG++."""
    from samplegraph.nodes.samplers.heun import Heun
    from samplegraph.nodes.search.tds import Tds

    guided, reward = CFGPP(scale=0.6).run(cond, uncond), LinearReward(torch.tensor([1.0, 0.0]))
    with pytest.raises(NodeError, match="re-noise"):
        BestOfN(n=2).run(guided, SIGMAS, Heun(), start(4), reward, NodeContext.detached(seed=0))
    with pytest.raises(NodeError, match="re-noise"):
        Tds(particles=2).run(guided, SIGMAS, start(4), reward, NodeContext.detached(seed=0))
    BestOfN(n=2).run(guided, SIGMAS, Euler(), start(4), reward, NodeContext.detached(seed=0))  # supported: runs
