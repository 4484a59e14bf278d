"""Cond/uncond batching (nodes/models/joint_calls.py): guidance nodes evaluate the Denoisers that share a network
in one network call. Proofs: on a row-wise toy network batched == separate calls bit for bit, with one call
instead of two (every node with `batch`, guidance intervals that leave some rows out, conditioning of 1 or B
rows, values that cannot be stacked fall back); on the tiny SD pipeline batched == separate to float rounding
(median / 99.9th percentile of |err| / RMS below 1e-6 / 1e-5), one UNet call per step instead of two, the same
calls diffusers' StableDiffusionPipeline makes (rows negative-prompt first, its contexts bit for bit); NFE
counts evaluations, not launches; the default keeps the old cache keys."""
from pathlib import Path

import pytest
import torch

from helpers_pipeline import build_sd_pipeline
from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.state import bcast
from samplegraph.nodes.guidance.apg import APG
from samplegraph.nodes.guidance.autoguidance import Autoguidance
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.guidance.cfg_pp import CFGPP
from samplegraph.nodes.guidance.cfg_rescale import CFGRescale
from samplegraph.nodes.guidance.cfg_zero_star import CFGZeroStar
from samplegraph.nodes.guidance.common import Batching, PairGuidance
from samplegraph.nodes.guidance.skip_layer import SkipLayerGuidance
from samplegraph.nodes.models.joint_calls import evaluate
from samplegraph.nodes.models.parametrisation import NetworkDenoiser, Parametrisation
from samplegraph.nodes.pipelines import sd as sd_module
from samplegraph.nodes.pipelines.types import repeat_rows
from test_pipeline_sd import NEGATIVE, PROMPT, SCALE, SIZE, STEPS, diffusers_pipe, quantiles, txt2img

ROOT = Path(__file__).resolve().parents[1]
SAMPLING = Parametrisation(parametrisation="eps_discrete_vp").model_sampling()


