"""Sampler (solver) nodes and the generic `sample` node."""


def nodes() -> list[type]:
    from .euler import Euler
    from .heun import Heun
    from .sample import Sample

    ode: list[type] = []  # k-diffusion family, deterministic
    stochastic: list[type] = []  # ancestral and SDE solvers
    vp_family: list[type] = []  # DDIM/DDPM/UniPC/DEIS/LCM family, flow SDE, wrappers
    return [Sample, Euler, Heun, *ode, *stochastic, *vp_family]
