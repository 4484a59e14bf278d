"""Schedule nodes: exact parity with k-diffusion (float64) and diffusers (timestep spacings,
flow shift), hand-derived small cases of ComfyUI's schedules (computed here from the formulas,
not by calling the nodes' helpers), the published Align Your Steps tables, and the properties
every schedule keeps (length steps + 1, non-increasing, ends in 0, its stated endpoints)."""
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from peers import diffusers, kdiffusion_sampling
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.model import Model, ModelSampling
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.sampling import DiscreteVPSampling, EDMSampling, RectifiedFlowSampling
from samplegraph.nodes.schedules.ays import AlignYourSteps
from samplegraph.nodes.schedules.beta import Beta
from samplegraph.nodes.schedules.ddim_uniform import DDIMUniform
from samplegraph.nodes.schedules.exponential import Exponential
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.schedules.kl_optimal import KLOptimal
from samplegraph.nodes.schedules.laplace import Laplace
from samplegraph.nodes.schedules.linear_quadratic import LinearQuadratic
from samplegraph.nodes.schedules.manual import Manual
from samplegraph.nodes.schedules.normal import Normal
from samplegraph.nodes.schedules.polyexponential import Polyexponential
from samplegraph.nodes.schedules.sgm_uniform import SGMUniform
from samplegraph.nodes.schedules.simple import Simple
from samplegraph.nodes.schedules.time_shift import TimeShift
from samplegraph.nodes.schedules.uniform_timesteps import UniformTimesteps, spaced_timesteps
from samplegraph.nodes.schedules.vp import VP

F64 = torch.float64
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


class TableModel(Model):
    """A Model that only states its ModelSampling (schedules never call the denoiser)."""

    def __init__(self, sampling: ModelSampling):
        self._sampling = sampling

    @property
    def sampling(self) -> ModelSampling:
        return self._sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise AssertionError("schedules must not call the model")


def table_model(levels) -> TableModel:
    """A discrete VP model whose ascending sigma table is `levels` (alphas_cumprod = 1 / (1 + sigma^2))."""
    sigma = torch.as_tensor(levels, dtype=F64)
    return TableModel(DiscreteVPSampling(1 / (1 + sigma**2)))


TEN = table_model(range(1, 11))  # sigma table [1, 2, ..., 10]: small cases are readable by hand
SD_MODEL = TableModel(DiscreteVPSampling.from_betas("scaled_linear", 1000, 0.00085, 0.012))


def sd_table_numpy() -> np.ndarray:
    """Stable Diffusion's (1000,) sigma table, computed here with numpy in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    acp = np.cumprod(1 - betas)
    return np.sqrt((1 - acp) / acp)


def values(s: Sigmas) -> list[float]:
    return s.values.tolist()


# ----------------------------------------------------------------- k-diffusion parity (float64)


@pytest.fixture
def kdiff_f64():
    """k-diffusion's schedule functions build tensors in the default dtype: run them in float64."""
    k = kdiffusion_sampling()
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield k
    torch.set_default_dtype(old)


@pytest.mark.parametrize("steps", [1, 2, 7, 40])
def test_exact_parity_with_kdiffusion_in_float64(kdiff_f64, steps):
    k = kdiff_f64
    lo, hi = 0.0291675, 14.614642
    pairs = [
        (Karras(steps=steps, sigma_min=lo, sigma_max=hi, rho=7.0), k.get_sigmas_karras(steps, lo, hi, 7.0)),
        (Exponential(steps=steps, sigma_min=lo, sigma_max=hi), k.get_sigmas_exponential(steps, lo, hi)),
        (Polyexponential(steps=steps, sigma_min=lo, sigma_max=hi, rho=1.0), k.get_sigmas_polyexponential(steps, lo, hi)),
        (Polyexponential(steps=steps, sigma_min=lo, sigma_max=hi, rho=2.5),
         k.get_sigmas_polyexponential(steps, lo, hi, 2.5)),
    ]
    for ours, theirs in pairs:
        assert theirs.dtype == F64
        assert torch.equal(ours.run().values, theirs), type(ours).__name__
    # ours uses expm1 where k-diffusion 0.1.1 writes exp(x) - 1: equal to round-off of the latter
    vp = VP(steps=steps, beta_d=19.9, beta_min=0.1, eps_s=1e-3).run().values
    torch.testing.assert_close(vp, k.get_sigmas_vp(steps, 19.9, 0.1, 1e-3), rtol=1e-11, atol=0)


