"""Reference libraries for parity tests, loaded without side effects.

k-diffusion's package __init__ imports torchvision and clip, which do not install beside
the CPU torch; its sampling module needs only torch, scipy, torchsde, torchdiffeq and tqdm.
So `kdiffusion_sampling()` registers a stub `k_diffusion` package whose __path__ is the
installed directory plus a stub `k_diffusion.utils` with `append_dims`, then imports
`k_diffusion.sampling` alone. Tests call `pytest.importorskip`-style helpers so that a
missing peer skips with the reason instead of failing."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest


def kdiffusion_sampling() -> types.ModuleType:
    """k_diffusion.sampling, or skip the test when k-diffusion is not installed."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1)")
    for dep in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"k-diffusion's sampling module needs {dep}")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec  # so importlib.util.find_spec("k_diffusion") still answers once the stub is in place
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    module = importlib.import_module("k_diffusion.sampling")
    pkg.sampling = module
    return module


def append_dims(x, target_dims):  # noqa: ANN001, ANN201 - k-diffusion's helper, same contract
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


def diffusers() -> types.ModuleType:
    """The diffusers package, or skip the test when it is not installed."""
    return pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]')")
