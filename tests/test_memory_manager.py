"""The device-memory manager (runtime/memory.py): least-recently-used order and budget accounting with a
recording mover; moves triggered by a module's (and its children's) calls, `.to(device)` a no-op; a
component over the budget, or one that cannot fit in free memory, is a NodeError naming it, its size and the
limit; a CUDA out-of-memory during a move or a node offloads the others and retries; --vram-budget parsing;
the tiny SD pipeline gives bit-identical images with the manager on, its report naming each offload; the tiny
SDXL, SD3 and Flux pipelines run one component at a time under a budget of their largest, bit-identical; SDPA
attention. GPU tests (skipped without CUDA): under a budget smaller than the pipeline, real offloads happen
and the image is unchanged."""
import json
from pathlib import Path

import pytest
import torch

from helpers_pipeline import FAMILY_SIZES, family_folder, family_txt2img
from samplegraph import Node, Runtime, node
from samplegraph.graph.errors import NodeError, NodeRunError, WorkflowError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.runtime import cli
from samplegraph.runtime.memory import MemoryManager, parse_bytes

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
TXT2IMG = ROOT / "workflows" / "txt2img.json"


DEVICE = torch.device("cpu", 0)  # the CPU under another name: moves onto it are told apart from offloads to 'cpu'


class RecordingMover:
    """Records (module, device) moves and copies nothing; `free` bytes on the device when set; `fail` raises a
    CUDA out-of-memory on the next that many moves onto the device."""

    def __init__(self, free: int | None = None, fail: int = 0):
        self.moves: list[tuple[torch.nn.Module, str]] = []
        self.free, self.fail = free, fail

    def move(self, module: torch.nn.Module, device: torch.device) -> bool:
        if self.fail and device == DEVICE:
            self.fail -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        self.moves.append((module, str(device)))
        return True

    def free_bytes(self, device: torch.device) -> int | None:
        return self.free


def manager(budget: int | None, mover: RecordingMover | None = None) -> MemoryManager:
    return MemoryManager(DEVICE, budget, mover=mover or RecordingMover())


def linear(n: int) -> torch.nn.Module:
    return torch.nn.Linear(n, n, bias=False)  # n*n float32 weights: 4 n^2 bytes


def names(m: MemoryManager, modules: dict[str, torch.nn.Module]) -> list[tuple[str, str]]:
    """The mover's log as (name, device)."""
    by_id = {id(v): k for k, v in modules.items()}
    return [(by_id[id(mod)], dev) for mod, dev in m.mover.moves]


def test_lru_order_and_budget_accounting():
    mods = {"a": linear(10), "b": linear(10), "c": linear(10)}  # 400 bytes each
    m = manager(budget=1000)
    for name, mod in mods.items():
        m.manage(name, mod)
    assert names(m, mods) == [("a", "cpu"), ("b", "cpu"), ("c", "cpu")] and m.resident() == []
    comps = {c.name: c for c in m.components.values()}
    m.mover.moves.clear()
    m.use(comps["a"]), m.use(comps["b"])
    assert m.resident() == ["a", "b"] and m.resident_bytes == 800
    m.use(comps["a"])  # a becomes the most recent: b is now the one to go
    assert m.resident() == ["b", "a"]
    m.use(comps["c"])
    assert m.resident() == ["a", "c"] and m.resident_bytes == 800 and m.peak_resident_bytes == 800
    assert names(m, mods) == [("a", "cpu:0"), ("b", "cpu:0"), ("b", "cpu"), ("c", "cpu:0")]
    assert (m.moved_in.count, m.moved_in.bytes, m.moved_out.count, m.evictions) == (3, 1200, 4, 1)
    m.use(comps["c"])  # resident: nothing moves
    assert len(m.mover.moves) == 4