# ----------------------------------------------------------------- ComfyUI-only, hand-derived


def test_laplace_small_case_from_the_quantile_formula():
    # x = 0, 1/4, 1/2, 3/4, 1; lambda = mu - beta sign(1/2 - x) log(1 - 2|1/2 - x| + 1e-5), beta = 1/2
    got = values(Laplace(steps=5, sigma_min=0.002, sigma_max=80.0, mu=0.0, beta=0.5).run())
    expected = [min(1e-5 ** -0.5, 80.0), 0.50001 ** -0.5, 1.0, 0.50001 ** 0.5, 1e-5 ** 0.5, 0.0]
    assert got == pytest.approx(expected, rel=1e-13)
    shifted = values(Laplace(steps=3, sigma_min=0.002, sigma_max=80.0, mu=1.0, beta=0.25).run())
    assert shifted == pytest.approx([math.e * 1e-5 ** -0.25, math.e, math.e * 1e-5 ** 0.25, 0.0], rel=1e-13)


def test_kl_optimal_small_case_is_tan_of_the_mean_arctan():
    a, b = 80.0, 0.002
    # tan((atan a + atan b) / 2) written with sines and cosines of the two angles
    mid = (a / math.hypot(1, a) + b / math.hypot(1, b)) / (1 / math.hypot(1, a) + 1 / math.hypot(1, b))
    assert values(KLOptimal(steps=3, sigma_min=b, sigma_max=a).run()) == pytest.approx([a, mid, b, 0.0], rel=1e-13)
    assert values(KLOptimal(steps=1, sigma_min=b, sigma_max=a).run()) == pytest.approx([a, 0.0])


def test_linear_quadratic_small_case_by_hand():
    # steps 4, linear_steps 2, threshold 0.025: linear part 0, 0.0125; quadratic through (2, 0.025)
    # a i^2 + b i + c with a = 1.9 / 8, b = 0.0125 - 0.95, c = 4a: at i = 3 gives 0.275; then 1
    fractions = [1.0, 0.9875, 0.975, 0.725, 0.0]
    got = values(LinearQuadratic(steps=4, sigma_max=14.6, space="sigma").run())
    assert got == pytest.approx([14.6 * f for f in fractions], rel=1e-13)
    t_max = 80.0 / 81.0  # flow time of sigma_max = 80
    flow = values(LinearQuadratic(steps=4, sigma_max=80.0, space="flow").run())
    assert flow == pytest.approx([t_max * f / (1 - t_max * f) for f in fractions], rel=1e-12)
    assert values(LinearQuadratic(steps=1, sigma_max=2.0, space="sigma").run()) == [2.0, 0.0]
    with pytest.raises(ValidationError, match="linear_steps"):
        LinearQuadratic(steps=4, linear_steps=4)


def test_simple_takes_every_n_over_steps_entry_from_the_top():
    # N = 10: stride 2.5 -> indices from the end int(0, 2.5, 5, 7.5) = 0, 2, 5, 7
    assert values(Simple(steps=4).run(TEN)) == pytest.approx([10, 8, 5, 3, 0], rel=1e-12)
    assert values(Simple(steps=3).run(TEN)) == pytest.approx([10, 7, 4, 0], rel=1e-12)


