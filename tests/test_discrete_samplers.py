"""Discrete samplers against exact enumeration of model.exact_discrete: ancestral and first-hitting
reproduce the exact distribution (and the exact infill conditional) and agree; first-hitting needs
fewer denoiser calls; tau-leaping and the uniform-noise sampler converge as steps grow; draws are
batch-split invariant; float32 draws under-sample a token whose race ratio is below float32's grid."""
from __future__ import annotations

import math

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.denoiser import CountingDiscreteDenoiser
from samplegraph.nodes.discrete.exact import (all_sequences, empirical, exact_distribution, expected_tv,
                                              sequence_logprob, total_variation)
from samplegraph.nodes.discrete.exact_model import ModelExactDiscrete
from samplegraph.nodes.discrete.sample import DiscreteSample
from samplegraph.nodes.discrete.sampler import run_discrete
from samplegraph.nodes.discrete.samplers.ancestral import Ancestral
from samplegraph.nodes.discrete.samplers.first_hitting import FirstHitting
from samplegraph.nodes.discrete.samplers.tau_leaping import TauLeaping
from samplegraph.nodes.discrete.samplers.uniform import Uniform, uniform_bridge
from samplegraph.nodes.discrete.schedules.linear import Linear, LinearSchedule
from samplegraph.nodes.discrete.schedules.polynomial import PolynomialSchedule
from samplegraph.nodes.discrete.state import DiscreteState
from samplegraph.nodes.discrete.template import DiscreteInfill, DiscreteTemplate
from samplegraph.nodes.metrics.discrete_exact import MetricDiscreteExact

N = 20_000  # samples per distribution test
L = 5  # 4^5 = 1024 sequences, 364 of them possible
SLACK = 1.25  # tolerance = SLACK * E[TV of N exact draws]; TV's spread at N is ~0.05 E[TV]


def draw(sampler, steps: int, noise: str = "masked", template=None, n: int = N, seed: int = 0):
    """(tokens (n, L), recorded metrics, the model) of one discrete.sample run."""
    den = ModelExactDiscrete(length=L, noise=noise).run()
    ctx = NodeContext.detached(seed=seed)
    out = DiscreteSample(particles=n).run(den, Linear(steps=steps).run(), sampler,
                                          template or DiscreteTemplate(length=L).run(), ctx)
    return out, ctx.metrics, den


def tv_to_exact(out, den) -> tuple[float, float]:
    exact = exact_distribution(den)
    return total_variation(empirical(out.tokens), exact), SLACK * expected_tv(exact, out.tokens.shape[0])


def test_first_hitting_and_ancestral_reproduce_the_exact_distribution_with_fewer_calls():
    fh, fh_nfe, den = draw(FirstHitting(), 32)
    anc, anc_nfe, _ = draw(Ancestral(), 128)
    _, uncached, _ = draw(Ancestral(reuse_x0=False), 128, n=2000)
    exact = exact_distribution(den)
    floor = expected_tv(exact, N)
    tv_fh, tv_anc = total_variation(empirical(fh.tokens), exact), total_variation(empirical(anc.tokens), exact)
    between = total_variation(empirical(fh.tokens), empirical(anc.tokens))
    print(f"\nTV at N={N} (E[TV] of exact draws {floor:.4f}): first-hitting {tv_fh:.4f}, ancestral(128) {tv_anc:.4f}, "
          f"between {between:.4f}")
    print(f"NFE (batched calls): first-hitting {fh_nfe['nfe']}, ancestral {anc_nfe['nfe']}, ratio "
          f"{fh_nfe['nfe'] / anc_nfe['nfe']:.4f}; rows per sample: first-hitting {fh_nfe['denoiser_rows'] / N:.3f}, "
          f"ancestral cached {anc_nfe['denoiser_rows'] / N:.3f}, uncached {uncached['denoiser_rows'] / 2000:.2f}")
    assert tv_fh < SLACK * floor and tv_anc < SLACK * floor
    assert between < SLACK * math.sqrt(2) * floor  # two independent empirical sets of N
    assert fh_nfe["nfe"] == L and fh_nfe["denoiser_rows"] == L * N  # one call per token
    assert fh_nfe["nfe"] / anc_nfe["nfe"] < 0.1
    assert fh_nfe["denoiser_rows"] / N < uncached["denoiser_rows"] / 2000


