"""Model parametrisations: ModelSampling tables and time maps (against diffusers and k-diffusion),
the NetworkDenoiser conversions (against their definitions and the peers' wrappers), and every
parametrisation of model.gmm against the exact x0, pointwise and through a Heun solve."""
import importlib
import math

import pytest
import torch
from pydantic import ValidationError

from peers import diffusers, kdiffusion_sampling
from samplegraph.nodes.core.model import Model, VESampling
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.models.parametrisation import (KINDS, NetworkDenoiser, Parametrisation, edm_scalings,
                                                      from_x0, network_time, to_x0)
from samplegraph.nodes.models.sampling import (COMFY_TERMINAL_ALPHA_CUMPROD, ContinuousVPSampling,
                                               DiscreteVPSampling, EDMSampling, RectifiedFlowSampling,
                                               betas_for, nearest_timestep, rescale_zero_terminal_snr,
                                               time_shift)
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # Stable Diffusion 1.x/2.x
DDPM = dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)  # Ho et al. (2020)
COSINE = dict(beta_schedule="squaredcos_cap_v2")  # Nichol & Dhariwal (2021)
CONFIGS = {"sd": SD, "ddpm": DDPM, "cosine": COSINE}
VARIANTS = [(kind, {}) for kind in KINDS] + [
    ("eps_discrete_vp", DDPM), ("v_discrete_vp", {"zero_terminal_snr": True}), ("eps_discrete_vp", COSINE),
    ("flow", {"shift": 3.0, "multiplier": 1000.0}), ("edm", {"sigma_data": 1.3}),
]
IDS = [f"{k}{'-' + '-'.join(map(str, o.values())) if o else ''}" for k, o in VARIANTS]


def sigma_range(sampling, lo=1e-3, hi=200.0):
    return max(sampling.sigma_min, lo), min(sampling.sigma_max, hi)


def queries(sampling, n=256, seed=0):
    """x (n, 2) spread like the noised ring at log-uniform sigmas (n,) inside the model's range."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = sigma_range(sampling)
    sigma = torch.empty(n, dtype=F64).uniform_(math.log(lo), math.log(hi), generator=gen).exp()  # (n,)
    x = torch.randn(n, 2, generator=gen, dtype=F64) * (16 + sigma[:, None] ** 2).sqrt()  # (n, 2)
    return x, sigma


def net(x_in, t):
    """An arbitrary smooth 'network' of input and time, for wrapper parity with the peers."""
    t = t.to(x_in.dtype)[:, None]  # k-diffusion's quantized timesteps are int64
    return torch.tanh(x_in @ torch.tensor([[0.7, -0.3], [0.2, 0.9]], dtype=x_in.dtype)) * (1 + t / 700) - 0.1 * x_in


# ---------------------------------------------------------------- tables and time maps


@pytest.mark.parametrize("zsnr", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_alphas_cumprod_and_sigmas_match_diffusers(name, zsnr):
    """float64 tables vs diffusers' float32 ones: alphas_cumprod within 1e-5 relative + 1e-10 absolute
    (float32 cumprod round-off over 1000 factors; the near-zero tail cancels), and sigma = sqrt((1-a)/a)
    of diffusers' own table within 1e-6 relative."""
    d = diffusers()
    cfg = CONFIGS[name]
    ours = DiscreteVPSampling.from_betas(**cfg, zero_terminal_snr=zsnr)
    ref = d.DDPMScheduler(**cfg, rescale_betas_zero_snr=zsnr).alphas_cumprod.to(F64)  # (1000,)
    body = slice(None, -1) if zsnr else slice(None)  # diffusers' terminal comes after the cumprod, checked below
    torch.testing.assert_close(ours.alphas_cumprod[body], ref[body], rtol=1e-5, atol=1e-10)
    if zsnr:
        assert ours.alphas_cumprod[-1] == (2.0 ** -24 if name != "ddpm" else ours.alphas_cumprod[-2] / 2)
    euler = d.EulerDiscreteScheduler(**cfg, rescale_betas_zero_snr=zsnr)
    sigmas_from_ref = DiscreteVPSampling(euler.alphas_cumprod.to(F64) if name != "ddpm" or not zsnr
                                         else ours.alphas_cumprod).sigmas
    if name != "ddpm" or not zsnr:  # diffusers' 'linear' + zsnr table is not monotone (see rescale_zero_terminal_snr)
        torch.testing.assert_close(sigmas_from_ref, euler.sigmas[:-1].flip(0).to(F64), rtol=1e-6, atol=0)