def test_ddim_uniform_strides_from_index_one_and_may_add_a_step():
    assert values(DDIMUniform(steps=3).run(TEN)) == pytest.approx([8, 5, 2, 0], rel=1e-12)  # t = 1, 4, 7
    # 10 // 4 = 2: t = 1, 3, 5, 7, 9 -> five steps (ComfyUI's behaviour, documented on the node)
    assert values(DDIMUniform(steps=4).run(TEN)) == pytest.approx([10, 8, 6, 4, 2, 0], rel=1e-12)


def test_normal_and_sgm_uniform_are_uniform_in_model_time():
    # timesteps 9 .. 0 of the table; between integers log sigma is linear (sigma(4.5) = sqrt(5 * 6))
    assert values(Normal(steps=4).run(TEN)) == pytest.approx([10, 7, 4, 1, 0], rel=1e-12)
    assert values(Normal(steps=3).run(TEN)) == pytest.approx([10, math.sqrt(30), 1, 0], rel=1e-12)
    assert values(SGMUniform(steps=3).run(TEN)) == pytest.approx([10, 7, 4, 0], rel=1e-12)
    assert values(SGMUniform(steps=2).run(TEN)) == pytest.approx([10, math.sqrt(30), 0], rel=1e-12)


def test_normal_of_a_continuous_model_uses_its_time_variable():
    edm = TableModel(EDMSampling(sigma_min=0.002, sigma_max=80.0))  # t = ln(sigma) / 4: uniform in log sigma
    got = Normal(steps=5).run(edm).values
    assert torch.allclose(got, Exponential(steps=5, sigma_min=0.002, sigma_max=80.0).run().values, rtol=1e-12)


def test_normal_of_a_rectified_flow_model_is_uniform_in_flow_time():
    flow = RectifiedFlowSampling(t_min=0.01, t_max=0.99)
    levels = Normal(steps=5).run(TableModel(flow)).values  # (6,)
    t = levels / (1 + levels)
    torch.testing.assert_close(t[:-1], torch.linspace(0.99, 0.01, 5, dtype=F64), rtol=1e-13, atol=0)


def test_beta_small_cases():
    # alpha = beta = 1 is the uniform distribution: ppf(q) = q -> indices rint(q * 9) = 9, 6, 3
    assert values(Beta(steps=3, alpha=1.0, beta=1.0).run(TEN)) == pytest.approx([10, 7, 4, 0], rel=1e-12)
    # symmetric Beta(0.6, 0.6) on a table of 11 (indices 0 .. 10): ppf(1/2) = 1/2 -> index 5;
    # ppf(3/4) found here by bisection of the regularised incomplete beta function
    from scipy.special import betainc
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if betainc(0.6, 0.6, mid) < 0.75 else (lo, mid)
    q75, q25 = int(np.rint(lo * 10)), int(np.rint((1 - lo) * 10))  # (8, 2): far from a rounding tie
    expected = [11, q75 + 1, 6, q25 + 1, 0]  # table[i] = i + 1
    assert values(Beta(steps=4, alpha=0.6, beta=0.6).run(table_model(range(1, 12)))) == pytest.approx(expected)
    merged = Beta(steps=30).run(TEN).values
    assert (merged[1:] < merged[:-1]).all() and merged.numel() <= 11  # repeated indices merged


@pytest.mark.parametrize("cls", [Simple, DDIMUniform, Beta, UniformTimesteps])
def test_table_schedules_reject_continuous_models_with_a_pointer(cls):
    with pytest.raises(NodeError, match="input 'model'.*continuous-time.*schedule.normal"):
        cls(steps=4).run(TableModel(RectifiedFlowSampling()))


# ----------------------------------------------------------------- diffusers timestep spacings


SPACINGS = [("linspace", 0), ("leading", 0), ("leading", 1), ("trailing", 0)]


