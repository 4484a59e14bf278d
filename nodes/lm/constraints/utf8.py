"""Code-point ranges as UTF-8 byte-range sequences (the construction of Rust's regex-syntax `Utf8Sequences`):
a set of characters becomes a small union of byte-range products, so a regex over text is an automaton over bytes."""
from __future__ import annotations

from collections.abc import Iterator

MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)  # never encoded in UTF-8
ENCODING_ENDS = (0x7F, 0x7FF, 0xFFFF)  # last code point of each UTF-8 length 1..3

ByteRanges = tuple[tuple[int, int], ...]  # ((lo, hi), ...) one inclusive byte range per encoded byte


def utf8_sequences(lo: int, hi: int) -> Iterator[ByteRanges]:
    """Byte-range sequences whose products are exactly the UTF-8 encodings of code points lo..hi (surrogates
    left out): a byte string encodes such a code point iff it matches one of the sequences."""
    stack = [(lo, min(hi, MAX_CODE_POINT))]
    while stack:
        start, end = stack.pop()
        piece = split_once(start, end)
        if piece is None:
            if start <= end:
                yield tuple(zip(encode(start), encode(end)))
            continue
        stack.extend(reversed(piece))


def split_once(start: int, end: int) -> list[tuple[int, int]] | None:
    """[start, end] cut at the first boundary that stops it being one byte-range product, or None if it is one."""
    if start > end:
        return None
    if start <= SURROGATES[1] and end >= SURROGATES[0]:  # overlaps the surrogates: drop them
        return [(a, b) for a, b in ((start, SURROGATES[0] - 1), (SURROGATES[1] + 1, end)) if a <= b]
    for last in ENCODING_ENDS:
        if start <= last < end:
            return [(start, last), (last + 1, end)]
    if end <= 0x7F:
        return None
    for i in (1, 2, 3):
        m = (1 << (6 * i)) - 1  # the low 6i bits: the continuation bytes after the i-th from the end
        if start & ~m != end & ~m:
            if start & m != 0:
                return [(start, start | m), ((start | m) + 1, end)]
            if end & m != m:
                return [(start, (end & ~m) - 1), (end & ~m, end)]
    return None


def encode(cp: int) -> bytes:
    """The UTF-8 encoding of one (non-surrogate) code point."""
    return chr(cp).encode("utf-8")
