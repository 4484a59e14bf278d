"""vae.decode / vae.encode `tiling` and `slicing` (nodes/pipelines/tiling.py) on the tiny SD pipeline's AutoencoderKL:
our tiling over the diffusers module is bit-identical to its own tiled_decode / _tiled_encode; through the nodes it
equals AutoencoderKL with enable_tiling / enable_slicing to float32 precision (slicing bit for bit; our loader's module
and the reference's agree bit for bit on whole latents, in the last bits on 4x4 tiles); the tiled result approaches the untiled one as tiles grow and equals
it once the image fits in one tile."""
from pathlib import Path

import pytest
import torch

from helpers_pipeline import build_sd_pipeline
from peers import diffusers
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.tiling import tiled
from samplegraph.nodes.pipelines.vae_decode import VaeDecode
from samplegraph.nodes.pipelines.vae_encode import VaeEncode

LATENT = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # 128 x 128 images
IMAGES = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """(our Vae, diffusers' AutoencoderKL of the same folder); the tiny VAE's sample_size 32 = tiles of 4 latents."""
    d = diffusers()
    sd = build_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_tiling"))
    ours = ModelPipeline(path=str(sd)).run(NodeContext.detached()).vae
    return ours, d.AutoencoderKL.from_pretrained(sd / "vae", local_files_only=True).eval()


def test_tiles_over_the_diffusers_module_are_its_own_tiled_calls_bit_for_bit(vaes):
    _, ref = vaes
    with torch.no_grad():
        decoded = tiled(lambda t: ref.decode(t).sample, LATENT, 4, 32, 0.25)  # (2, 3, 128, 128)
        assert torch.equal(decoded, ref.tiled_decode(LATENT).sample)
        moments = tiled(lambda t: ref.quant_conv(ref.encoder(t)), IMAGES * 2 - 1, 32, 4, 0.25)  # (2, 8, 16, 16)
        assert torch.equal(moments, ref._tiled_encode(IMAGES * 2 - 1))


def reference(ref, what: str, x: torch.Tensor, tiling: bool, slicing: bool) -> torch.Tensor:
    ref.disable_tiling(), ref.disable_slicing()
    if tiling:
        ref.enable_tiling()
    if slicing:
        ref.enable_slicing()
    with torch.no_grad():
        if what == "decode":
            return (ref.decode(x / ref.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        return ref.encode(x * 2 - 1).latent_dist.mode() * ref.config.scaling_factor


@pytest.mark.parametrize("tiling, slicing", [(True, False), (False, True), (True, True)])
def test_nodes_equal_diffusers_enable_tiling_and_slicing(vaes, tiling, slicing):
    ours, ref = vaes
    decoded = VaeDecode(tiling=tiling, slicing=slicing).run(ours, LATENT)
    encoded = VaeEncode(tiling=tiling, slicing=slicing).run(ours, IMAGES)
    for got, expect in ((decoded, reference(ref, "decode", LATENT, tiling, slicing)),
                        (encoded, reference(ref, "encode", IMAGES, tiling, slicing))):
        err = (got - expect).abs().max() / expect.abs().max()
        print(f"tiling={tiling} slicing={slicing} {tuple(got.shape)}: max |err| / max |ref| {err:.1e}")
        assert got.shape == expect.shape and err < 1e-5
    if tiling:  # tiles change the result (the tiny VAE has global attention): a real difference, not a no-op
        assert not torch.allclose(decoded, VaeDecode().run(ours, LATENT), atol=1e-3)


def test_tiled_approaches_untiled_as_tiles_grow(vaes):
    ours, _ = vaes
    plain_d, plain_e = VaeDecode().run(ours, LATENT), VaeEncode().run(ours, IMAGES)
    errors = []
    for tile in (32, 64, 96):
        d = VaeDecode(tiling=True, tile_size=tile).run(ours, LATENT)
        e = VaeEncode(tiling=True, tile_size=tile).run(ours, IMAGES)
        errors.append((float((d - plain_d).square().mean().sqrt() / plain_d.std()),
                       float((e - plain_e).square().mean().sqrt() / plain_e.std())))
    print("relative RMS tiled vs untiled (decode, encode) at tiles 32/64/96 px:", errors)
    assert errors[0][0] > errors[1][0] > errors[2][0] and errors[0][1] > errors[1][1] > errors[2][1]
    assert torch.equal(VaeDecode(tiling=True, tile_size=128).run(ours, LATENT), plain_d)  # one tile: untiled
    assert torch.equal(VaeEncode(tiling=True, tile_size=128).run(ours, IMAGES), plain_e)


def test_tile_size_must_be_a_multiple_of_the_factor(vaes):
    ours, _ = vaes
    with pytest.raises(NodeError, match="'tile_size' = 60 must be a multiple of the VAE's factor 8"):
        VaeDecode(tiling=True, tile_size=60).run(ours, LATENT)