@pytest.mark.parametrize("spacing,offset", SPACINGS)
@pytest.mark.parametrize("steps", [1, 4, 7, 10, 25, 50, 999])
def test_timesteps_and_sigmas_match_diffusers(spacing, offset, steps):
    d = diffusers()
    euler = d.EulerDiscreteScheduler(**SD, timestep_spacing=spacing, steps_offset=offset)
    ddim = d.DDIMScheduler(**SD, timestep_spacing=spacing, steps_offset=offset, clip_sample=False)
    euler.set_timesteps(steps)
    ddim.set_timesteps(steps)
    kw = dict(spacing=spacing, steps_offset=offset)
    # the same model: diffusers' float32 alphas_cumprod as our table (our float64 scaled_linear
    # table differs from it by float32 round-off, ~1e-5 relatively at small t)
    model = TableModel(DiscreteVPSampling(ddim.alphas_cumprod.double()))
    # DDIM: integer timesteps, exactly; its sigma grid is sigma(alphas_cumprod[t]) then 0
    t_ddim = spaced_timesteps(steps, 1000, spacing, offset, integer=True)
    assert torch.equal(t_ddim.long(), ddim.timesteps)
    ours = UniformTimesteps(steps=steps, integer_timesteps=True, **kw).run(model).values
    acp = ddim.alphas_cumprod[ddim.timesteps].double()
    torch.testing.assert_close(ours[:-1], ((1 - acp) / acp).sqrt(), rtol=1e-14, atol=0)
    # Euler: fractional 'linspace' timesteps (float32 in diffusers), sigma interpolated linearly
    t_euler = spaced_timesteps(steps, 1000, spacing, offset)
    torch.testing.assert_close(t_euler, euler.timesteps.double(), rtol=0, atol=1e-4)
    ours = UniformTimesteps(steps=steps, **kw).run(model).values
    torch.testing.assert_close(ours, euler.sigmas.double(), rtol=3e-7, atol=0)  # diffusers: float32 arithmetic
    assert ours[-1] == 0
    ours_sd = UniformTimesteps(steps=steps, **kw).run(SD_MODEL).values  # float64 table
    torch.testing.assert_close(ours_sd, euler.sigmas.double(), rtol=1e-4, atol=0)


def test_uniform_timesteps_errors_name_the_parameter():
    with pytest.raises(NodeError, match="param 'steps' is 1001.*at most 1000"):
        UniformTimesteps(steps=1001).run(SD_MODEL)
    with pytest.raises(NodeError, match="param 'steps_offset' is 5.*past the model's last"):
        UniformTimesteps(steps=10, spacing="leading", steps_offset=5).run(table_model(range(1, 21)))
    with pytest.raises(ValidationError, match="steps_offset\n.*only applies to spacing 'leading'"):
        UniformTimesteps(spacing="trailing", steps_offset=1)


# ----------------------------------------------------------------- Align Your Steps


SD15_T = [999, 850, 736, 645, 545, 455, 343, 233, 124, 24]
SDXL_T = [999, 845, 730, 587, 443, 310, 193, 116, 53, 13]
SVD = [700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034]
# ComfyUI's AlignYourStepsScheduler lists the SD tables as sigmas (float32 arithmetic)
COMFY_SD1 = [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
             0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662]


def test_ays_reproduces_the_published_tables_at_ten_steps():
    table = sd_table_numpy()
    for model_type, published in (("sd15", table[SD15_T]), ("sdxl", table[SDXL_T]), ("svd", np.array(SVD))):
        got = AlignYourSteps(model_type=model_type, steps=10).run().values.numpy()
        np.testing.assert_allclose(got, [*published, 0.0], rtol=1e-12)
    sd1 = AlignYourSteps(model_type="sd15").run().values[:-1].numpy()
    np.testing.assert_allclose(sd1, COMFY_SD1, rtol=1e-6)