def test_beta_schedules_follow_their_definitions():
    n = 1000
    torch.testing.assert_close(betas_for("scaled_linear", n, 0.00085, 0.012).sqrt().diff(),
                               torch.full((n - 1,), (0.012 ** 0.5 - 0.00085 ** 0.5) / (n - 1), dtype=F64))
    ac = torch.cumprod(1 - betas_for("squaredcos_cap_v2", n), 0)
    t = torch.arange(1, n + 1, dtype=F64) / n
    cosine = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(ac[:-5], cosine[:-5], rtol=1e-12, atol=0)  # the 0.999 cap bites at the very end


def test_zero_terminal_snr_is_algorithm_1_of_lin_et_al():
    ac = torch.cumprod(1 - betas_for(**SD), 0)
    out = rescale_zero_terminal_snr(ac)
    root, new = ac.sqrt(), out.sqrt()
    expect = (root - root[-1]) * root[0] / (root[0] - root[-1])  # Lin et al. (2024), Algorithm 1
    torch.testing.assert_close(new[:-1], expect[:-1], rtol=1e-13, atol=0)
    assert new[0] == pytest.approx(float(root[0]), rel=1e-15)  # first SNR kept
    assert out[-1] == 2.0 ** -24  # SNR ~0: the terminal sigma is finite, ~4096 (diffusers)
    comfy = DiscreteVPSampling(rescale_zero_terminal_snr(ac, COMFY_TERMINAL_ALPHA_CUMPROD))
    assert comfy.sigma_max == pytest.approx(math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08))
    linear = DiscreteVPSampling.from_betas(**DDPM, zero_terminal_snr=True)  # stays monotone
    assert bool((linear.sigmas.diff() > 0).all()) and linear.alphas_cumprod[-1] < 1e-8


def test_discrete_time_maps_match_k_diffusion():
    """t_to_sigma and sigma_to_t (continuous and quantized) of k-diffusion's DiscreteSchedule."""
    kdiffusion_sampling()
    external = importlib.import_module("k_diffusion.external")
    ours = DiscreteVPSampling.from_betas(**SD)
    ref = external.DiscreteSchedule(ours.sigmas, quantize=False)
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, 999 * 64, (2000,), generator=gen) / 64  # k-diffusion casts t (and 1 - frac) to float32:
    torch.testing.assert_close(ours.sigma(t.to(F64)), ref.t_to_sigma(t), rtol=1e-13, atol=0)  # dyadic t is exact
    sigma = torch.empty(2000, dtype=F64).uniform_(-5, 4, generator=gen).exp()  # beyond both ends too
    torch.testing.assert_close(ours.timestep(sigma), ref.sigma_to_t(sigma), rtol=0, atol=1e-10)
    assert torch.equal(ours.timestep(sigma, quantize=True), ref.sigma_to_t(sigma, quantize=True).to(F64))
    assert torch.equal(nearest_timestep(ours, sigma), ours.timestep(sigma).round())  # == diffusers' rounding
    inside = sigma.clamp(ours.sigma_min, ours.sigma_max)
    torch.testing.assert_close(ours.sigma(ours.timestep(inside)), inside, rtol=1e-13, atol=0)
    steps = torch.arange(1000, dtype=F64)
    assert torch.equal(ours.timestep(ours.discrete_sigmas), steps) and torch.equal(ours.sigma(steps), ours.sigmas)


