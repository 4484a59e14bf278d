"""io.class_grid (the per-class / per-method sample figure of the metrics): exact pixel layout of the rows,
padding of short rows, captions in a left margin, located errors, fan-in from a workflow."""
import numpy as np
import pytest
import torch
from PIL import Image

from samplegraph import Node, Registry, Runtime, node
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.io.class_grid import ClassGrid


def run_grid(tmp_path, images: list[torch.Tensor], **params) -> np.ndarray:
    path = ClassGrid(path="g.png", **params).run(images, NodeContext.detached(out_dir=tmp_path))
    assert path == str(tmp_path / "g.png")
    return np.asarray(Image.open(path))


def test_rows_are_the_batches_in_order_with_grey_padding(tmp_path):
    a = torch.full((3, 2, 2), -1.0)  # black
    b = torch.full((1, 2, 2), 1.0)  # white: one image, then two grey fillers
    px = run_grid(tmp_path, [a, b], scale=1, pad=1, low=-1.0, high=1.0)
    assert px.shape == (2 * 3 + 1, 3 * 3 + 1)  # rows*(H+pad)+pad, cols*(W+pad)+pad, greyscale
    grey = 128  # (0 - low) / (high - low) * 255 rounded
    assert (px[1:3, 1:3] == 0).all() and (px[1:3, 7:9] == 0).all()  # row 0: three black images
    assert (px[4:6, 1:3] == 255).all() and (px[4:6, 4:6] == grey).all() and (px[4:6, 7:9] == grey).all()
    assert (px[0] == grey).all() and (px[:, 0] == grey).all()  # gaps are mid-grey


def test_columns_cut_long_rows_and_scale_upsamples(tmp_path):
    ramp = torch.linspace(0, 1, 5)[:, None, None].expand(5, 1, 1)  # (5, 1, 1) values 0 .. 1
    px = run_grid(tmp_path, [ramp, ramp.flip(0)], columns=2, scale=3, pad=0, low=0.0, high=1.0)
    assert px.shape == (2 * 3, 2 * 3)
    assert px[0, 0] == 0 and px[0, 3] == 64 and px[3, 0] == 255 and px[3, 3] == 191  # 0.25 * 255 = 63.75


def test_rgb_rows_and_captions_in_a_left_margin(tmp_path):
    red = torch.zeros(2, 3, 4, 4)
    red[:, 0] = 1.0  # (B, C, H, W) with C = 3
    plain = run_grid(tmp_path, [red, red], scale=4, pad=1, low=0.0, high=1.0)
    captioned = run_grid(tmp_path, [red, red], scale=4, pad=1, low=0.0, high=1.0, captions=["cfg 2", "apg"])
    margin = captioned.shape[1] - plain.shape[1]
    assert plain.shape[2] == 3 and captioned.shape[0] == plain.shape[0] and margin > 12
    assert (captioned[:, margin:] == plain).all()  # the grid itself is unchanged
    ink = captioned[:, :margin].min(axis=2) < 128  # dark text pixels in the margin
    half = captioned.shape[0] // 2
    assert ink[:half].any() and ink[half:].any()  # one caption per row


@pytest.mark.parametrize("images, params, match", [
    ([torch.zeros(2, 4, 4), torch.zeros(2, 5, 4)], {},
     r"'images\[1\]' holds images of shape \(5, 4\).*'images\[0\]' has \(4, 4\)"),
    ([torch.zeros(2, 4, 4), torch.zeros(2, 2, 4, 4)], {},
     r"input 'images\[1\]' must have shape \(B, H, W\) or \(B, C, H, W\)"),
    ([torch.zeros(2, 4, 4)], {"captions": ["a", "b"]}, r"'captions' has 2 entries but input 'images' has 1 batches"),
    ([torch.zeros(0, 4, 4)], {}, r"every batch linked to input 'images' is empty"),
    ([torch.zeros(1, 4, 4)], {"low": 1.0, "high": 1.0}, r"'high' \(1.0\) must be greater than 'low'"),
])
def test_bad_inputs_are_located(tmp_path, images, params, match):
    with pytest.raises(NodeError, match=match):
        ClassGrid(path="g.png", **params).run(images, NodeContext.detached(out_dir=tmp_path))


@node("test.constant_images")
class ConstantImages(Node):
    """n images (n, 8, 8) of one value."""

    n: int = 4
    value: float = 0.0

    def run(self) -> torch.Tensor:
        return torch.full((self.n, 8, 8), self.value)


def test_fan_in_from_a_workflow_keeps_link_order(tmp_path):
    wf = {"nodes": {
        "dark": {"kind": "test.constant_images", "params": {"value": -1.0}},
        "light": {"kind": "test.constant_images", "params": {"value": 1.0, "n": 2}},
        "grid": {"kind": "io.class_grid", "params": {"path": "rows.png", "scale": 1, "pad": 0},
                 "inputs": {"images": ["light", "dark"]}}},
        "outputs": ["grid"]}
    out = Runtime(registry=Registry([ConstantImages, ClassGrid]), cache=False).run(wf, out_dir=tmp_path)
    px = np.asarray(Image.open(out["grid"]))
    assert px.shape == (16, 32) and (px[:8, :16] == 255).all() and (px[:8, 16:] == 128).all()
    assert (px[8:] == 0).all()


def test_automatic_scale_reaches_the_minimum_side_and_a_title_sits_above(tmp_path):
    """Readable by default: an 8x8 digit grid is at least MIN_SIDE px, a title adds a band on top."""
    from samplegraph.nodes.io.image_grid import MIN_SIDE, ImageGrid

    digits = torch.rand(64, 8, 8) * 2 - 1  # (B, H, W)
    ctx = NodeContext.detached(out_dir=tmp_path)
    plain = np.asarray(Image.open(ImageGrid(path="a.png").run(digits, ctx)).convert("RGB"))
    titled = np.asarray(Image.open(ImageGrid(path="b.png", title="class 3").run(digits, ctx)).convert("RGB"))
    assert MIN_SIDE <= max(plain.shape[:2]) < MIN_SIDE + 73  # 73 canvas px: the next smaller scale is too small
    band = titled.shape[0] - plain.shape[0]
    assert band > 10 and titled.shape[1] == plain.shape[1] and (titled[band:] == plain).all()
    assert (titled[:band] < 128).any() and (titled[:band] == 255).mean() > 0.8  # ink on a white band
    rows = run_grid(tmp_path, [digits[:4], digits[4:8]], title="two rows")
    assert rows.shape[0] > 2 * (8 + 1) * 4  # automatic scale in class_grid too, plus the title band