@pytest.mark.parametrize("model_type", ["sd15", "sdxl", "svd"])
def test_ays_interpolates_log_sigma_monotonically(model_type):
    ten = AlignYourSteps(model_type=model_type, steps=10).run().values  # (11,)
    # 20 steps: the 21 points include the 11 originals; between two, the geometric mean
    twenty = AlignYourSteps(model_type=model_type, steps=20).run().values
    torch.testing.assert_close(twenty[0:20:2], ten[:10], rtol=1e-12, atol=0)
    torch.testing.assert_close(twenty[1:18:2], (ten[:9] * ten[1:10]).sqrt(), rtol=1e-12, atol=0)
    sigma_end = {"sd15": sd_table_numpy()[0], "sdxl": sd_table_numpy()[0], "svd": 0.002}[model_type]
    torch.testing.assert_close(twenty[19], (ten[9] * sigma_end) ** 0.5, rtol=1e-12, atol=0)
    for steps in (1, 4, 13, 50):
        s = AlignYourSteps(model_type=model_type, steps=steps).run().values
        assert s.numel() == steps + 1 and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
        assert s[0].item() == pytest.approx(ten[0].item(), rel=1e-14)


# ----------------------------------------------------------------- flow time shift


def test_time_shift_is_the_flow_time_formula_and_matches_diffusers_flow_match():
    d = diffusers()
    t = np.array([0.95, 0.8, 0.5, 0.3, 0.1, 0.02])
    base = Manual(values=[*(t / (1 - t)).tolist(), 0.0]).run()
    for node, config, kw in (
        (TimeShift(mode="sd3", shift=3.0), dict(shift=3.0), {}),
        (TimeShift(mode="flux", image_tokens=1024), dict(use_dynamic_shifting=True),
         dict(mu=0.5 + (1.15 - 0.5) / (4096 - 256) * (1024 - 256))),
    ):
        shifted = node.run(base).values  # (7,) VE
        s = node.factor
        t_shift = s * t / (1 + (s - 1) * t)  # SD3 shift, in flow time
        np.testing.assert_allclose((shifted / (1 + shifted))[:-1].numpy(), t_shift, rtol=1e-13)
        assert shifted[-1] == 0
        flow = d.FlowMatchEulerDiscreteScheduler(**config)
        flow.set_timesteps(sigmas=t.tolist(), **kw)
        np.testing.assert_allclose((shifted / (1 + shifted)).numpy(), flow.sigmas.double().numpy(), rtol=2e-6)
    flux = TimeShift(mode="flux", image_tokens=4096).factor
    assert flux == pytest.approx(math.exp(1.15)) and TimeShift(mode="flux", image_tokens=256).factor == \
        pytest.approx(math.exp(0.5))


def test_time_shift_parameters_of_the_other_mode_are_located_errors():
    with pytest.raises(ValidationError, match="image_tokens\n.*only used by mode 'flux'"):
        TimeShift(mode="sd3", image_tokens=1024)
    with pytest.raises(ValidationError, match="shift\n.*only used by mode 'sd3'"):
        TimeShift(mode="flux", shift=2.0)


# ----------------------------------------------------------------- properties of every schedule


def model_free_cases(steps: int) -> list:
    return [Karras(steps=steps), Exponential(steps=steps), Polyexponential(steps=steps, rho=3.0), VP(steps=steps),
            KLOptimal(steps=steps), Laplace(steps=steps), LinearQuadratic(steps=steps),
            LinearQuadratic(steps=steps, space="sigma"), AlignYourSteps(steps=steps),
            AlignYourSteps(model_type="svd", steps=steps)]


def model_cases(steps: int) -> list:
    return [UniformTimesteps(steps=steps), UniformTimesteps(steps=steps, spacing="trailing"),
            UniformTimesteps(steps=steps, spacing="leading", steps_offset=1), Simple(steps=steps),
            SGMUniform(steps=steps), Normal(steps=steps), Beta(steps=steps)]