def test_ancestral_cache_of_x0_changes_no_token():
    cached, c_nfe, _ = draw(Ancestral(), 64, n=500, seed=3)
    fresh, f_nfe, _ = draw(Ancestral(reuse_x0=False), 64, n=500, seed=3)
    assert torch.equal(cached.tokens, fresh.tokens)
    assert c_nfe["denoiser_rows"] < f_nfe["denoiser_rows"] / 5


@pytest.mark.parametrize("sampler,steps", [(FirstHitting(), 16), (Ancestral(), 64)])
def test_infill_reproduces_the_exact_conditional(sampler, steps):
    tpl = DiscreteInfill(text="a__b_").run()
    out, _, den = draw(sampler, steps, template=tpl)
    given, fixed = out.tokens[0], out.fixed[0]
    assert fixed.tolist() == [True, False, False, True, False]
    exact = exact_distribution(den, given, fixed)
    tv = total_variation(empirical(out.tokens), exact)
    ctx = NodeContext.detached()
    metric = MetricDiscreteExact().run(out, den, ctx)
    assert metric.total_variation == pytest.approx(tv, abs=1e-12)
    assert metric.expected_tv == pytest.approx(expected_tv(exact, N), rel=1e-9) and math.isfinite(metric.kl)
    assert tv < SLACK * metric.expected_tv, (tv, metric.expected_tv)


@pytest.mark.parametrize("sampler,noise,final", [(TauLeaping(), "masked", 128), (Uniform(), "uniform", 64)])
def test_step_samplers_converge_to_the_exact_distribution(sampler, noise, final):
    tvs = []
    for steps in (4, 16, final):
        out, _, den = draw(sampler, steps, noise)
        tvs.append(tv_to_exact(out, den))
    print(f"\n{type(sampler).__name__} TV at steps 4, 16, {final}: {[round(t, 4) for t, _ in tvs]} "
          f"(tolerance {tvs[0][1]:.4f})")
    assert tvs[0][0] > tvs[1][0] > tvs[2][0]
    assert tvs[0][0] > 2 * tvs[0][1] and tvs[2][0] < tvs[2][1]


def test_tau_leaping_jump_probability_is_exact_to_first_order():
    sched = LinearSchedule(1)
    t = torch.tensor([0.9, 0.5], dtype=torch.float64)
    gaps = []
    for tau in (0.02, 0.01):
        exact = sched.unmask_probability(t, t - tau)
        gaps.append((TauLeaping().jump_probability(sched, t, t - tau) - exact).abs())
    assert torch.allclose(gaps[0] / gaps[1], torch.full_like(t, 4.0), rtol=0.05)  # O(tau^2) per leap


@pytest.mark.parametrize("sampler,noise", [(Ancestral(), "masked"), (FirstHitting(), "masked"),
                                           (TauLeaping(), "masked"), (Uniform(), "uniform")])
def test_rows_in_two_batches_give_identical_tokens(sampler, noise):
    den = ModelExactDiscrete(length=L, noise=noise).run()
    noise_source = NoiseSource(11)
    state, _, _ = DiscreteInfill(text="_b___").run().start(den, 40, noise_source)
    sched = LinearSchedule(16)
    whole = run_discrete(sampler, den, sched, state, noise_source)
    parts = [run_discrete(sampler, den, sched, state[idx], noise_source)
             for idx in (torch.arange(0, 13), torch.arange(13, 40))]
    assert torch.equal(whole.tokens, DiscreteState.cat(parts).tokens)
    assert torch.equal(whole.revealed, DiscreteState.cat(parts).revealed)