def test_a_call_makes_the_component_resident_and_to_device_is_a_noop():
    outer = torch.nn.Sequential(linear(4), linear(4))
    other = linear(4)
    m = manager(budget=128)  # outer (two 64-byte layers) or other, not both
    m.manage("outer", outer), m.manage("other", other)
    m.mover.moves.clear()
    x = torch.randn(2, 4)
    assert torch.equal(outer(x), outer[1](outer[0](x)))
    assert m.resident() == ["outer"]
    other(x)
    assert m.resident() == ["other"] and names(m, {"outer": outer, "other": other}) == [
        ("outer", "cpu:0"), ("outer", "cpu"), ("other", "cpu:0")]
    outer[1](x)  # a direct child's call (how AutoencoderKL.decode enters the VAE) moves the whole component
    assert m.resident() == ["outer"]
    moves = len(m.mover.moves)
    assert outer.to("cpu") is outer and outer.to(torch.device("cpu")) is outer and len(m.mover.moves) == moves
    outer.to(torch.float64)  # a dtype change applies, and the component's size follows it
    assert outer[0].weight.dtype == torch.float64
    assert {c.name: c.nbytes for c in m.components.values()}["outer"] == 256 == m.resident_bytes


def test_a_component_over_the_budget_is_refused_by_name_and_size():
    m = manager(budget=parse_bytes("1KiB"))
    with pytest.raises(NodeError, match=r"component 'pipe.model.net' \(Linear, 1\.6 KiB\) alone exceeds the memory "
                                        r"budget of 1\.0 KiB .*--vram-budget"):
        m.manage("pipe.model.net", linear(20))  # 1600 bytes


def test_free_device_memory_bounds_residency_and_a_misfit_is_named():
    a, b = linear(10), linear(10)  # 400 bytes each
    m = manager(budget=None, mover=RecordingMover(free=500))
    m.manage("a", a), m.manage("b", b)
    a(torch.zeros(1, 10))
    b(torch.zeros(1, 10))  # this fake device reports 500 bytes free whatever is resident: both stay
    assert m.resident() == ["a", "b"]
    m.mover.free = 300  # the device filled up: b does not fit even with a offloaded
    m.offload_all()
    with pytest.raises(NodeError, match=r"component 'b' \(Linear, 400 B\) cannot be moved onto cpu:0: only 300 B is "
                                        r"free with every other component offloaded"):
        b(torch.zeros(1, 10))


def test_out_of_memory_during_a_move_offloads_the_others_and_retries():
    a, b = linear(10), linear(10)
    m = manager(budget=None)
    m.manage("a", a), m.manage("b", b)
    a(torch.zeros(1, 10))
    m.mover.fail = 1  # the next move onto the device fails once
    b(torch.zeros(1, 10))
    assert m.resident() == ["b"]
    m.mover.fail = 2  # and fails again after a is offloaded: a located error, not a CUDA traceback
    with pytest.raises(NodeError, match=r"component 'a' \(Linear, 400 B\) cannot be moved onto cpu:0: it does not fit"):
        a(torch.zeros(1, 10))
    assert m.resident() == [] and m.resident_bytes == 0


def test_a_collected_module_is_forgotten_and_frees_its_budget():
    m = manager(budget=1000)
    a = linear(10)
    m.manage("a", a)
    a(torch.zeros(1, 10))
    assert m.resident_bytes == 400
    m.mover.moves.clear()  # the log holds the module too
    del a
    assert m.resident() == [] and m.resident_bytes == 0
    assert m.report(m.snapshot())["components"]["a"] == {"class": "Linear", "bytes": 400, "resident": False,
                                                         "loaded": False}


