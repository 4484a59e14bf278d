"""A parser of the common regex syntax into a small AST of code-point sets (docs of `constraint.regex`).

Supported: literals (any Unicode character, matched as its UTF-8 bytes), `.` (any character but a newline),
classes `[abc]`, `[a-z]`, `[^...]` with escapes inside, `\\d \\w \\s` and `\\D \\W \\S` (ASCII, as Python's
re.ASCII), `\\n \\t \\r \\f \\v \\0`, `\\xHH`, `\\uHHHH`, `\\UHHHHHHHH` (code points), escaped metacharacters,
groups `( )`, `(?: )`, `(?P<name> )`, alternation `|`, quantifiers `* + ? {m} {m,} {m,n}` (a trailing `?`,
lazy, does not change the language and is accepted). Matching is always whole-text: a leading `^` and a
trailing `$` are accepted and mean nothing more. Not regular or not supported: backreferences, lookaround,
inline flags, `\\b`, anchors elsewhere: a RegexSyntaxError naming the position."""
from __future__ import annotations

from dataclasses import dataclass

from .utf8 import MAX_CODE_POINT

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint inclusive code-point ranges

MAX_REPEAT = 1000


class RegexSyntaxError(ValueError):
    """A pattern this parser cannot read, with the position of the problem."""

    def __init__(self, message: str, position: int):
        self.position = position
        super().__init__(f"{message} at position {position}")


@dataclass(frozen=True)
class CharSet:
    ranges: Ranges


@dataclass(frozen=True)
class Concat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    low: int
    high: int | None  # None: unbounded


Node = CharSet | Concat | Alt | Repeat


def union(ranges: list[tuple[int, int]]) -> Ranges:
    """Sorted disjoint ranges covering the given ones."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def complement(ranges: Ranges) -> Ranges:
    """Every code point not in the ranges."""
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return tuple(out)


DIGIT = ((0x30, 0x39),)
WORD = union([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
SPACE = union([(0x09, 0x0D), (0x20, 0x20)])
CLASSES = {"d": DIGIT, "w": WORD, "s": SPACE, "D": complement(DIGIT), "W": complement(WORD), "S": complement(SPACE)}
SIMPLE = {"n": 0x0A, "t": 0x09, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00, "a": 0x07}
HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
DOT = complement(((0x0A, 0x0A),))


def parse(pattern: str) -> Node:
    """The AST of a whole-text regex pattern (RegexSyntaxError if it is malformed or unsupported)."""
    return Parser(pattern).parse()


class Parser:
    """Recursive descent over the pattern: alt := concat ('|' concat)*; concat := repeat*; repeat := atom quant*."""

    def __init__(self, pattern: str):
        self.text, self.pos = pattern, 0
        self.end = len(pattern)
        if pattern.startswith("^"):
            self.pos = 1
        if pattern.endswith("$") and not pattern.endswith("\\$") and self.end > self.pos:
            self.end -= 1

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos < self.end:
            raise RegexSyntaxError("unbalanced ')'", self.pos)
        return node

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < self.end else None

    def take(self) -> str:
        if self.pos >= self.end:
            raise RegexSyntaxError("unexpected end of pattern", self.pos)
        c = self.text[self.pos]
        self.pos += 1
        return c

    def alternation(self) -> Node:
        options = [self.concatenation()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.concatenation())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def concatenation(self) -> Node:
        items: list[Node] = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.repetition())
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def repetition(self) -> Node:
        start = self.pos
        node = self.atom()
        while True:
            bounds = self.quantifier()
            if bounds is None:
                return node
            low, high = bounds
            if high is not None and high < low:
                raise RegexSyntaxError(f"quantifier {{{low},{high}}} has its maximum below its minimum", start)
            if max(low, high or 0) > MAX_REPEAT:
                raise RegexSyntaxError(f"a repetition count above {MAX_REPEAT}", start)
            node = Repeat(node, low, high)
            if self.peek() == "?":  # lazy: the same language
                self.pos += 1

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.pos += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if c == "{":
            close = self.text.find("}", self.pos, self.end)
            body = self.text[self.pos + 1:close] if close > 0 else ""
            low, comma, high = body.partition(",")
            if low.isdigit() and (not high or high.isdigit()):
                self.pos = close + 1
                return int(low), (int(high) if high else (None if comma else int(low)))
        return None

    def atom(self) -> Node:
        at = self.pos
        c = self.take()
        if c == "(":
            return self.group(at)
        if c == "[":
            return CharSet(self.char_class(at))
        if c == ".":
            return CharSet(DOT)
        if c == "\\":
            return CharSet(self.escape(at))
        if c in "*+?":
            raise RegexSyntaxError(f"nothing to repeat before '{c}'", at)
        if c in "^$":
            raise RegexSyntaxError(f"anchor '{c}' is only supported at the start / end of the pattern", at)
        if c == ")":
            raise RegexSyntaxError("unbalanced ')'", at)
        return CharSet(((ord(c), ord(c)),))

    def group(self, at: int) -> Node:
        if self.text.startswith("?:", self.pos):
            self.pos += 2
        elif self.text.startswith("?P<", self.pos):
            close = self.text.find(">", self.pos)
            if close < 0:
                raise RegexSyntaxError("unterminated group name", at)
            self.pos = close + 1
        elif self.peek() == "?":
            raise RegexSyntaxError("lookaround, inline flags and other '(?' groups are not supported", at)
        inner = self.alternation() if self.peek() != ")" else Concat(())
        if self.peek() != ")":
            raise RegexSyntaxError("missing ')' for the group opened", at)
        self.pos += 1
        return inner

    def char_class(self, at: int) -> Ranges:
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        parts: list[tuple[int, int]] = []
        first = True
        while True:
            if self.pos >= self.end:
                raise RegexSyntaxError("missing ']' for the class opened", at)
            c = self.text[self.pos]
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            lo = self.class_item()
            if isinstance(lo, tuple):
                parts.extend(lo)
                continue
            if self.peek() == "-" and self.pos + 1 < self.end and self.text[self.pos + 1] != "]":
                self.pos += 1
                dash = self.pos
                hi = self.class_item()
                if isinstance(hi, tuple) or hi < lo:
                    raise RegexSyntaxError("bad character range", dash)
                parts.append((lo, hi))
            else:
                parts.append((lo, lo))
        ranges = union(parts)
        return complement(ranges) if negate else ranges

    def class_item(self) -> int | Ranges:
        """One code point, or a class escape's ranges."""
        at = self.pos
        c = self.take()
        if c == "\\":
            ranges = self.escape(at)
            return ranges[0][0] if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else ranges
        return ord(c)

    def escape(self, at: int) -> Ranges:
        c = self.take()
        if c in CLASSES:
            return CLASSES[c]
        if c in SIMPLE:
            return ((SIMPLE[c], SIMPLE[c]),)
        if c in HEX_DIGITS:
            digits = self.text[self.pos:self.pos + HEX_DIGITS[c]]
            if len(digits) != HEX_DIGITS[c] or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise RegexSyntaxError(f"\\{c} needs {HEX_DIGITS[c]} hex digits", at)
            self.pos += HEX_DIGITS[c]
            cp = int(digits, 16)
            if cp > MAX_CODE_POINT:
                raise RegexSyntaxError(f"code point {digits} is beyond U+10FFFF", at)
            return ((cp, cp),)
        if c.isalnum():
            raise RegexSyntaxError(f"unsupported escape '\\{c}' (backreferences, \\b, \\A, ... are not regular"
                                   " or not supported)", at)
        return ((ord(c), ord(c)),)