class LatticeNoise:
    """A stand-in NoiseSource whose uniforms are a given lattice (B, 1, V): the sampler's draw becomes
    a quadrature of its outcome probability over the noise, exact up to the lattice's resolution."""

    def __init__(self, u: torch.Tensor):
        self.u = u

    def uniform(self, particle, step, shape, slot=0, dtype=torch.float64, device=None):
        return self.u

    def gumbel(self, particle, step, shape, slot=0, dtype=torch.float64, device=None):
        return -torch.log(-torch.log(self.u))


def float32_ratio(c: float) -> float:
    """P32 / P_exact of a token whose race ratio to the mask is r = c 2^-24: float32's E = -log(u) of
    the token takes the values ~ j 2^-24 (j = 1, 2, ...) w.p. 2^-24 each, so P32 = sum_j 2^-24
    exp(-j 2^-24 / r) = r (1/c) / (e^(1/c) - 1)."""
    return (1.0 / c) / math.expm1(1.0 / c)


@pytest.mark.parametrize("c", [0.25, 1.0, 4.0])
def test_float32_draws_under_sample_tokens_below_the_float32_grid(c):
    """One ancestral step from all-masked (L = 1) whose unmask probability rho gives token b a race
    ratio rho p(b) / (1 - rho) = c 2^-24 to the stay-masked outcome (MDLM at many steps: Zheng et al.
    2024). The step's P(b) is integrated over a lattice of the noise (b's uniform near 1 in 8 points
    per float32 cell, the mask's race time E_m = -log u on cells of 0.01; the other tokens never win): float64 gives
    the exact P(b) = rho p(b), float32 the analytic float32_ratio(c) of it."""
    den = ModelExactDiscrete(tokens=["a", "b"], start=[0.5, 0.3, 0.2], transitions=None, length=1).run()
    h, p_b, b = 2.0 ** -24, 0.3, 1
    rho = c * h / (p_b + c * h)  # rho p_b / (1 - rho) = c h
    sched = PolynomialSchedule(2, -math.log2(1.0 - rho))  # alpha(1/2) = rho: the first step's unmask probability
    sub, cells, dx = 8, int(12 * c) + 8, 0.01
    u_b = 1.0 - (torch.arange(cells * sub, dtype=torch.float64) + 0.5) * h / sub  # (J R,) b's in the top cells
    e_m = (torch.arange(3000, dtype=torch.float64) + 0.5) * dx  # (M,) the mask's Exp(1) race time, cells of dx
    mass_m = torch.exp(-e_m + dx / 2) * -math.expm1(-dx)  # (M,) P(E_m in each cell)
    rows = u_b.numel() * e_m.numel()
    u = torch.full((rows, 1, den.vocab.size), 0.5, dtype=torch.float64)  # (B, 1, V): a and EOS never win
    u[:, 0, b] = u_b.repeat_interleave(e_m.numel())
    u[:, 0, den.mask_id] = torch.exp(-e_m).repeat(u_b.numel())
    weight = (h / sub) * mass_m.repeat(u_b.numel())  # (B,) probability of each lattice cell
    state, _, _ = DiscreteTemplate(length=1).run().start(den, rows, NoiseSource(0))
    state = Ancestral().init(state, sched)
    p = {}
    for precision in ("float64", "float32"):
        out = Ancestral(precision=precision).step(den, sched, state, LatticeNoise(u))
        p[precision] = float(weight[out.tokens[:, 0] == b].sum())
    exact = rho * p_b
    print(f"\nc={c}: P(b) exact {exact:.4e}, float64 {p['float64']:.4e}, float32 {p['float32']:.4e} "
          f"(ratio {p['float32'] / exact:.4f}, analytic {float32_ratio(c):.4f})")
    assert p["float64"] == pytest.approx(exact, rel=0.02)
    assert p["float32"] / exact == pytest.approx(float32_ratio(c), rel=0.03)
    assert p["float32"] / exact < 0.9