@pytest.mark.parametrize("text, expected", [("6GiB", 6 << 30), ("512 MiB", 512 << 20), ("1.5GB", 1_500_000_000),
                                            ("4g", 4_000_000_000), ("1000000", 1_000_000), (2048, 2048)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["6 lemons", "", "-1GiB", "0", "GiB", "1e9"])
def test_bad_budgets_are_located_errors(text, capsys):
    with pytest.raises(WorkflowError, match="vram_budget"):
        Runtime(device="cpu", cache=False, vram_budget=text)
    with pytest.raises(SystemExit) as e:
        cli.main(["run", str(TXT2IMG), "--vram-budget", text])
    assert e.value.code == 2 and "--vram-budget" in capsys.readouterr().err


@node("test.oom_once")
class OutOfMemoryOnce(Node):
    """Registers a layer with the run's manager, calls it, and fails with a CUDA OOM the first time it runs."""

    def run(self, ctx: NodeContext) -> float:
        layer = HELD.setdefault("layer", linear(10))
        if ctx.residency is not None:
            ctx.residency.manage("layer", layer)
        y = layer(torch.ones(1, 10))
        HELD["runs"] = HELD.get("runs", 0) + 1
        if HELD["runs"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return float(y.detach().sum())


HELD: dict = {}


def test_a_node_out_of_device_memory_runs_again_with_the_components_offloaded():
    HELD.clear()
    rt = Runtime(device="cpu", cache=False, nodes=[OutOfMemoryOnce], vram_budget="1MiB")
    rt.residency = manager(budget=1 << 20)
    events = []
    result = rt.run({"version": 1, "nodes": {"n": {"kind": "test.oom_once"}}, "outputs": ["n"]}, on_event=events.append)
    entry = result.report.node("n")
    assert HELD["runs"] == 2 and entry.metrics["warnings"] == [
        "out of memory on cpu with layer resident; offloaded them and ran the node again"]
    assert entry.transfers["evictions"] == 1 and entry.transfers["in"]["count"] == 2
    assert any(type(e).__name__ == "NodeWarning" for e in events)
    HELD["runs"] = 0  # without a manager (a CPU run without a budget) the OOM is the node's located error
    with pytest.raises(NodeRunError, match=r"node 'n' \(test.oom_once\): out of memory on cpu: an allocation of "
                                           r"8\.00 GiB failed"):
        Runtime(device="cpu", cache=False, nodes=[OutOfMemoryOnce]).run(
            {"version": 1, "nodes": {"n": {"kind": "test.oom_once"}}, "outputs": ["n"]})


# --- the tiny SD pipeline (diffusers peer) ---

@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    from helpers_pipeline import build_sd_pipeline
    from peers import diffusers
    diffusers()  # skip without the peer
    return build_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_memory"))


def txt2img(path: Path, steps: int = 3) -> dict:
    wf = json.loads(TXT2IMG.read_text())
    wf["nodes"]["pipe"]["params"]["path"] = str(path)
    wf["nodes"]["sigmas"]["params"]["steps"] = steps
    wf["nodes"]["latent"]["params"].update(width=64, height=64)
    return wf


SIZES = {"pipe.model.net": 259184, "pipe.text_encoder.encoder": 46500, "pipe.vae.vae": 27324}  # the tiny pipeline


def test_pipeline_results_are_unchanged_and_each_offload_is_reported(sd):
    wf = txt2img(sd)
    plain = Runtime(device="cpu").run(wf, outputs=["decode"])
    rt = Runtime(device="cpu", vram_budget=SIZES["pipe.model.net"])  # the UNet alone fits, nothing beside it
    rt.residency = manager(SIZES["pipe.model.net"])
    managed = rt.run(wf, outputs=["decode"])
    assert torch.equal(plain["decode"], managed["decode"])
    memory = managed.report.memory
    assert {k: v["bytes"] for k, v in memory["components"].items()} == SIZES
    assert [(n, d) for n, d in names(rt.residency, {c.name: c.ref() for c in rt.residency.components.values()})] == [
        ("pipe.model.net", "cpu"), ("pipe.text_encoder.encoder", "cpu"), ("pipe.vae.vae", "cpu"),  # loaded, offloaded
        ("pipe.text_encoder.encoder", "cpu:0"),  # text.encode (prompt and negative)
        ("pipe.text_encoder.encoder", "cpu"), ("pipe.model.net", "cpu:0"),  # sample: the UNet needs the whole budget
        ("pipe.model.net", "cpu"), ("pipe.vae.vae", "cpu:0")]  # vae.decode
    moves = {n.node: n.transfers for n in managed.report.nodes if n.transfers is not None}
    assert set(moves) == {"pipe", "negative", "sample", "decode"} or set(moves) == {"pipe", "prompt", "sample", "decode"}
    assert moves["sample"]["evictions"] == 1 and moves["sample"]["in"]["bytes"] == SIZES["pipe.model.net"]
    assert memory["peak_resident_bytes"] == SIZES["pipe.model.net"] and memory["transfers"]["evictions"] == 2
    assert plain.report.memory is None and all(n.transfers is None for n in plain.report.nodes)


def test_pipeline_component_over_the_budget_is_located_at_the_pipeline_node(sd):
    with pytest.raises(NodeRunError, match=r"node 'pipe' \(model.pipeline\): component 'pipe.model.net' "
                                           r"\(UNetNet\(UNet2DConditionModel\), 253\.1 KiB\) alone exceeds the memory "
                                           r"budget of 100\.0 KiB"):
        Runtime(device="cpu", cache=False, vram_budget="100KiB").run(txt2img(sd), outputs=["decode"])


def test_cli_prints_the_memory_summary(sd, tmp_path, capsys):
    code = cli.main(["run", str(TXT2IMG), "--set", f"pipe.path={sd}", "--set", "sigmas.steps=2", "--set",
                     "latent.width=64", "--set", "latent.height=64", "--device", "cpu", "--no-cache", "--quiet",
                     "--vram-budget", "300KiB", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "memory: 0 transfers (0 B, 0.00 s), " in out  # on the CPU nothing moves; the budget holds
    assert "budget 300.0 KiB, peak resident 253.1 KiB" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["memory"]["budget_bytes"] == 300 << 10


def test_attention_is_torch_sdpa(sd):
    """diffusers' Attention picks AttnProcessor2_0 (F.scaled_dot_product_attention) on torch 2; transformers' CLIP
    runs its 'sdpa' attention."""
    from samplegraph.nodes.pipelines.pipeline import ModelPipeline
    pipe = ModelPipeline(path=str(sd)).run(NodeContext.detached())
    processors = {type(p).__name__ for p in pipe.model.net.unet.attn_processors.values()}
    processors |= {type(p).__name__ for p in pipe.vae.vae.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}
    assert pipe.text_encoder.encoder.config._attn_implementation == "sdpa"


# --- on a GPU ---

@pytest.mark.gpu
def test_gpu_offload_under_a_budget_keeps_the_image(sd):
    wf = txt2img(sd, steps=4)
    free = Runtime(device="cuda").run(wf, outputs=["decode"])
    rt = Runtime(device="cuda", vram_budget=SIZES["pipe.model.net"])
    tight = rt.run(wf, outputs=["decode"])
    assert torch.equal(free["decode"], tight["decode"])
    moved = tight.report.memory["transfers"]
    assert moved["evictions"] == 2 and moved["in"]["count"] == 3 and moved["in"]["bytes"] == sum(SIZES.values())
    assert free.report.memory["transfers"]["evictions"] == 0
    assert all(n.peak_cuda_bytes is not None for n in tight.report.nodes)
    on_device = {c.name: next(c.ref().parameters()).device.type for c in rt.residency.components.values()}
    assert on_device == {"pipe.model.net": "cpu", "pipe.text_encoder.encoder": "cpu", "pipe.vae.vae": "cuda"}
    cpu = Runtime(device="cpu").run(wf, outputs=["decode"])["decode"]
    assert (tight["decode"].cpu() - cpu).abs().max() < 1e-3


@pytest.mark.gpu
def test_gpu_component_larger_than_free_memory_is_a_located_error(sd):
    rt = Runtime(device="cuda")
    rt.residency.mover.free_bytes = lambda device: 1000  # a full GPU
    with pytest.raises(NodeRunError, match=r"node '(prompt|negative)' \(text.encode\): component "
                                           r"'pipe.text_encoder.encoder' \(CLIPTextModel, 45\.4 KiB\) cannot be moved "
                                           r"onto cuda:\d: only 1000 B is free"):
        rt.run(txt2img(sd), outputs=["decode"])


# --- every other family: their components found and managed without family code knowing about residency ---

@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_every_family_runs_one_component_at_a_time_with_the_same_image(family, tmp_path):
    """Under a budget of its largest component every text encoder, the denoising network and the VAE are
    managed, at most one is resident at a time, and the image is bit-identical to an unmanaged run."""
    wf = family_txt2img(family, family_folder(family, tmp_path / family))
    plain = Runtime(device="cpu", cache=False).run(wf, outputs=["decode"])
    probe = Runtime(device="cpu", cache=False, vram_budget="1GiB")
    probe.residency = manager(1 << 30)
    sizes = {k: v["bytes"] for k, v in probe.run(wf, outputs=["decode"]).report.memory["components"].items()}
    encoders = {"sdxl": 2, "sd3": 3, "flux": 2}[family]
    assert sum(".text_encoder." in k for k in sizes) == encoders and len(sizes) == encoders + 2, sizes
    rt = Runtime(device="cpu", cache=False, vram_budget=max(sizes.values()))
    rt.residency = manager(max(sizes.values()))
    managed = rt.run(wf, outputs=["decode"])
    assert torch.equal(plain["decode"], managed["decode"])
    memory = managed.report.memory
    assert memory["peak_resident_bytes"] <= max(sizes.values()) and memory["transfers"]["evictions"] >= len(sizes) - 1