def test_continuous_samplings_round_trip_and_match_their_papers():
    ks = kdiffusion_sampling()
    vp = ContinuousVPSampling()
    t = torch.linspace(1, 1e-3, 50, dtype=F64)
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # get_sigmas_vp builds its times with the default dtype
    try:
        torch.testing.assert_close(vp.sigma(t), ks.get_sigmas_vp(50)[:-1], rtol=1e-10, atol=0)
    finally:
        torch.set_default_dtype(default)
    sigma = torch.logspace(-3, 2.5, 200, dtype=F64)
    for sampling in (vp, EDMSampling(), RectifiedFlowSampling(shift=3.0, multiplier=1000.0), VESampling()):
        torch.testing.assert_close(sampling.sigma(sampling.timestep(sigma)), sigma, rtol=1e-12, atol=0)
    torch.testing.assert_close(EDMSampling().timestep(sigma), sigma.log() / 4)  # c_noise, Karras Table 1
    flow = RectifiedFlowSampling(multiplier=1000.0)
    torch.testing.assert_close(flow.timestep(sigma), 1000 * sigma / (1 + sigma))
    t = torch.linspace(0.01, 0.99, 9, dtype=F64)
    torch.testing.assert_close(time_shift(t, 3.0) / (1 - time_shift(t, 3.0)), 3.0 * t / (1 - t))  # sigma' = s sigma
    assert flow.sigma_max == pytest.approx(999.0)  # t_max = 0.999
    assert RectifiedFlowSampling(shift=3.0).sigma_min == pytest.approx(3 / 999)  # shifted t_min = 0.001


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize("sampling", [DiscreteVPSampling.from_betas(), EDMSampling(sigma_data=0.7),
                                      RectifiedFlowSampling(), VESampling()], ids=["vp", "edm", "flow", "ve"])
