"""Each token id's bytes from a Hugging Face tokenizer's JSON description (no transformers import here).

Byte-level BPE (GPT-2, SmolLM2, Llama-3) spells every byte as a printable character (Radford et al.
2019, GPT-2's `bytes_to_unicode`); SentencePiece-style vocabularies (Llama-2, Mistral) spell a space as
U+2581 and unknown bytes as `<0xNN>`. Added tokens are literal text: special ones that end a sequence
have no bytes (they never appear in a text), other special tokens keep their literal spelling."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ...graph.errors import NodeError

BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SPM_SPACE = "\u2581"


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    extra = [b for b in range(256) if b not in keep]
    chars = {b: chr(b) for b in keep}
    chars.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return chars


UNICODE_TO_BYTE = {c: b for b, c in byte_to_unicode().items()}


def byte_level_bytes(piece: str) -> bytes:
    """The bytes a byte-level BPE token string stands for."""
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in piece)
    except KeyError as e:
        raise NodeError(f"token {piece!r} has a character {e.args[0]!r} outside the byte-level alphabet; "
                        f"the tokenizer is not a byte-level BPE") from None


def sentencepiece_bytes(piece: str) -> bytes:
    """The bytes a SentencePiece-style token string stands for (U+2581 = space, <0xNN> = one byte)."""
    m = BYTE_FALLBACK.match(piece)
    return bytes([int(m.group(1), 16)]) if m else piece.replace(SPM_SPACE, " ").encode("utf-8")


def decoder_kinds(decoder: dict[str, Any] | None) -> set[str]:
    """The decoder types of a tokenizer.json decoder, through Sequence decoders."""
    if not decoder:
        return set()
    if decoder.get("type") == "Sequence":
        return set().union(*(decoder_kinds(d) for d in decoder.get("decoders", [])))
    return {str(decoder.get("type"))}


def token_bytes(tokenizer_json: str, size: int, eos: Iterable[int]) -> tuple[bytes, ...]:
    """(size,) bytes of every token id, from a fast tokenizer's `to_str()` JSON; ids beyond the tokenizer's
    vocabulary (a model's padded embedding rows) get no bytes."""
    spec = json.loads(tokenizer_json)
    kinds = decoder_kinds(spec.get("decoder"))
    if "ByteLevel" in kinds:
        spell = byte_level_bytes
    elif kinds & {"Metaspace", "ByteFallback", "Replace"}:
        spell = sentencepiece_bytes
    else:
        raise NodeError(f"tokenizer decoder {sorted(kinds) or None} is not supported: samplegraph reads byte-level "
                        f"BPE and SentencePiece-style (U+2581, <0xNN>) vocabularies")
    vocab = spec.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        raise NodeError("the tokenizer has no token->id vocabulary (only BPE/WordPiece-style models are supported)")
    out = [b""] * size
    for piece, i in vocab.items():
        if 0 <= i < size:
            out[i] = spell(piece)
    ends = set(eos)
    for added in spec.get("added_tokens", []):
        i = int(added["id"])
        if 0 <= i < size:
            out[i] = b"" if i in ends else added["content"].encode("utf-8")
    return tuple(out)
