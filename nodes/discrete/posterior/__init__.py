"""Posterior sampling and search over discrete-diffusion particles (infill, constraints, rewards)."""


def nodes() -> list[type]:
    return [
    ]