@pytest.mark.parametrize("steps", [1, 2, 5, 17, 64])
def test_every_schedule_has_steps_plus_one_decreasing_levels_ending_in_zero(steps):
    nodes = [(n, n.run()) for n in model_free_cases(steps)] + [(n, n.run(SD_MODEL)) for n in model_cases(steps)]
    for node, sig in nodes:
        v = sig.values
        name = type(node).__name__
        assert v.dtype == F64 and v[-1] == 0, name
        assert (v[1:] < v[:-1]).all(), name  # strictly: no repeated level, no wasted step
        if not isinstance(node, Beta):  # beta merges repeated quantile indices (fewer steps, never more)
            assert v.numel() == steps + 1, name
    top, bottom = SD_MODEL.sampling.sigma_max, SD_MODEL.sampling.sigma_min
    for node in (Karras(steps=steps, sigma_min=0.1, sigma_max=9.0), Exponential(steps=steps, sigma_min=0.1, sigma_max=9.0),
                 Polyexponential(steps=steps, sigma_min=0.1, sigma_max=9.0), KLOptimal(steps=steps, sigma_min=0.1, sigma_max=9.0)):
        v = node.run().values
        assert v[0].item() == pytest.approx(9.0, rel=1e-14)
        if steps > 1:
            assert v[-2].item() == pytest.approx(0.1, rel=1e-14)
    for node in (Normal(steps=steps), SGMUniform(steps=steps), Simple(steps=steps), Beta(steps=steps),
                 UniformTimesteps(steps=steps, spacing="trailing")):
        assert node.run(SD_MODEL).values[0].item() == pytest.approx(top, rel=1e-12), type(node).__name__
    if steps > 1:
        assert Normal(steps=steps).run(SD_MODEL).values[-2].item() == pytest.approx(bottom, rel=1e-12)


def test_sigma_range_schedules_reject_an_inverted_range_at_the_parameter():
    for cls in (Exponential, Polyexponential, KLOptimal, Laplace):
        with pytest.raises(ValidationError, match="sigma_max\n.*greater than sigma_min"):
            cls(sigma_min=2.0, sigma_max=1.0)


@pytest.mark.parametrize("spacing,offset", SPACINGS)
@pytest.mark.parametrize("steps", [1, 4, 7, 10, 25, 50, 999])
@pytest.mark.parametrize("scheduler", ["UniPCMultistepScheduler", "DPMSolverMultistepScheduler",
                                       "DEISMultistepScheduler"])
def test_multistep_spacing_matches_diffusers_multistep_schedulers(scheduler, spacing, offset, steps):
    """UniPC, DPM-Solver and DEIS (multistep) take steps + 1 points and drop the last: their sigmas."""
    d = diffusers()
    sched = getattr(d, scheduler)(**SD, timestep_spacing=spacing, steps_offset=offset)
    sched.set_timesteps(steps)
    assert torch.equal(spaced_timesteps(steps, 1000, spacing, offset, multistep=True).long(), sched.timesteps)
    model = TableModel(DiscreteVPSampling(sched.alphas_cumprod.double()))
    node = UniformTimesteps(steps=steps, spacing=spacing, steps_offset=offset, multistep=True)
    if int(sched.timesteps.max()) > 999:  # diffusers reads past its table (np.interp clamps); we refuse
        with pytest.raises(NodeError, match="param 'steps_offset' is 1.*past the model's last"):
            node.run(model)
        return
    ours = node.run(model).values
    # DEIS ends on the smallest training sigma, the others on 0 (final_sigmas_type='zero'); ours on 0
    torch.testing.assert_close(ours[:-1], sched.sigmas[:-1].double(), rtol=3e-7, atol=0)  # float32 sigmas
    assert ours[-1] == 0 and (scheduler == "DEISMultistepScheduler" or sched.sigmas[-1] == 0)


def test_multistep_spacing_is_not_ddims():
    """The reason for the option: at 10 linspace steps DDIM's grid is up to ~92% off UniPC's."""
    ddim = UniformTimesteps(steps=10, integer_timesteps=True).run(SD_MODEL).values[:-1]
    unipc = UniformTimesteps(steps=10, multistep=True).run(SD_MODEL).values[:-1]
    assert float(((ddim - unipc).abs() / unipc).max()) > 0.9
