"""The trained masked diffusion LM (model.mdm): the shipped weights load and reproduce the training
report, carry-over output, user folders (identical outputs, located errors), metrics.text_quality on
hand-made texts, io.save_unmask_order's pixels, and a short sampling run through the contracts."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.discrete.draws import ORDER, TOKEN, categorical, uniform
from samplegraph.nodes.discrete.mdm import MASK, WEIGHTS, ModelMDM, save_mdm_folder
from samplegraph.nodes.discrete.sample import DiscreteSample
from samplegraph.nodes.discrete.sampler import DiscreteSampler
from samplegraph.nodes.discrete.samples import DiscreteSamples
from samplegraph.nodes.discrete.schedules.linear import LinearSchedule
from samplegraph.nodes.discrete.state import GIVEN
from samplegraph.nodes.discrete.template import DiscreteInfill, DiscreteTemplate
from samplegraph.nodes.io.save_unmask_order import GREY, RAMP, SaveUnmaskOrder, step_colour
from samplegraph.nodes.lm.char_lm import BOS, EOS, char_logprobs, load_char_lm
from samplegraph.nodes.lm.generations import Generations
from samplegraph.nodes.lm.grammar import corpus
from samplegraph.nodes.metrics.text_quality import MetricTextQuality
from samplegraph.nodes.metrics.text_scores import unigram_entropy

ROOT = Path(__file__).resolve().parents[1]
INFILL_VALID = 0.8  # of 16 fills of '{"name": "___", "age": __}' (3-letter name, 2-digit age)
sys.path.insert(0, str(ROOT / "training"))
import train_mdm  # noqa: E402


@pytest.fixture(scope="module")
def den():
    return ModelMDM().run()


def training_report() -> dict:
    with safe_open(str(WEIGHTS), framework="pt") as f:
        return json.loads(f.metadata()["training"])


class RandomOrder(DiscreteSampler):
    """Test sampler: one uniformly chosen masked position per step, its token from the model's posterior
    (exact ancestral sampling of the model's any-order joint; the evaluation sampler of train_mdm.py)."""

    def finished(self, state, schedule, den):
        return ~state.masked(den.mask_id).any(-1)

    def step(self, den, schedule, state, noise):
        masked = state.masked(den.mask_id)  # (B, L)
        logp = den(state.tokens, state.t)  # (B, L, V)
        score = uniform(noise, state.particle, state.step, (state.length,), ORDER).masked_fill(~masked, -1.0)
        update = torch.zeros_like(masked).scatter_(1, score.argmax(-1, keepdim=True), True)  # (B, L)
        tokens = categorical(noise, logp, state.particle, state.step, TOKEN, self.precision)
        t_next = (masked.sum(-1) - 1).double() / state.length
        return state.reveal(update, tokens, t_next)


def test_shipped_model_is_normalised_with_carry_over_and_time_agnostic(den):
    assert den.length == 65 and den.mask_id == MASK and den.noise == "masked"
    assert set(den.alphabet()) == set(corpus().alphabet().decode())
    x = torch.full((3, 65), MASK)
    x[0, :10] = torch.tensor(den.encode("1987-02-28"))
    x[1, 5] = EOS
    logp = den(x, torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64))  # (3, L, V)
    assert logp.shape == (3, 65, den.vocab.size) and logp.dtype == torch.float64
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, 65, dtype=torch.float64), atol=1e-12)
    assert bool((logp[..., MASK] == -math.inf).all())
    kept = x != MASK
    assert bool((logp.gather(-1, x.clamp(min=0)[..., None])[..., 0][kept] == 0).all())  # point mass
    assert bool((logp[kept].exp().sum(-1) == 1).all())
    assert torch.equal(den(x, torch.zeros(3, dtype=torch.float64)), logp)  # no t input
    assert bool(torch.isfinite(logp[~kept]).sum(-1).gt(1).all())  # masked positions: a real distribution


