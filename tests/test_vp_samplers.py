"""The VP family in sigma space: exact identities between samplers (DDIM = Euler, DDPM = ancestral
Euler = the flow SDE at eta = 1), convergence orders of every UniPC / DEIS configuration, the
lower-order-final policies, distributions of the stochastic samplers on the GMM, marginal
preservation of the flow SDE, the time-shift wrapper and the per-step solver plan."""
import functools
import math

import numpy as np
import pytest
import torch

from peers import kdiffusion_sampling
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.denoiser import CountingDenoiser, FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.core.state import State, bcast
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.ddim import Ddim
from samplegraph.nodes.samplers.ddpm import Ddpm
from samplegraph.nodes.samplers.deis import Deis
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.flow_sde import FlowSde
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.lcm import Lcm
from samplegraph.nodes.samplers.plan import Plan
from samplegraph.nodes.samplers.restart import Restart
from samplegraph.nodes.samplers.time_shift import TimeShift, shifted_sigma
from samplegraph.nodes.samplers.unipc import UniPC
from samplegraph.nodes.samplers.vp_common import effective_order
from samplegraph.nodes.schedules.karras import Karras
from test_samplers import flow_reference, karras_to_end

F64 = torch.float64
GMM = ModelGMM().run()
NOISE = NoiseSource(3)


def start(n: int, sigmas: Sigmas, dtype: torch.dtype = F64, dim: int = 2) -> torch.Tensor:
    return sigmas.sigma_max * NOISE.normal(torch.arange(n), -1, (dim,), dtype=dtype)  # (n, dim)


def solve(sampler: Sampler, x: torch.Tensor, sigmas: Sigmas, denoise=GMM) -> torch.Tensor:
    return run_steps(sampler, denoise, sampler.init(x, sigmas), NOISE).x


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-12) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ---- identities -------------------------------------------------------------------------------

def test_ddim_eta_0_is_euler():
    sigmas = Karras(steps=12).run()
    x = start(256, sigmas)
    close(solve(Ddim(), x, sigmas), solve(Euler(), x, sigmas))


KD_IDENTITIES = [  # (ours, k-diffusion sampler, its kwargs): the same update in other words
    (Ddim(eta=0.5), "sample_euler_ancestral", {"eta": 0.5}),
    (Ddim(eta=1.0), "sample_euler_ancestral", {"eta": 1.0}),
    (Ddpm(), "sample_euler_ancestral", {"eta": 1.0}),
    (FlowSde(diffusion="forward", scale=1.0, solver_order=1), "sample_euler_ancestral", {"eta": 1.0}),
    (FlowSde(diffusion="forward", scale=0.5), "sample_dpmpp_2m_sde", {"eta": 0.25}),
    (FlowSde(diffusion="forward", scale=1.0), "sample_dpmpp_2m_sde", {"eta": 1.0}),
    (FlowSde(scale=0.0), "sample_dpmpp_2m", {}),
    (UniPC(corrector=False), "sample_dpmpp_2m", {}),  # UniP-2 with B2 and rho = 1/2 is DPM-Solver++(2M)
]


@pytest.mark.parametrize("sampler, name, kwargs", KD_IDENTITIES, ids=[f"{s!r}={n}" for s, n, _ in KD_IDENTITIES])
def test_identities_with_k_diffusion(sampler, name, kwargs):
    """DDIM(eta) and DDPM's posterior step are ancestral Euler; the flow SDE with the forward process's
    own g (eta = scale^2) is ancestral Euler (order 1) or DPM-Solver++(2M) SDE 'midpoint' (order 2), and
    without noise DPM-Solver++(2M), as is UniP-2 (bh2): float64, the same normals, ~1e-15 apart."""
    kd = kdiffusion_sampling()
    sigmas = Karras(steps=15).run()
    x = start(512, sigmas)
    index = {float(s): i for i, s in enumerate(sigmas.values)}
    noise_sampler = lambda s, s_next: NOISE.normal(torch.arange(512), index[float(s)], (2,), dtype=F64)  # noqa: E731
    if name != "sample_dpmpp_2m":
        kwargs = {**kwargs, "noise_sampler": noise_sampler}
    expected = getattr(kd, name)(GMM, x, sigmas.values, disable=True, **kwargs)
    dist = (solve(sampler, x, sigmas) - expected).norm(dim=1)
    assert float(dist.median()) < 1e-10 and float(dist.quantile(0.999)) < 1e-10, float(dist.max())