class RowWise(torch.nn.Module):
    """A network whose rows are independent: eps = x * mean(context row) + t / 1000; records each call's rows."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.rows.append(x.shape[0])
        c = repeat_rows(context, x.shape[0]).mean(dim=(1, 2))  # (B,)
        return scale * x * bcast(c, x) + bcast(t, x) / 1000  # (B, C, H, W)


def bound(net: RowWise, context: torch.Tensor, **extra) -> NetworkDenoiser:
    return NetworkDenoiser(net, SAMPLING, "eps", cond={"context": context, **extra})


def point(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 2, 4, 4, generator=g, dtype=torch.float64) * 5, torch.tensor([0.5, 3.0, 9.0][:batch],
                                                                                           dtype=torch.float64)


def contexts() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 5, 3, generator=g, dtype=torch.float64), torch.rand(3, 5, 3, generator=g, dtype=torch.float64)


BATCHED = [CFG, CFGRescale, APG, CFGZeroStar, Autoguidance, CFGPP]


def test_every_pair_guidance_node_is_batchable():
    from samplegraph.nodes import builtin_nodes
    pair = {c for c in builtin_nodes() if isinstance(c, type) and issubclass(c, PairGuidance)}
    assert pair == set(BATCHED)
    assert all(issubclass(c, Batching) for c in builtin_nodes() if isinstance(c, type)
               and c.__node_kind__ in ("guidance.gfcg", "guidance.skip_layer"))


def both_ways(run, batched: tuple, separate: tuple) -> None:
    """run(batch, net, other) -> tensors: bit-identical with and without batching, with the network calls
    (rows of each call of net, of other) given."""
    outs = {}
    for batch, rows in ((True, batched), (False, separate)):
        net, other = RowWise(), RowWise()
        outs[batch] = run(batch, net, other)
        assert (net.rows, other.rows) == rows
    assert all(torch.equal(a, b) for a, b in zip(outs[True], outs[False]))


X, SIGMA = point()
CTX_1, CTX_B = contexts()  # one prompt (1 row) and three prompts (3 rows)


@pytest.mark.parametrize("cls", BATCHED, ids=[c.__node_kind__ for c in BATCHED])
def test_batched_equals_separate_calls_with_one_network_call(cls):
    both_ways(lambda batch, net, _: cls(batch=batch).run(bound(net, CTX_B), bound(net, CTX_1)).estimates(X, SIGMA),
              ([6], []), ([3, 3], []))


def test_a_guidance_interval_batches_the_inside_rows_with_all_conditional_rows():
    rule = [CFG(scale=4.0, sigma_hi=5.0, batch=b) for b in (False, True)]  # sigma 9 is outside: uncond skips it
    both_ways(lambda batch, net, _: (rule[batch].run(bound(net, CTX_B), bound(net, CTX_1))(X, SIGMA),),
              ([2 + 3], []), ([2, 3], []))


def test_apg_momentum_batches_too():
    def run(batch, net, _):
        guided = APG(momentum=-0.5, batch=batch).run(bound(net, CTX_B), bound(net, CTX_1))
        call = guided.bound(guided.memory_init(X))
        return call(X, SIGMA), call(X * 0.9, SIGMA), call.memory[0]

    both_ways(run, ([6, 6], []), ([3, 3, 3, 3], []))


def test_skip_layer_batches_cond_and_uncond_and_calls_another_network_alone():
    both_ways(lambda batch, net, other: (SkipLayerGuidance(batch=batch).run(
        bound(net, CTX_B), bound(net, CTX_1), bound(other, CTX_B))(X, SIGMA),), ([6], [3]), ([3, 3], [3]))


def test_calls_that_cannot_share_a_network_call_are_made_alone():
    x, sigma, ctx_1, ctx_b = X, SIGMA, CTX_1, CTX_B
    net, other = RowWise(), RowWise()
    plain = FunctionDenoiser(lambda x_, s_: x_ * 0.5)
    calls = [(bound(net, ctx_b), x, sigma), (bound(other, ctx_1), x, sigma), (plain, x, sigma),
             (bound(net, ctx_1, scale=2.0), x, sigma), (bound(net, ctx_1), x.float(), sigma)]
    outs = evaluate(calls)
    assert net.rows == [3, 3, 3] and other.rows == [3]  # another net, a shared value, a dtype: none stack
    assert all(torch.equal(out, d(x_, s_)) for out, (d, x_, s_) in zip(outs, calls))
    net.rows.clear()
    same = evaluate([(bound(net, ctx_b, scale=2.0), x, sigma), (bound(net, ctx_1, scale=2.0), x[:1], sigma[:1])])
    assert net.rows == [4] and [o.shape[0] for o in same] == [3, 1]  # an equal shared value stacks


def test_a_conditioning_of_the_wrong_row_count_is_refused_as_by_a_separate_call():
    wrong = torch.rand(2, 5, 3, dtype=torch.float64)  # 2 prompts for a batch of 3
    net = RowWise()
    with pytest.raises(NodeError, match="2 prompts but the latent batch is 3"):
        evaluate([(bound(net, wrong), X, SIGMA), (bound(net, CTX_1), X, SIGMA)])


def test_default_batch_keeps_the_cache_key_and_batch_off_changes_it():
    assert CFG(scale=2.0).key_params() == {"scale": 2.0, "sigma_lo": 0.0, "sigma_hi": None}
    assert CFG(scale=2.0, batch=False).key_params()["batch"] is False


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    diffusers()
    return build_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_batching"))


def counted_run(monkeypatch, wf: dict) -> tuple[dict, list[int]]:
    rows: list[int] = []
    forward = sd_module.UNetNet.forward

    def counting(self, x, t, context):
        rows.append(x.shape[0])
        return forward(self, x, t, context)

    monkeypatch.setattr(sd_module.UNetNet, "forward", counting)
    result = Runtime(device="cpu", cache=False).run(wf, outputs=["sample", "decode"])
    monkeypatch.setattr(sd_module.UNetNet, "forward", forward)
    return result, rows


@pytest.mark.parametrize("latents", [1, 2])
def test_sd_pipeline_batched_equals_separate_with_one_unet_call_per_step(sd, monkeypatch, latents):
    runs = {}
    for batch in (True, False):
        wf = txt2img(sd, batch=latents)
        wf["nodes"]["guided"]["params"]["batch"] = batch
        result, rows = counted_run(monkeypatch, wf)
        assert rows == ([2 * latents] * STEPS if batch else [latents] * (2 * STEPS))  # (prompt, negative) x latents
        assert {n.node: n.nfe for n in result.report.nodes}["sample"] == 2 * STEPS  # evaluations, not launches
        runs[batch] = result
    for what in ("sample", "decode"):
        med, p999 = quantiles(runs[True][what], runs[False][what])
        print(f"batched vs separate, {latents} latents, {what}: median {med:.1e}, 99.9% {p999:.1e}")
        assert med < 1e-6 and p999 < 1e-5, (what, med, p999)


def test_sd_pipeline_makes_the_unet_calls_diffusers_makes(sd, monkeypatch):
    """Per step one UNet call on [negative; prompt] rows, contexts bit for bit those of StableDiffusionPipeline."""
    unet_cls = diffusers().UNet2DConditionModel
    calls: dict[str, list] = {"ours": [], "diffusers": []}
    forward, who = unet_cls.forward, ["ours"]

    def recording(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        calls[who[0]].append((sample.clone(), encoder_hidden_states.clone()))
        return forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(unet_cls, "forward", recording)
    result = Runtime(device="cpu", cache=False).run(txt2img(sd), outputs=["latent", "sigmas", "sample"])
    who[0] = "diffusers"
    noise = (result["latent"] / result["sigmas"].values[0]).float()
    diffusers_pipe(sd, "EulerDiscreteScheduler")(prompt=PROMPT, negative_prompt=NEGATIVE, latents=noise,
                                                 num_inference_steps=STEPS, guidance_scale=SCALE, height=SIZE,
                                                 width=SIZE, output_type="latent")
    assert len(calls["ours"]) == len(calls["diffusers"]) == STEPS
    for (x, context), (x_ref, context_ref) in zip(calls["ours"], calls["diffusers"]):
        assert x.shape == x_ref.shape == (2, 4, SIZE // 8, SIZE // 8) and torch.equal(context, context_ref)
        assert torch.allclose(x, x_ref, rtol=1e-5, atol=1e-5)  # the input scaling's own rounding differs