def test_samplers_reject_the_other_kind_of_noise():
    for sampler, noise in ((Uniform(), "masked"), (Ancestral(), "uniform"), (FirstHitting(), "uniform"),
                           (TauLeaping(), "uniform")):
        with pytest.raises(NodeError, match=f"but the model is a {noise}-noise model"):
            draw(sampler, 4, noise, n=2)


def test_exact_metric_rejects_a_model_it_cannot_enumerate():
    out, _, den = draw(FirstHitting(), 4, n=4)
    with pytest.raises(NodeError, match="must be model.exact_discrete"):
        MetricDiscreteExact().run(out, CountingDiscreteDenoiser(den), NodeContext.detached())


def test_uniform_bridge_is_the_enumerated_reverse_marginal():
    den = ModelExactDiscrete(length=3, noise="uniform").run()
    seqs = all_sequences(den)  # (N, 3)
    prior = sequence_logprob(den, seqs).exp()  # (N,) p(x0)
    x_t = torch.tensor([0, 3, 1])
    a_t, a_s, k = 0.3, 0.7, den.vocab.size

    def kernel(a: float, to: torch.Tensor, frm: torch.Tensor) -> torch.Tensor:  # (N, N) prod_l q(to_l | frm_l)
        return (a * (to[None] == frm[:, None]).double() + (1 - a) / k).prod(-1)

    joint = prior[:, None] * kernel(a_s, seqs, seqs)  # (x0, x_s) p(x0) q(x_s | x0)
    p_s = joint.sum(0) * kernel(a_t / a_s, x_t[None], seqs)[:, 0]  # (N,) p(x_s, x_t)
    p_s = p_s / p_s.sum()
    exact = torch.stack([torch.zeros(k, dtype=torch.float64).index_add(0, seqs[:, pos], p_s) for pos in range(3)])
    logp = den(x_t[None], torch.tensor([1 - a_t], dtype=torch.float64))  # (1, 3, K): linear alpha = 1 - t
    bridge = uniform_bridge(logp, x_t[None], torch.tensor([a_t], dtype=torch.float64),
                            torch.tensor([a_s], dtype=torch.float64))
    assert torch.allclose(bridge[0].exp(), exact, atol=1e-12)


def masked_samplers():
    """One of each masked-noise sampler node; CCD (no check) and CCD-DS (rows finish at different steps)."""
    from samplegraph.nodes.discrete.samplers.coherent import Coherent
    from samplegraph.nodes.discrete.samplers.confidence import Confidence
    from samplegraph.nodes.discrete.samplers.remdm import ReMDM

    return [Ancestral(), TauLeaping(), FirstHitting(), Confidence(), ReMDM(), Coherent(consistency="off"),
            Coherent(consistency="adaptive")]


@pytest.mark.parametrize("sampler", masked_samplers(), ids=lambda s: f"{type(s).__name__}:{s.model_dump()}")
def test_a_row_finished_before_the_first_step_stays_while_the_others_run_as_alone(sampler):
    """A batch whose first row has nothing masked (a template row given whole): every sampler leaves it as it
    is and gives the other rows what it gives them without it (the first step runs on a sub-batch; coherent's
    history used to be sized by that step and failed to scatter back)."""
    den = ModelExactDiscrete(length=5).run()
    state, _, _ = DiscreteTemplate(length=5).run().start(den, 4, NoiseSource(0))
    given = torch.tensor([0, 1, 1, 2, 3])  # (L,) a whole sequence in row 0
    tokens, fixed = state.tokens.clone(), state.fixed.clone()
    tokens[0], fixed[0] = given, True
    mixed = DiscreteState.start(tokens, fixed, state.particle)
    out = run_discrete(sampler, den, LinearSchedule(5), mixed, NoiseSource(3))
    alone = run_discrete(sampler, den, LinearSchedule(5), mixed[1:], NoiseSource(3))
    assert torch.equal(out.tokens[0], given)
    assert torch.equal(out.tokens[1:], alone.tokens)
