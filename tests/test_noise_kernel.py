"""The fused noise kernels (nodes/core/noise_kernel.py) against hash_blocks' torch ops, the
kernels run by Triton's interpreter on CPU tensors (the same kernel source a GPU compiles), and
(gpu-marked) the compiled kernels on CUDA against the CPU's draws."""
from __future__ import annotations

import importlib.util
import sys
import warnings

import pytest
import torch

pytest.importorskip("triton")

from samplegraph.nodes.core import noise  # noqa: E402
from samplegraph.nodes.core.noise import NoiseSource, RowKeys  # noqa: E402

SIZE = (67, 129)  # 8643 hashes: nine programs, the last partial


@pytest.fixture(scope="module")
def kernels():
    """noise_kernel.py loaded afresh under TRITON_INTERPRET=1 (read when its kernels are decorated)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TRITON_INTERPRET", "1")
    path = noise.__file__.replace("noise.py", "noise_kernel.py")
    spec = importlib.util.spec_from_file_location("samplegraph.nodes.core._noise_kernel_interpreted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    patch.undo()


def recipes() -> dict[str, RowKeys]:
    """Every way a draw keys its rows: given keys, an int step, a per-row and a one-element step tensor."""
    ids = torch.tensor([0, 1, 2**62 + 5, -(2**63), 2**63 - 1] + list(range(7, 69)))[:SIZE[0]]  # (67,) extremes too
    seed_key = noise.NoiseSource(2**63 - 1).seed_key
    return {
        "given keys": RowKeys(ids),
        "int step": RowKeys(ids, 3, noise._wrap(2 * noise.SLOT_MUL), seed_key),
        "initial step": RowKeys(ids, noise.INITIAL_STEP, 0, seed_key),
        "step per row": RowKeys(ids, torch.arange(SIZE[0]) * 7 - 20, noise.UNIFORM_TAG, seed_key),
        "one-element step": RowKeys(ids, torch.tensor([11]), 0, seed_key),
    }


def both(kernels, keys: RowKeys, uniform: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(fused, torch ops) of one draw (B, C, 1 | 2)."""
    fused, ref = (torch.full((*SIZE, 1 + (not uniform)), float("nan"), dtype=dtype) for _ in range(2))
    kernels.stream(keys, fused, uniform)
    noise.torch_streams(keys, ref, uniform)
    return fused, ref


@pytest.mark.parametrize("recipe", list(recipes()))
def test_fused_uniforms_equal_the_torch_path_bit_for_bit(kernels, recipe):
    """Uniforms are integer arithmetic and exact float64 steps: any slip in a key, a constant, a mask
    or a shift shows here."""
    fused, ref = both(kernels, recipes()[recipe], True, torch.float64)
    assert torch.equal(fused, ref)