def test_conversions_match_their_definitions(sampling):
    """Targets written from first principles (not from to_x0), and the inputs networks are trained on."""
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 64, 3, generator=gen, dtype=F64)  # (B, 3) each
    sigma = torch.empty(64, dtype=F64).uniform_(-3, 3, generator=gen).exp()  # (B,)
    s = sigma[:, None]
    x = x0 + s * eps  # VE space
    alpha, sigma_vp = (1 + s ** 2).rsqrt(), s * (1 + s ** 2).rsqrt()  # VP: x_vp = alpha x0 + sigma_vp eps
    t = s / (1 + s)  # flow: x_t = (1 - t) x0 + t eps
    sd = getattr(sampling, "sigma_data", 1.0)
    c_skip, c_out = sd ** 2 / (s ** 2 + sd ** 2), s * sd / (s ** 2 + sd ** 2).sqrt()
    targets = {"eps": eps, "v": alpha * eps - sigma_vp * x0 if sd == 1.0 else None, "x0": x0,
               "flow": eps - x0, "edm": (x0 - c_skip * x) / c_out}  # Salimans & Ho; Liu et al.; Karras eq. 8
    for prediction, target in targets.items():
        if target is None:
            continue
        torch.testing.assert_close(from_x0(prediction, x0, x, sigma, sd), target, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(to_x0(prediction, target, x, sigma, sd), x0, rtol=1e-10, atol=1e-10)
    seen = {}
    wrapped = NetworkDenoiser(lambda x_in, t_in: seen.setdefault("x_in", x_in) * 0, sampling, "eps")
    wrapped(x, sigma)
    family = {DiscreteVPSampling: "vp", EDMSampling: "edm", RectifiedFlowSampling: "flow", VESampling: "ve"}
    expected = {"vp": alpha * x0 + sigma_vp * eps, "edm": x / (s ** 2 + sd ** 2).sqrt(),
                "flow": (1 - t) * x0 + t * eps, "ve": x}[family[type(sampling)]]
    torch.testing.assert_close(seen["x_in"], expected, rtol=1e-12, atol=1e-12)
    c_skip_1, c_out_1 = edm_scalings(sigma, sd)
    torch.testing.assert_close(c_skip_1 + (c_out_1 / sd) ** 2, torch.ones_like(sigma))  # Karras Table 1 identity


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("quantize", [False, True])
def test_network_denoiser_matches_k_diffusion_wrappers(prediction, quantize):
    """DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser with the same network, float64."""
    kdiffusion_sampling()
    external = importlib.import_module("k_diffusion.external")
    sampling = DiscreteVPSampling.from_betas(**SD)
    peer_cls = external.DiscreteEpsDDPMDenoiser if prediction == "eps" else external.DiscreteVDDPMDenoiser
    peer = peer_cls(net, sampling.alphas_cumprod, quantize=quantize)
    ours = NetworkDenoiser(net, sampling, prediction, "rounded" if quantize else "continuous")
    x, sigma = queries(sampling)
    torch.testing.assert_close(ours(x, sigma), peer(x, sigma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_network_denoiser_matches_diffusers_euler_karras(prediction):
    """EulerDiscreteScheduler(use_karras_sigmas): pred_original_sample at each of its sigmas and timesteps
    (float32 peer: 1e-4); its DPMSolver sibling rounds the model's timesteps exactly like timestep='rounded'."""
    d = diffusers()
    sched = d.EulerDiscreteScheduler(**SD, prediction_type=prediction, use_karras_sigmas=True)
    sched.set_timesteps(12)
    sampling = DiscreteVPSampling(sched.alphas_cumprod.to(F64))
    ours = NetworkDenoiser(net, sampling, "eps" if prediction == "epsilon" else "v")
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2)) * sched.init_noise_sigma  # (B, 2)
    for t in sched.timesteps:
        sigma = sched.sigmas[sched.index_for_timestep(t)]
        model_in = sched.scale_model_input(x, t)
        ref = sched.step(net(model_in, t.expand(32)), t, x).pred_original_sample
        got = ours(x.to(F64), sigma.to(F64).expand(32))
        torch.testing.assert_close(got, ref.to(F64), rtol=1e-4, atol=1e-4)
    dpm = d.DPMSolverMultistepScheduler(**SD, use_karras_sigmas=True)
    dpm.set_timesteps(20)
    rounded = network_time(sampling, dpm.sigmas[:-1].to(F64), "rounded")
    assert torch.equal(rounded, dpm.timesteps.to(F64))


def test_network_denoiser_contract():
    sampling = DiscreteVPSampling.from_betas()
    wrapped = NetworkDenoiser(net, sampling, "v")
    x = torch.randn(8, 2, dtype=torch.float32)
    sigma = torch.tensor([0.0, 0.1, 1.0, 2.0, 5.0, 0.0, 0.5, 14.0])
    out = wrapped(x, sigma)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out[sigma == 0], x[sigma == 0])  # x is clean at sigma 0, whatever the network says
    bound = NetworkDenoiser(lambda x_in, t_in, scale: scale * x_in, VESampling(), "x0").bind(scale=2.0)
    assert torch.equal(bound(x, sigma + 1), 2 * x)
    with pytest.raises(ValueError, match="discrete-time"):
        NetworkDenoiser(net, EDMSampling(), "edm", timestep="rounded")
    with pytest.raises(ValueError, match="prediction must be one of"):
        NetworkDenoiser(net, sampling, "score")


# ---------------------------------------------------------------- model.gmm through every parametrisation


@pytest.mark.parametrize(("kind", "options"), VARIANTS, ids=IDS)
def test_every_parametrisation_reproduces_the_exact_x0(kind, options):
    """Exact x0 -> fake network output in its own input space and time -> NetworkDenoiser -> x0, float64."""
    exact = ModelGMM().run()
    model = ModelGMM(parametrisation=kind, **options).run()
    assert isinstance(model, Model) and isinstance(model, GaussianMixture)
    x, sigma = queries(model.sampling)
    err = (model(x, sigma) - exact(x, sigma)).abs().amax(dim=1)  # (n,)
    assert bool((err <= 1e-12 * (1 + sigma)).all()), float((err / (1 + sigma)).max())


