"""Parity of the stochastic solvers with k-diffusion in float64, on the analytic mixture, with
the same noise: our solver runs with a NoiseSource that records every tensor it draws, and
k-diffusion gets them back, in order, through its noise_sampler(sigma, sigma_next) argument.
Restart has no k-diffusion sampler: its reference is k-diffusion's sample_heun over the main
schedule and the restart descents, with the recorded restart noise added between them."""
import pytest
import torch

from peers import kdiffusion_sampling
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpm_2_ancestral import Dpm2Ancestral
from samplegraph.nodes.samplers.dpmpp_2m_sde import Dpmpp2MSde
from samplegraph.nodes.samplers.dpmpp_2s_ancestral import Dpmpp2SAncestral
from samplegraph.nodes.samplers.dpmpp_3m_sde import Dpmpp3MSde
from samplegraph.nodes.samplers.dpmpp_sde import DpmppSde
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.samplers.restart import Restart, RestartSegment
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
SIGMAS = Karras(steps=12, sigma_min=0.002, sigma_max=80.0).run()
N = 512


class Recording(NoiseSource):
    """A NoiseSource that keeps every tensor it hands out, in order."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.draws: list[torch.Tensor] = []

    def normal(self, *args, **kwargs) -> torch.Tensor:
        z = super().normal(*args, **kwargs)
        self.draws.append(z)
        return z

    def brownian(self, *args, **kwargs) -> torch.Tensor:
        z = super().brownian(*args, **kwargs)
        self.draws.append(z)
        return z


class Replay:
    """k-diffusion's noise_sampler(sigma, sigma_next): the recorded draws, one per call, in order."""

    def __init__(self, draws: list[torch.Tensor]):
        self.draws, self.calls = draws, 0

    def __call__(self, sigma, sigma_next) -> torch.Tensor:  # noqa: ANN001
        assert self.calls < len(self.draws), "k-diffusion drew more noise than our solver"
        self.calls += 1
        return self.draws[self.calls - 1]


def start() -> torch.Tensor:
    return SIGMAS.sigma_max * NoiseSource(11).normal(torch.arange(N), -1, (2,), dtype=F64)  # (N, 2)


def ours(sampler: Sampler, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    noise = Recording(3)
    out = run_steps(sampler, ModelGMM().run(), sampler.init(x, SIGMAS), noise).x
    return out, noise.draws


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    dist = (a - b).norm(dim=1)  # (N,)
    med, p999 = float(dist.median()), float(dist.quantile(0.999))
    assert med < 1e-5 and p999 < 1e-5, (med, p999)


CASES = [
    (EulerAncestral(), "sample_euler_ancestral", {}),
    (EulerAncestral(eta=0.5, s_noise=1.1, noise="brownian"), "sample_euler_ancestral", {"eta": 0.5, "s_noise": 1.1}),
    (Dpm2Ancestral(), "sample_dpm_2_ancestral", {}),
    (Dpm2Ancestral(eta=0.6, noise="brownian"), "sample_dpm_2_ancestral", {"eta": 0.6}),
    (Dpmpp2SAncestral(), "sample_dpmpp_2s_ancestral", {}),
    (Dpmpp2SAncestral(eta=0.7, s_noise=0.9), "sample_dpmpp_2s_ancestral", {"eta": 0.7, "s_noise": 0.9}),
    (DpmppSde(), "sample_dpmpp_sde", {}),
    (DpmppSde(eta=0.8, r=0.3, noise="step"), "sample_dpmpp_sde", {"eta": 0.8, "r": 0.3}),
    (Dpmpp2MSde(), "sample_dpmpp_2m_sde", {}),
    (Dpmpp2MSde(solver_type="heun", eta=0.5), "sample_dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}),
    (Dpmpp2MSde(solver_type="heun", noise="step", s_noise=1.2), "sample_dpmpp_2m_sde",
     {"solver_type": "heun", "s_noise": 1.2}),
    (Dpmpp2MSde(eta=0.0), "sample_dpmpp_2m_sde", {"eta": 0.0}),
    (Dpmpp3MSde(), "sample_dpmpp_3m_sde", {}),
    (Dpmpp3MSde(eta=0.5, noise="step"), "sample_dpmpp_3m_sde", {"eta": 0.5}),
]


@pytest.mark.parametrize("sampler, name, kwargs", CASES,
                         ids=[f"{c[1][7:]}-{i}" for i, c in enumerate(CASES)])
def test_same_samples_as_kdiffusion_with_the_same_noise(sampler, name, kwargs):
    k = kdiffusion_sampling()
    x = start()
    out, draws = ours(sampler, x)
    replay = Replay(draws)
    ref = getattr(k, name)(ModelGMM().run(), x.clone(), SIGMAS.values.clone(), disable=True,
                           noise_sampler=replay, **kwargs)
    assert replay.calls == len(draws), f"k-diffusion drew {replay.calls} noise tensors, we drew {len(draws)}"
    assert draws or kwargs.get("eta") == 0.0
    assert_close(out, ref)


@pytest.mark.parametrize("segments", [
    [RestartSegment(t_min=0.06, t_max=0.30, repeats=2, steps=2)],
    [RestartSegment(t_min=0.5, t_max=2.0, repeats=1, steps=3),
     RestartSegment(t_min=0.05, t_max=0.3, repeats=3, steps=2)],
])
def test_restart_equals_heun_runs_with_restart_noise_between(segments):
    k = kdiffusion_sampling()
    sampler = Restart(segments=segments, s_noise=1.05)
    x = start()
    out, draws = ours(sampler, x)
    main = SIGMAS.values
    at = {}
    for seg in segments:  # the paper's snapping: the nearest positive level of the main schedule
        i = int((main[:-1] - seg.t_min).abs().argmin())
        at.setdefault(i, []).append(seg)
    model, ref, drawn, done = ModelGMM().run(), x.clone(), iter(draws), 0
    for i in sorted(at):
        ref = k.sample_heun(model, ref, main[done:i + 1], disable=True)
        done = i
        for seg in at[i]:
            low = float(main[i])
            descent = Karras(steps=seg.steps + 1, sigma_min=low, sigma_max=seg.t_max).run().values[:-1]  # rho 7
            for _ in range(seg.repeats):
                ref = ref + next(drawn) * 1.05 * (seg.t_max ** 2 - low ** 2) ** 0.5
                ref = k.sample_heun(model, ref, descent, disable=True)
    ref = k.sample_heun(model, ref, main[done:], disable=True)
    assert next(drawn, None) is None
    assert len(draws) == sum(seg.repeats for seg in segments)
    assert_close(out, ref)
