"""io nodes: safetensors round trips, out_dir paths, atomic writes, located errors, readable plots."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from samplegraph import Node, NodeRunError, Registry, Runtime, WorkflowError, node
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Distribution
from samplegraph.nodes.io.common import atomic_write
from samplegraph.nodes.io.plot_samples import VIRIDIS, Layout, PlotSamples
from samplegraph.nodes.io.save_tensor import SaveTensor


class Mixture(Distribution):
    """Equal-weight mixture of 2-D Gaussians N(m_k, sd^2 I), exact draws and log-density."""

    def __init__(self, means: list[list[float]], sd: float):
        self.means, self.sd = torch.tensor(means, dtype=torch.float64), sd  # (K, 2)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)  # (n,)
        return self.means[k] + self.sd * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        sq = ((x[:, None, :] - self.means) ** 2).sum(dim=-1)  # (B, K)
        norm = math.log(len(self.means) * 2 * math.pi * self.sd**2)
        return torch.logsumexp(-0.5 * sq / self.sd**2, dim=1) - norm


RING = [[4 * math.cos(a * math.pi / 4), 4 * math.sin(a * math.pi / 4)] for a in range(8)]


@node("test.ring")
class Ring(Node):
    """Eight Gaussians on a circle of radius 4."""

    def run(self) -> Distribution:
        return Mixture(RING, 0.3)


@node("test.tensor")
class TensorSource(Node):
    """A seeded standard-normal tensor of the given shape (scaled, shifted)."""

    shape: tuple[int, ...] = (64, 2)
    scale: float = 1.0
    shift: float = 0.0

    def run(self) -> torch.Tensor:
        return self.shift + self.scale * torch.randn(*self.shape, generator=torch.Generator().manual_seed(0))


def runtime() -> Runtime:
    return Runtime(registry=Registry([Ring, TensorSource, SaveTensor, PlotSamples]), cache=False)


def test_save_round_trip_is_bit_exact_and_lands_in_out_dir(tmp_path):
    wf = {"nodes": {"src": {"kind": "test.tensor", "params": {"shape": [5, 3, 2]}},
                    "save": {"kind": "io.save_tensor", "inputs": {"x": "src"},
                             "params": {"path": "sub/dir/out.safetensors", "key": "samples"}}},
          "outputs": ["src", "save"]}
    result = runtime().run(wf, out_dir=tmp_path)
    assert result["save"] == str((tmp_path / "sub/dir/out.safetensors").resolve())
    assert torch.equal(load_file(result["save"])["samples"], result["src"])
    with safe_open(result["save"], "pt") as f:
        assert f.metadata() == {"node": "save", "shape": "[5, 3, 2]", "dtype": "float32"}
    assert sorted(p.name for p in (tmp_path / "sub/dir").iterdir()) == ["out.safetensors"]  # no temp files


@pytest.mark.parametrize("x", [torch.randn(4, 3, dtype=torch.float64).T, torch.randn(7).to(torch.bfloat16),
                               torch.arange(12).reshape(3, 4)], ids=["transposed", "bfloat16", "int64"])
def test_save_keeps_dtype_values_and_logical_layout(tmp_path, x):
    path = SaveTensor(path=str(tmp_path / "abs.safetensors")).run(x, NodeContext.detached(out_dir=tmp_path / "no"))
    assert path == str(tmp_path / "abs.safetensors")  # absolute paths ignore out_dir
    loaded = load_file(path)["x"]
    assert loaded.dtype == x.dtype and torch.equal(loaded, x)


def test_save_replaces_an_existing_file_whole(tmp_path):
    ctx = NodeContext.detached(out_dir=tmp_path)
    SaveTensor(path="x.safetensors").run(torch.zeros(1000), ctx)
    SaveTensor(path="x.safetensors").run(torch.ones(3), ctx)
    assert torch.equal(load_file(tmp_path / "x.safetensors")["x"], torch.ones(3))


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
    with pytest.raises(NodeError, match=r"cannot write '.*keep.bin/x.png'"):
        atomic_write(target / "x.png", lambda f: f.write(b"png"))  # parent is a file


def test_bad_params_are_reported_together_and_located():
    wf = {"nodes": {"src": {"kind": "test.tensor"},
                    "save": {"kind": "io.save_tensor", "inputs": {"x": "src"}, "params": {"path": "out.npy"}},
                    "plot": {"kind": "io.plot_samples", "inputs": {"samples": "src"},
                             "params": {"path": "plot.jpg", "extent": [1, 0, 0, 1]}}},
          "outputs": ["save", "plot"]}
    with pytest.raises(WorkflowError) as err:
        runtime().run(wf)
    text = str(err.value)
    assert "node 'save', param 'path': must be a file name ending in '.safetensors'" in text
    assert "got 'out.npy'" in text
    assert "node 'plot', param 'path': must be a file name ending in '.png'" in text
    assert "node 'plot', param 'extent': must be (x_min, x_max, y_min, y_max) with x_min < x_max" in text


def plot_workflow(params: dict, samples: dict, density: bool = True) -> dict:
    inputs = {"samples": "src", **({"density": "ring"} if density else {})}
    return {"nodes": {"src": {"kind": "test.tensor", "params": samples}, "ring": {"kind": "test.ring"},
                      "plot": {"kind": "io.plot_samples", "inputs": inputs, "params": params}},
            "outputs": ["plot"]}


def test_plot_shows_the_exact_density_beside_the_samples(tmp_path):
    params = {"path": "ring.png", "size": 256, "extent": [-6, 6, -6, 6], "title": "ring"}
    samples = {"shape": [500, 2], "scale": 0.1, "shift": -3.0}  # a tight cluster around (-3, -3)
    path = runtime().run(plot_workflow(params, samples), out_dir=tmp_path)["plot"]
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (512, 256)
    lay = Layout(256, titled=True)
    pixels = np.asarray(image.convert("RGB"), dtype=np.int64)  # (H, W, 3)
    density = pixels[lay.top:lay.top + lay.side, lay.left:lay.left + lay.side]  # (s, s, 3) left panel

    def at(panel: np.ndarray, x: float, y: float) -> np.ndarray:
        return panel[int((6 - y) / 12 * lay.side), int((x + 6) / 12 * lay.side)]

    assert np.abs(density - VIRIDIS[0].numpy()).sum(axis=-1).mean() < 40  # mostly the low end of the map
    assert at(density, 4, 0)[1] > 200 and at(density, 0, 4)[1] > 200  # bright modes on the ring
    assert at(density, 0, 0)[1] < 10 and at(density, 2.83, -2.83)[1] > 200
    scatter = pixels[lay.top:lay.top + lay.side, 256 + lay.left:256 + lay.left + lay.side]  # right panel
    assert tuple(at(scatter, -3, -3)) == (200, 30, 30)  # the cluster is drawn where it is
    assert tuple(at(scatter, 0, 0)) == (255, 255, 255)  # white where the density vanishes
    assert 120 < at(scatter, 2.83, 2.83)[0] == at(scatter, 2.83, 2.83)[2] < 200  # faint grey under a mode


def test_plot_puts_density_and_points_the_right_way_up(tmp_path):
    # one mode at (3, 2) and points at (3, 2): both must land top-right, at the same pixel
    plot = PlotSamples(path="up.png", size=128, extent=(-4.0, 4.0, -4.0, 4.0))
    path = plot.run(torch.tensor([[3.0, 2.0]]), NodeContext.detached(out_dir=tmp_path), Mixture([[3.0, 2.0]], 0.3))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)  # (128, 256, 3)
    lay = Layout(128, titled=False)
    row, col = int(2 / 8 * lay.side), int(7 / 8 * lay.side)  # in the panel: y = 2 is 2/8 from the top
    density = pixels[lay.top:lay.top + lay.side, lay.left:lay.left + lay.side, 1]  # (s, s) green channel
    peak = np.unravel_index(density.argmax(), density.shape)
    assert abs(peak[0] - row) <= 1 and abs(peak[1] - col) <= 1
    assert tuple(pixels[lay.top + row, 128 + lay.left + col]) == (200, 30, 30)


def test_plot_without_density_is_one_panel_and_auto_extent_holds_the_samples(tmp_path):
    path = runtime().run(plot_workflow({"path": "s.png", "size": 64}, {"shift": 100.0}, density=False),
                         out_dir=tmp_path)["plot"]
    image = Image.open(path).convert("RGB")
    assert image.size == (64, 64)
    assert (np.asarray(image) == (200, 30, 30)).all(axis=-1).sum() > 20  # far-off samples still in view


def test_plot_counts_subsampled_and_off_plot_points():
    pts = torch.cat([torch.zeros(900, 2), torch.full((100, 2), 50.0)]).double()  # (1000, 2)
    caption = PlotSamples(path="p.png", max_points=200).draw_points(Image.new("RGB", (64, 64)), pts,
                                                                  (-1.0, 1.0, -1.0, 1.0))
    assert caption == "200 of 1000 samples, 20 off-plot"


def test_plot_rejects_points_that_are_not_2d(tmp_path):
    with pytest.raises(NodeRunError, match=r"node 'plot' \(io.plot_samples\): input 'samples' must be .* "
                                           r"\(N, 2\), got shape \(10, 3\)"):
        runtime().run(plot_workflow({"path": "p.png"}, {"shape": [10, 3]}), out_dir=tmp_path)
    assert not (tmp_path / "p.png").exists()


def test_plot_names_its_axes(tmp_path):
    """Axis names are drawn between the extent labels: other names give other pixels there only."""
    pts = torch.zeros(4, 2)
    ctx = NodeContext.detached(out_dir=tmp_path)
    a = np.asarray(Image.open(PlotSamples(path="a.png", size=256).run(pts, ctx)).convert("L"), dtype=np.int64)
    b = np.asarray(Image.open(PlotSamples(path="b.png", size=256, axes=("sigma", "t")).run(pts, ctx)).convert("L"),
                   dtype=np.int64)
    lay = Layout(256, titled=False)
    differ = np.argwhere(a != b)  # (K, 2) rows, cols
    assert differ.size and ((differ[:, 0] > lay.top + lay.side) | (differ[:, 1] < lay.left)).all()
    assert (a[lay.top + lay.side + 2:, lay.left + lay.side // 3:lay.left + 2 * lay.side // 3] < 128).any()