@pytest.mark.parametrize("recipe", list(recipes()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_normals_equal_the_torch_path_to_float32_rounding(kernels, recipe, dtype):
    """Normal pairs: the same float32 operations, so only log / cos / sin's last bits may differ
    (here numpy's against torch's); every element written, none NaN."""
    fused, ref = both(kernels, recipes()[recipe], False, dtype)
    assert not fused.isnan().any()
    step = 1e-2 if dtype == torch.bfloat16 else 1e-6  # one rounding step of the output dtype at |z| < 7
    torch.testing.assert_close(fused.double(), ref.double(), rtol=0, atol=4 * step)
    if dtype != torch.bfloat16:  # the interpreter truncates float32 to bfloat16 (GPUs and torch round to nearest)
        assert (fused == ref).double().mean() > 0.5  # most values identical: the same operations, in order


def test_fused_brownian_inputs_hash_in_place_like_the_torch_path(kernels):
    """pairs_from_inputs: int64 hash inputs in the cells' own bytes become their normal pairs."""
    inputs = torch.arange(-3000, 3001, dtype=torch.int64) * noise.GOLDEN  # (6001,) spread over 64 bits
    cells, ref = (inputs.clone().view(torch.float32).view(-1, 2) for _ in range(2))  # (N, 2) float32 bytes
    kernels.pairs_from_inputs(cells.view(torch.int64).view(-1), cells)
    noise.pairs_from_inputs_(ref)
    torch.testing.assert_close(cells, ref, rtol=0, atol=4e-6)


def test_fused_kernel_reads_strided_ids_and_steps(kernels):
    """Particle ids and steps that are views with strides (every other row) key the rows they show."""
    ids, steps = torch.arange(2 * SIZE[0]) * 5, torch.arange(2 * SIZE[0]) - 9  # (2B,)
    strided = RowKeys(ids[::2], steps[::2], 3, 11)
    fused, ref = both(kernels, strided, True, torch.float64)
    assert torch.equal(fused, ref)
    assert torch.equal(ref, both(kernels, RowKeys(ids[::2].clone(), steps[::2].clone(), 3, 11), True, torch.float64)[1])


def test_fused_kernel_handles_empty_draws(kernels):
    """A draw of no elements launches nothing (and writes nothing)."""
    out = torch.empty(0, 5, 2)
    kernels.stream(RowKeys(torch.arange(0), 3), out, False)
    kernels.pairs_from_inputs(torch.empty(0, dtype=torch.int64), torch.empty(0, 2))


def test_probe_accepts_a_working_kernel_and_refuses_a_broken_one(kernels, monkeypatch):
    """fused_kernel_works runs both paths on the device: the interpreted kernel agrees (True, no
    warning); a kernel that cannot launch (compiled Triton on a CPU tensor) or disagrees falls back
    to the torch path with a warning naming the device."""
    cpu = torch.device("cpu")
    monkeypatch.setitem(sys.modules, "samplegraph.nodes.core.noise_kernel", kernels)
    monkeypatch.setattr(sys.modules["samplegraph.nodes.core"], "noise_kernel", kernels, raising=False)
    noise.fused_kernel_works.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert noise.fused_kernel_works(cpu)
    noise.fused_kernel_works.cache_clear()
    monkeypatch.setattr(kernels, "stream", lambda keys, out, uniform: out.fill_(0.25))  # writes wrong values
    with pytest.warns(RuntimeWarning, match="disagrees with the torch path on cpu"):
        assert not noise.fused_kernel_works(cpu)
    noise.fused_kernel_works.cache_clear()
    monkeypatch.setattr(kernels, "stream", lambda *args: (_ for _ in ()).throw(RuntimeError("no driver")))
    with pytest.warns(RuntimeWarning, match=r"does not run on cpu \(RuntimeError: no driver\)"):
        assert not noise.fused_kernel_works(cpu)
    noise.fused_kernel_works.cache_clear()


def test_probe_is_false_without_triton(monkeypatch):
    """No Triton installed: the torch path, silently (nothing to fix)."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    noise.fused_kernel_works.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not noise.fused_kernel_works(torch.device("cuda"))
    noise.fused_kernel_works.cache_clear()


def test_host_key_terms_equal_the_device_ones():
    """An int step's key term, computed with Python ints, equals the tensor computation."""
    for step in (0, 3, noise.INITIAL_STEP, 2**40 + 7, -(2**62)):
        keys = RowKeys(torch.arange(4), step, noise._wrap(5 * noise.SLOT_MUL), noise.NoiseSource(9).seed_key)
        tensor_term = RowKeys(keys.base, torch.tensor([step]), keys.offset, keys.seed_key).term()
        assert keys.term() == int(tensor_term[0])
    z = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), noise.GOLDEN])
    assert [noise.mix64_int(int(v)) for v in z] == noise.mix64(z).tolist()


@pytest.mark.gpu
def test_cuda_draws_run_the_fused_kernel_and_match_the_cpu_draws():
    """On CUDA the probe passes, uniforms equal the CPU's bit for bit, normals (every dtype) and
    Brownian increments agree to float32 rounding, and a split batch draws what the whole does."""
    cuda = torch.device("cuda")
    assert noise.fused_kernel_works(cuda)
    src, particle = NoiseSource(5), torch.arange(1000) * 3 + 1  # (B,)
    for step in (3, torch.arange(1000) % 7):
        on_cuda = step.to(cuda) if isinstance(step, torch.Tensor) else step
        assert torch.equal(src.uniform(particle.to(cuda), on_cuda, (37,)).cpu(), src.uniform(particle, step, (37,)))
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            gpu = src.normal(particle.to(cuda), on_cuda, (37,), dtype=dtype).cpu()
            cpu = src.normal(particle, step, (37,), dtype=dtype)
            torch.testing.assert_close(gpu, cpu, rtol=4 * torch.finfo(dtype).eps, atol=2e-5)
    whole = src.normal(particle.to(cuda), 3, (37,))
    parts = torch.cat([src.normal(particle[:400].to(cuda), 3, (37,)), src.normal(particle[400:].to(cuda), 3, (37,))])
    assert torch.equal(whole, parts)
    sigma, sigma_next = torch.tensor(2.0), torch.tensor(1.5)
    gpu = src.brownian(particle.to(cuda), sigma.to(cuda), sigma_next.to(cuda), (9,)).cpu()
    torch.testing.assert_close(gpu, src.brownian(particle, sigma, sigma_next, (9,)), rtol=1e-5, atol=1e-4)
