"""Discrete-diffusion samplers, one node per file (nodes/discrete/sampler.py is the contract)."""


def nodes() -> list[type]:
    return [
    ]