def test_rounded_timesteps_equal_continuous_on_the_table_and_differ_between():
    continuous = ModelGMM(parametrisation="eps_discrete_vp").run()
    rounded = ModelGMM(parametrisation="eps_discrete_vp", timestep="rounded").run()
    steps = torch.arange(0, 999, 37)  # (27,) integer timesteps
    table = continuous.sampling.discrete_sigmas[steps]  # (27,)
    x = torch.randn(steps.numel(), 2, generator=torch.Generator().manual_seed(3), dtype=F64) * 4
    assert torch.equal(rounded(x, table), continuous(x, table))
    between = continuous.sampling.sigma(steps.to(F64) + 0.4)  # (27,)
    gap = (rounded(x, between) - continuous(x, between)).abs().amax(dim=1)  # (27,)
    assert bool((gap > 1e-6).all()), gap.min()
    exact = ModelGMM().run()
    torch.testing.assert_close(continuous(x, between), exact(x, between), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("kind", "options"), VARIANTS, ids=IDS)
def test_heun_through_every_parametrisation_gives_the_exact_samples(kind, options):
    """Heun on Karras sigmas in the model's range: the same samples as the exact VE mixture (float64)."""
    model = ModelGMM(parametrisation=kind, **options).run()
    lo, hi = sigma_range(model.sampling, 0.02, 80.0)
    sigmas = Karras(steps=12, sigma_min=lo, sigma_max=hi).run()
    x = hi * torch.randn(512, 2, generator=torch.Generator().manual_seed(4), dtype=F64)  # (B, 2)
    noise = NoiseSource(0)
    out = run_steps(Heun(), model, Heun().init(x, sigmas), noise).x
    ref = run_steps(Heun(), ModelGMM().run(), Heun().init(x, sigmas), noise).x
    dist = (out - ref).norm(dim=1)  # (B,)
    assert float(dist.median()) < 1e-12 and float(dist.quantile(0.999)) < 1e-11, float(dist.max())  # ~1e-14 seen


def test_model_gmm_parameters_and_cache_round_trip():
    default = ModelGMM(sigma_min=0.01, sigma_max=20.0).run()
    assert isinstance(default.sampling, VESampling) and default.sampling.sigma_max == 20.0
    x, sigma = queries(default.sampling, n=16)
    assert torch.equal(default(x, sigma), default.exact_x0(x, sigma))  # today's behaviour, bit for bit
    model = ModelGMM(parametrisation="v_discrete_vp", zero_terminal_snr=True, timestep="rounded").run()
    tensors, meta = model.cache_encode()
    again = GaussianMixture.cache_decode(tensors, meta)
    assert torch.equal(again(x, sigma), model(x, sigma)) and again.sampling.sigma_max == model.sampling.sigma_max
    assert torch.equal(model.to("cpu")(x, sigma), model(x, sigma))
    for bad, field in [({"parametrisation": "edm", "beta_schedule": "linear"}, "beta_schedule"),
                       ({"parametrisation": "flow", "timestep": "rounded"}, "timestep"),
                       ({"parametrisation": "eps_discrete_vp", "sigma_max": 3.0}, "sigma_max"),
                       ({"sigma_min": 5.0, "sigma_max": 3.0}, "sigma_max"),
                       ({"parametrisation": "eps_vp"}, "parametrisation")]:
        with pytest.raises(ValidationError, match=field):
            ModelGMM(**bad)
    assert Parametrisation(parametrisation="edm", sigma_data=1.0).options() == {"parametrisation": "edm",
                                                                                "sigma_data": 1.0}