def test_flow_sde_without_noise_at_order_1_is_ddim():
    sigmas = Karras(steps=10).run()
    x = start(128, sigmas)
    close(solve(FlowSde(scale=0.0, solver_order=1), x, sigmas), solve(Ddim(), x, sigmas))


def test_ddpm_beta_variance_adds_more_noise_than_the_posterior():
    """fixed_large's variance (sigma^2 - s'^2)(1 + s'^2)/(1 + sigma^2) exceeds the posterior's
    s'^2 (sigma^2 - s'^2)/sigma^2 for every step; both have the posterior mean."""
    sigmas = Sigmas.of([10.0, 1.0])
    x, zero = start(8192, sigmas), FunctionDenoiser(lambda x, s: torch.zeros_like(x))
    posterior, beta = solve(Ddpm(), x, sigmas, zero), solve(Ddpm(variance="beta"), x, sigmas, zero)
    mean = x * 0.01  # x0 + (s'/s)^2 (x - x0) with x0 = 0
    var_post, var_beta = 1 * (100 - 1) / 100, (100 - 1) * 2 / 101
    assert abs(float((posterior - mean).var()) / var_post - 1) < 0.05
    assert abs(float((beta - mean).var()) / var_beta - 1) < 0.05


def test_lcm_denoises_and_renoises():
    sigmas = Sigmas.of([10.0, 2.0, 0.0])
    x = start(4, sigmas)
    state = Lcm().step(GMM, Lcm().init(x, sigmas), NOISE)
    z = NOISE.normal(torch.arange(4), 0, (2,), dtype=F64)
    close(state.x, GMM(x, torch.full((4,), 10.0, dtype=F64)) + 2.0 * z)
    last = Lcm().step(GMM, state, NOISE)
    close(last.x, GMM(state.x, torch.full((4,), 2.0, dtype=F64)))


# ---- convergence orders of every configuration ------------------------------------------------

COUNTS = [32, 64, 128]
CONFIGS = [  # (sampler, the order the fit must see): UniP-p is order p, UniC raises it to p + 1
    (UniPC(solver_order=1, corrector=False, lower_order_final="never"), 1),
    (UniPC(solver_order=2, corrector=False, lower_order_final="never"), 2),
    (UniPC(solver_order=3, corrector=False, lower_order_final="never"), 3),
    (UniPC(solver_order=1, lower_order_final="never"), 2),
    (UniPC(solver_order=2, lower_order_final="never"), 3),
    (UniPC(solver_order=2, variant="bh1", lower_order_final="never"), 3),
    (UniPC(solver_order=2, prediction="noise", lower_order_final="never"), 3),
    (UniPC(solver_order=3, lower_order_final="never"), 4),
    (Deis(solver_order=1, lower_order_final="never"), 1),
    (Deis(solver_order=2, lower_order_final="never"), 2),
    (Deis(solver_order=3, lower_order_final="never"), 3),
]


@functools.cache
def order_problem() -> tuple[torch.Tensor, torch.Tensor]:
    x = 80.0 * torch.randn(96, 2, generator=torch.Generator().manual_seed(0), dtype=F64)  # (B, 2)
    return x, flow_reference(GMM, x)