def test_heldout_nelbo_from_the_file_matches_the_training_report(den):
    report = training_report()
    check = report["check"]
    assert (check["strings"], check["draws"], check["seed"]) == (train_mdm.CHECK_STRINGS, train_mdm.CHECK_DRAWS,
                                                                 train_mdm.ELBO_SEED)
    assert train_mdm.check_nelbo(den.net, corpus()) == pytest.approx(report["check_nelbo"], abs=1e-4)
    # an upper bound on the model's NLL: never below the data's entropy by more than estimator noise
    assert report["nelbo_per_string"] > report["grammar_nll_per_string"] - 0.3
    assert 0.7 < report["valid"] <= report["in_language"]  # floor: retrained weights must not regress below it


def test_a_saved_folder_loads_through_path_with_identical_outputs(den, tmp_path):
    save_mdm_folder(den.net, tmp_path / "m")
    mine = ModelMDM(path=str(tmp_path / "m")).run()
    x = torch.full((2, 65), MASK)
    x[0, :4] = torch.tensor(den.encode("id=7"))
    t = torch.ones(2, dtype=torch.float64)
    assert torch.equal(mine(x, t), den(x, t))
    before = ModelMDM(path=str(tmp_path / "m")).external_state()
    os.utime(tmp_path / "m" / "model.safetensors", ns=(1, 1))
    assert ModelMDM(path=str(tmp_path / "m")).external_state() != before  # the cache key covers the weights
    assert ModelMDM().external_state() is not None


def test_bad_folders_give_located_errors(den, tmp_path):
    good = save_mdm_folder(den.net, tmp_path / "good")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(NodeError, match=r"pytorch_model\.bin' is a pickle checkpoint"):
        ModelMDM(path=str(pickled)).run()
    missing = tmp_path / "missing"
    save_mdm_folder(den.net, missing)
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["blocks.0.qkv.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(NodeError, match=r"model\.safetensors' does not match .*missing keys \['blocks\.0\.qkv\."):
        ModelMDM(path=str(missing)).run()
    config = json.loads((good / "config.json").read_text())
    (good / "config.json").write_text(json.dumps({**config, "d_model": 32, "heads": 4}))
    with pytest.raises(NodeError, match=r"wrong shapes \['tok\.weight \(47, 64\) \(expected \(47, 32\)\)"):
        ModelMDM(path=str(good)).run()
    (good / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "denoiser"}))
    with pytest.raises(NodeError, match=r"bad architecture config .*denoiser: Field required"):
        ModelMDM(path=str(good)).run()
    (good / "config.json").write_text("{not json")
    with pytest.raises(NodeError, match=r"config\.json' is not a readable JSON file"):
        ModelMDM(path=str(good)).run()
    (good / "config.json").unlink()
    with pytest.raises(NodeError, match=r"config\.json' does not exist"):
        ModelMDM(path=str(good)).run()
    with pytest.raises(NodeError, match="is not a folder"):
        ModelMDM(path=str(tmp_path / "nowhere")).run()


def test_too_long_templates_and_sequences_error(den):
    with pytest.raises(NodeError, match="66 positions is longer than the model's context of 65"):
        DiscreteTemplate(length=66).run().encode(den)
    with pytest.raises(NodeError, match="longer than the model's context of 65"):
        den(torch.full((1, 70), MASK), torch.ones(1, dtype=torch.float64))
    with pytest.raises(NodeError, match=r"'#' at byte 2 .* not in the model's vocabulary"):
        DiscreteInfill(text="id#_").run().encode(den)


