"""The one train/held-out split of sklearn's digits (nodes/data/digits.py): fixed, disjoint,
complete, stratified, in the models' [-1, 1] scaling, and the data.digits node in a workflow."""
import pytest
import torch

from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.data.digits import DataDigits, digits_split, heldout_mask

datasets = pytest.importorskip("sklearn.datasets")


def test_split_is_a_fixed_stratified_partition_of_all_1797_images():
    real = datasets.load_digits()
    x_all, y_all = digits_split("all")
    assert torch.equal(x_all, torch.tensor(real.images, dtype=torch.float32) / 8 - 1)  # pixels 0..16 -> [-1, 1]
    assert torch.equal(y_all, torch.tensor(real.target))
    (x_tr, _), (x_ho, y_ho) = digits_split("train"), digits_split("heldout")
    assert (x_tr.shape, x_ho.shape) == ((1497, 8, 8), (300, 8, 8))
    mask = heldout_mask()
    assert torch.equal(x_ho, x_all[mask]) and torch.equal(x_tr, x_all[~mask])  # disjoint and complete
    counts, totals = torch.bincount(y_ho, minlength=10), torch.bincount(y_all, minlength=10)
    assert ((counts - totals * 300 / 1797).abs() <= 1).all()  # each class gives 1/6 of its images, +-1
    # the shipped weights were trained on exactly this split: any change to it must fail here
    heldout_mask.cache_clear()
    idx = heldout_mask().nonzero().squeeze(1)  # (300,)
    assert idx[:8].tolist() == [1, 2, 6, 10, 13, 16, 22, 25] and int(idx.sum()) == 275220


def test_label_filter_and_bad_arguments():
    x, y = digits_split("heldout", label=7)
    assert x.shape[0] == int((digits_split("heldout")[1] == 7).sum()) and (y == 7).all()
    with pytest.raises(NodeError, match="unknown digits split 'test'"):
        digits_split("test")
    with pytest.raises(NodeError, match="label 10 is out of range"):
        digits_split("train", label=10)
    with pytest.raises(ValueError, match="split"):
        DataDigits(split="test")


def test_node_outputs_images_and_labels_ports_in_a_workflow(tmp_path):
    doc = {"nodes": {"real": {"kind": "data.digits", "params": {"split": "heldout", "label": 3}},
                     "grid": {"kind": "io.image_grid", "params": {"path": "real3.png", "columns": 8},
                              "inputs": {"images": "real.images"}}},
           "outputs": ["real.images", "real.labels", "grid"]}
    result = Runtime(device="cpu").run(doc, out_dir=tmp_path)
    images, labels = result["real.images"], result["real.labels"]
    assert images.shape == (labels.shape[0], 8, 8) and labels.shape[0] == 31 and (labels == 3).all()
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert (tmp_path / "real3.png").is_file()