@pytest.mark.parametrize("sampler, order", CONFIGS, ids=[repr(s) for s, _ in CONFIGS])
def test_convergence_order_of_each_configuration(sampler, order):
    """Median error against DOP853 over Karras grids 80 -> 0.02 falls like steps^-order (slope within 0.35;
    3rd-order eps extrapolation (DEIS-3) is still pre-asymptotic here: 2.8)."""
    assert sampler.step_order == order
    x, reference = order_problem()
    errors = [float((solve(sampler, x, karras_to_end(n)) - reference).norm(dim=1).median()) for n in COUNTS]
    slope = -np.polyfit(np.log(COUNTS), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.35, (errors, slope)


def test_default_declarations_are_what_the_order_fit_sees():
    assert (Ddim.order, UniPC.order, Deis.order, FlowSde.order) == (1, 3, 2, 2)  # UniPC default: UniP-2 + UniC
    assert not (Ddim.stochastic or UniPC.stochastic or Deis.stochastic)
    assert Ddpm.stochastic and Lcm.stochastic and FlowSde.stochastic
    assert all(c.nfe_per_step == 1 for c in (Ddim, Ddpm, UniPC, Deis, Lcm, FlowSde))
    assert UniPC(corrector=False).step_order == 2 and Ddim(eta=0.5).draws_noise and not FlowSde(scale=0).draws_noise


@pytest.mark.parametrize("steps, zero_end, policy, expected", [
    (10, True, "always", [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]),
    (10, True, "under_15_steps", [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]),
    (10, False, "never", [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]),
    (10, True, "never", [1, 2, 3, 3, 3, 3, 3, 3, 3, 1]),  # a step to sigma = 0 is always first order
    (16, False, "under_15_steps", [1, 2] + [3] * 14),
    (16, False, "always", [1, 2] + [3] * 12 + [2, 1]),
])
def test_lower_order_final_policies(steps, zero_end, policy, expected):
    sigmas = torch.linspace(10, 1, steps + 1, dtype=F64)
    if zero_end:
        sigmas[-1] = 0
    assert effective_order(torch.arange(steps), sigmas, 3, policy).tolist() == expected


# ---- distributions of the stochastic samplers -------------------------------------------------

STOCHASTIC = [FlowSde(), FlowSde(frame="linear"), FlowSde(diffusion="constant", scale=1.0),
              FlowSde(diffusion="forward", scale=1.0), FlowSde(diffusion="sin", scale=2.0, noise="brownian")]


@pytest.mark.parametrize("sampler", STOCHASTIC, ids=[repr(s) for s in STOCHASTIC])
def test_distribution_at_50_steps(sampler):
    """8 equal modes, std 0.5, 32768 samples: mode weights within 0.03 total variation, the pooled within-mode
    variance within 7% and every mode's variance within 4 standard errors (1 / sqrt(n_k)) of the pooled one.
    The pooled variance is a real discretisation bias at 50 steps, not noise: measured 1.01-1.02 (1.04 for
    the constant g) over seeds 0-5, 1.00 at 100 steps; one mode's variance from 1024 samples has a 3% standard
    error, which is why a per-mode 10% bound at 8192 samples failed for some seeds."""
    sigmas = Karras(steps=50).run()
    x = solve(sampler, start(32768, sigmas, torch.float32), sigmas).double()
    weights = GMM.mode_weights_of(x)  # (8,)
    assert 0.5 * float((weights - GMM.weights).abs().sum()) < 0.03, weights
    mode = GMM.assign(x)  # (N,)
    counts = torch.bincount(mode, minlength=8).double()  # (8,)
    var = torch.stack([x[mode == k].var(0).mean() / 0.25 for k in range(8)])  # (8,) relative to 0.25
    pooled = float((var * counts).sum() / counts.sum())
    assert abs(pooled - 1) < 0.07, (pooled, var)
    assert bool(((var - pooled).abs() < 4 / counts.sqrt()).all()), (pooled, var, counts)


@pytest.mark.parametrize("sampler", [FlowSde(), FlowSde(frame="linear", diffusion="sigma", scale=2.0),
                                     FlowSde(diffusion="forward", scale=1.0)], ids=repr)
def test_flow_sde_keeps_gaussian_marginals_on_the_way(sampler):
    """Gaussian data N(0, 0.7^2): every intermediate x must be N(0, 0.49 + sigma^2), whatever g: the
    noise raises the variance exactly as much as the stronger drift removes (100 steps; 1024 x 64
    values: 0.6% sampling error; measured worst 1.8%)."""
    sigmas = Karras(steps=100, sigma_max=20.0).run()
    denoise = FunctionDenoiser(lambda x, s: x * (0.49 / (0.49 + bcast(s, x) ** 2)))
    state = sampler.init(start(1024, sigmas, dim=64), sigmas)
    for i in range(100):
        state = sampler.step(denoise, state, NOISE)
        if i % 9 == 8 or i == 99:
            expected = 0.49 + float(sigmas.values[i + 1]) ** 2
            assert abs(float(state.x.var()) / expected - 1) < 0.03, (i, float(state.x.var()), expected)


def test_flow_sde_eta_is_the_frame_noise_mapped_to_sigma_space():
    """eta = g^2 / (2 sigma c^2 dsigma/dtau) for state scale c = x_frame / x and frame time tau,
    checked against finite differences of the frames' sigma(tau)."""
    sigma = torch.tensor([0.05, 0.7, 3.0, 40.0], dtype=F64)
    linear = FlowSde(frame="linear", diffusion="square", scale=1.5)
    t = sigma / (1 + sigma)
    dsig = ((t + 1e-6) / (1 - t - 1e-6) - (t - 1e-6) / (1 - t + 1e-6)) / 2e-6
    close(linear.eta(sigma), (1.5 * t ** 2) ** 2 / (2 * sigma * (1 - t) ** 2 * dsig), 1e-6)
    vp = FlowSde(frame="vp", diffusion="linear", scale=2.0, beta_min=0.1, beta_max=20.0)
    big_t = lambda r: 0.1 * r + 19.9 * r ** 2 / 2  # noqa: E731
    r = (torch.sqrt(0.01 + 2 * 19.9 * torch.log1p(sigma ** 2)) - 0.1) / 19.9
    dsig = (torch.sqrt(torch.expm1(big_t(r + 1e-6))) - torch.sqrt(torch.expm1(big_t(r - 1e-6)))) / 2e-6
    close(vp.eta(sigma), (2.0 * r) ** 2 / (2 * sigma * torch.exp(-big_t(r)) * dsig), 1e-5)


# ---- the time-shift wrapper -------------------------------------------------------------------

def test_time_shift_without_window_or_above_cutoff_is_the_inner_sampler():
    sigmas = Karras(steps=8, sigma_max=20.0).run()
    x = start(64, sigmas)
    for inner in (UniPC(), Ddpm()):
        close(solve(TimeShift(window=0.0).run(inner), x, sigmas), solve(inner, x, sigmas), 0)
        close(solve(TimeShift(cutoff_sigma=100.0).run(inner), x, sigmas), solve(inner, x, sigmas), 0)


@pytest.mark.parametrize("space", ["vp", "ve"])
def test_time_shift_matches_the_variance_of_its_input(space):
    """Data at one point, x = s eps: 've' recovers s; 'vp' the level whose 1 - alpha_bar is Var(x_vp) =
    s^2 / (1 + sigma^2), the same x_vp at another time (<1% at 65536 elements). Windows clamp; the
    cutoff leaves low levels alone."""
    s = torch.tensor([2.0, 5.0], dtype=F64)
    x = s[:, None] * NOISE.normal(torch.arange(2), 0, (65536,), dtype=F64)  # (2, 65536)
    nominal = 1.2 * s
    v = s ** 2 / (1 + nominal ** 2)
    match = s if space == "ve" else (v / (1 - v)).sqrt()
    assert torch.allclose(shifted_sigma(x, nominal, 3.0, 0.0, space), match, rtol=0.02)
    close(shifted_sigma(x, nominal, 0.1, 0.0, space), nominal * math.exp(-0.1))
    assert torch.allclose(shifted_sigma(x, nominal, 3.0, 3.0, space), torch.stack([nominal[0], match[1]]), rtol=0.02)


def test_time_shift_calls_the_model_once_per_call_at_the_shifted_level_with_the_same_vp_input():
    seen = []

    def record(x, sigma):
        seen.append((x.clone(), sigma.clone()))
        return torch.zeros_like(x)

    sigmas = Sigmas.of([12.0, 6.0, 0.0])
    x = start(3, sigmas, dim=16)
    sampler = TimeShift(window=0.3, cutoff_sigma=0.0).run(Euler())
    counted = CountingDenoiser(FunctionDenoiser(record))
    run_steps(sampler, counted, sampler.init(x, sigmas), NOISE)
    assert counted.calls == 2 and len(seen) == 2
    x_in, sigma_in = seen[0]
    expected = shifted_sigma(x, torch.full((3,), 12.0, dtype=F64), 0.3, 0.0, "vp")
    close(sigma_in, expected)
    close(x_in / (1 + sigma_in[:, None] ** 2).sqrt(), x / math.sqrt(1 + 144))  # the network's x_vp is unchanged


def test_time_shift_declares_the_inner_samplers_order_cost_and_noise():
    """The contract itself (batch split, gathering, NFE, noise) is checked by test_sampler_conformance."""
    for inner in (UniPC(solver_order=3), UniPC(corrector=False), Ddpm(), Ddim(eta=0.5), Heun(s_churn=1.0)):
        wrapped = TimeShift(window=0.2, cutoff_sigma=0.5).run(inner)
        assert (wrapped.step_order, wrapped.step_nfe, wrapped.draws_noise, wrapped.adapts_steps) == \
            (inner.step_order, inner.step_nfe, inner.draws_noise, inner.adapts_steps)


# ---- the per-step solver plan -----------------------------------------------------------------

def test_plan_runs_each_sampler_on_its_segment_as_a_fresh_run():
    sigmas = Karras(steps=10).run()
    x = start(64, sigmas)
    plan = Plan(switch_at=[4]).run([UniPC(solver_order=3), Heun()])
    head = solve(UniPC(solver_order=3), x, Sigmas(sigmas.values[:5]))
    close(solve(plan, x, sigmas), solve(Heun(), head, Sigmas(sigmas.values[4:])), 0)
    assert (plan.step_order, plan.step_nfe, plan.draws_noise) == (2, 2, False)  # lowest order, largest NFE
    assert Plan(switch_at=[4]).run([Ddim(), Ddim(eta=1.0)]).draws_noise


def test_plan_keeps_noise_keyed_by_the_global_step():
    sigmas = Karras(steps=10).run()
    x = start(64, sigmas)
    plan = Plan(switch_at=[3, 7]).run([Ddpm(), Ddpm(), Ddpm()])
    close(solve(plan, x, sigmas), solve(Ddpm(), x, sigmas), 0)


def test_plan_steps_particles_of_different_segments_together_and_gathers():
    sigmas = Karras(steps=10).run()
    plan = Plan(switch_at=[4]).run([UniPC(), FlowSde()])
    early = plan.init(start(3, sigmas), sigmas)
    late = plan.init(start(3, sigmas) * 0.9, sigmas, torch.arange(3, 6))
    for _ in range(2):
        early = plan.step(GMM, early, NOISE)
    for _ in range(6):
        late = plan.step(GMM, late, NOISE)
    mixed = plan.step(GMM, State.cat([early, late]), NOISE)
    close(mixed.x, State.cat([plan.step(GMM, early, NOISE), plan.step(GMM, late, NOISE)]).x)
    idx = torch.tensor([5, 0, 0, 3])
    close(plan.step(GMM, mixed[idx], NOISE).x, plan.step(GMM, mixed, NOISE).x[idx])


def test_plan_rejects_a_plan_that_does_not_fit_its_samplers():
    with pytest.raises(NodeError, match="one sampler per segment"):
        Plan(switch_at=[3]).run([Euler()])
    with pytest.raises(NodeError, match="increasing"):
        Plan(switch_at=[5, 5]).run([Euler(), Euler(), Euler()])
    with pytest.raises(NodeError, match="rewrites the schedule"):
        Plan(switch_at=[5]).run([Euler(), Restart()])


def test_wrappers_pickle_and_compare_equal():
    """The samplers time_shift and plan build are plain module-level classes: pickle round-trips them."""
    import pickle

    for sampler in (TimeShift(window=0.2).run(UniPC(solver_order=3)), Plan(switch_at=[3]).run([UniPC(), Euler()])):
        again = pickle.loads(pickle.dumps(sampler))
        assert again == sampler and type(again) is type(sampler)