def test_text_quality_on_hand_made_texts(tmp_path):
    texts = ["1987-02-28", "1987-02-30", "id=3", "1987-02-28"]
    gen = Generations(texts=tuple(texts), token_ids=((),) * 4, log_weight=torch.zeros(4, dtype=torch.float64),
                      group=torch.zeros(4, dtype=torch.long), finished=torch.ones(4, dtype=torch.bool))
    out = MetricTextQuality(constraint=r"19\d\d-.*").run(gen, NodeContext.detached(out_dir=tmp_path))
    date = math.log(0.25 * 0.3 * 0.1 * 0.1 / 12 / 28)  # kind, century, two digits, month, day of February
    record = math.log(0.25 * 0.3 * 0.4 * 0.9 / 9 * 0.5)  # kind, one pair, id=, a first digit 3, no more digits
    assert out.validity == 0.75 and out.mean_logprob == -math.inf
    assert out.valid_logprob == pytest.approx((2 * date + record) / 3, abs=1e-12)
    assert out.distinct == 0.75 and out.constraint == 0.75
    lm = load_char_lm()
    nll, tokens = 0.0, 0
    for text in texts:  # BOS text EOS through the network by hand
        ids = torch.tensor([[BOS] + lm.encode(text)[1:]])
        logp = char_logprobs(lm.net(ids, torch.arange(ids.shape[1])[None]))[0].double()  # (T, V)
        targets = ids[0, 1:].tolist() + [EOS]
        nll -= sum(float(logp[k, v]) for k, v in enumerate(targets))
        tokens += len(targets)
    assert out.perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-6)
    ent = [unigram_entropy(t) for t in texts]
    assert out.entropy == pytest.approx(sum(ent) / 4, abs=1e-12)
    p = torch.tensor([3, 1], dtype=torch.float64) / 4  # 'id=3': four distinct bytes; 'aaab': 3/4, 1/4
    assert unigram_entropy("id=3") == pytest.approx(math.log(4)) and unigram_entropy("") == 0.0
    assert unigram_entropy("aaab") == pytest.approx(float(-(p * p.log()).sum()))


def test_unmask_order_png_cells_are_coloured_by_reveal_step(den, tmp_path):
    tokens = torch.tensor([[den.encode("a")[0], EOS, den.encode("1")[0]], [EOS, EOS, den.encode("b")[0]]])
    revealed = torch.tensor([[1, 3, GIVEN], [2, 1, 3]])
    samples = DiscreteSamples(texts=("a", ""), token_ids=((), ()), log_weight=torch.zeros(2, dtype=torch.float64),
                              group=torch.zeros(2, dtype=torch.long), finished=torch.ones(2, dtype=torch.bool),
                              tokens=tokens, revealed=revealed, fixed=revealed == GIVEN)
    path = SaveUnmaskOrder(path="order.png", cell=10).run(samples, den, NodeContext.detached(out_dir=tmp_path))
    image = Image.open(path).convert("RGB")
    assert image.size == (30, 20)
    assert image.getpixel((0, 0)) == RAMP[0] and image.getpixel((10, 0)) == RAMP[-1]
    assert image.getpixel((29, 9)) == GREY and image.getpixel((0, 10)) == step_colour(2, 3)
    assert step_colour(2, 3) == RAMP[2]
    assert len({image.getpixel((x, 4)) for x in range(10)}) > 1  # the character is drawn in its cell
    assert len({image.getpixel((10 + x, 4)) for x in range(10)}) == 1  # EOS: an empty cell


def test_sampling_the_shipped_model_through_the_contracts(den, tmp_path):
    """discrete.sample with the random-order sampler reproduces the training report's in-language rate
    (1000 samples of train_mdm.py's own sampler) within 4 binomial standard errors at 96 samples."""
    ctx = NodeContext.detached(out_dir=tmp_path, seed=0)
    n, rate = 96, training_report()["in_language"]
    out = DiscreteSample(particles=n).run(den, LinearSchedule(65), RandomOrder(), DiscreteTemplate(length=65).run(),
                                          ctx)
    assert out.revealed.min() >= 1 and sorted(out.revealed[0].tolist()) == list(range(1, 66))
    quality = MetricTextQuality(perplexity=False).run(out, ctx)
    assert abs(quality.validity - rate) < 4 * math.sqrt(rate * (1 - rate) / n) and quality.distinct > 0.8
    infill = DiscreteInfill(text='{"name": "___", "age": __}').run()
    filled = DiscreteSample(particles=16).run(den, LinearSchedule(16), RandomOrder(), infill, ctx)
    assert all(t.startswith('{"name": "') and t.endswith("}") for t in filled.texts)
    assert MetricTextQuality(perplexity=False).run(filled, ctx).validity >= INFILL_VALID
    png = SaveUnmaskOrder(path="o.png", rows=4, cell=6).run(out, den, ctx)
    assert Image.open(png).size == (65 * 6, 4 * 6)
