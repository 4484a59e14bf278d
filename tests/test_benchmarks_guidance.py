"""benchmarks/guidance.py's pieces (not the full run): the metric wiring is exact on real images against
themselves, every method samples from the same noise (cfg at w = 1 is the conditional run), NFE counts
guidance's extra evaluations, and the claim verdicts point the claimed way."""
import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("guidance")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def models(bench):
    return bench.Models.load()


@pytest.fixture(scope="module")
def ref(bench, models):
    return bench.Reference.load(models.clf)


def test_held_out_images_scored_against_themselves_are_a_perfect_match(bench, models, ref):
    x, y = bench.digits_split("heldout")
    s = bench.score({"x": x, "labels": y, "nfe": 0, "wall": 0.0}, models, ref)
    assert s["fd"] < 1e-9  # the same feature set: identical Gaussian fits
    assert s["precision"] == 1.0 and s["recall"] == 1.0  # every point lies in its own k-NN ball
    assert s["accuracy"] == pytest.approx(ref.accuracy)  # the classifier's held-out accuracy (0.993 measured)
    assert s["diversity"] > 0


def test_every_method_starts_from_the_same_noise_and_counts_its_evaluations(bench, models):
    setup = bench.Setup(steps=4, per_class=3, seeds=(0,), tune_seed=1, tune_per_class=3, quick=True)
    plain = bench.generate(bench.conditional(), models, setup, 3, 0)
    unit = bench.generate(bench.cfg(1.0), models, setup, 3, 0)
    assert torch.allclose(unit["x"], plain["x"], atol=1e-5)  # cfg(w=1) = conditional on the same latent
    other = bench.generate(bench.conditional(), models, setup, 3, 1)
    assert not torch.allclose(other["x"], plain["x"], atol=1e-2)  # another seed is another draw
    assert (plain["nfe"], unit["nfe"]) == (4, 8)  # cfg calls the unconditional model too
    assert bench.generate(bench.gfcg(2.0, 1.0, False), models, setup, 3, 0)["nfe"] == 16  # + reference, classifier
    judged = bench.gfcg(2.0, 1.0, False, noisy=True)
    assert bench.generate(judged, models, setup, 3, 0)["nfe"] == 16  # the noisy classifier counts 1 too
    assert len(judged.probe) == 10 * 4 and judged.probe[0].shape == (3,)  # w_r of every call: 10 classes x 4 steps
    still = bench.generate(bench.apg(1.0, None, 0.5), models, setup, 3, 0)  # w = 1: no update, any momentum
    assert still["nfe"] == 8 and torch.allclose(still["x"], plain["x"], atol=1e-5)
    assert plain["labels"].tolist() == [c for c in range(10) for _ in range(3)]


def test_verdicts_follow_the_claimed_direction_by_two_standard_errors(bench):
    def rows(values):
        return {"seeds": [{"m": v} for v in values]}

    up, base = rows([1.0, 1.2, 1.1]), rows([0.0, 0.1, 0.05])
    diff, se = bench.paired(up, base, "m")
    assert diff == pytest.approx(1.05) and se == pytest.approx(0.05 / math.sqrt(3))
    assert bench.verdict(diff, se, higher=True) == "holds"
    assert bench.verdict(diff, se, higher=False) == "reversed"
    noisy = bench.paired(rows([1.0, -1.0, 0.1]), rows([0.0, 0.0, 0.0]), "m")
    assert bench.verdict(*noisy, higher=True) == "inconclusive"
    assert bench.overall(["holds", "inconclusive"]) == "HOLDS"
    assert bench.overall(["reversed", "holds"]) == "MIXED"


def test_cfg_curve_interpolates_fd_at_a_confidence(bench):
    def row(conf, fd):
        return {"seeds": [{"confidence": conf, "fd": fd}]}

    rows = {"conditional (unguided)": row(0.90, 1.0), "cfg (w=1.5)": row(0.94, 2.0), "cfg (w=2)": row(0.96, 4.0)}
    assert bench.cfg_curve_fd(rows, 0, 0.94) == (pytest.approx(2.0), True)
    assert bench.cfg_curve_fd(rows, 0, 0.95) == (pytest.approx(3.0), True)  # linear between w = 1.5 and 2
    assert bench.cfg_curve_fd(rows, 0, 0.99) == (pytest.approx(4.0), False)  # beyond the curve: its end
