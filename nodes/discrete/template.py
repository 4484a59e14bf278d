"""Templates: what a discrete sampler fills. `discrete.template` gives a prompt prefix and a total
length (everything after the prompt is generated); `discrete.infill` a text whose marker characters
are the positions to fill. Several texts make several groups of particles."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field, field_validator, model_validator

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.noise import NoiseSource
from .denoiser import DiscreteDenoiser
from .draws import INIT, uniform
from .state import DiscreteState



@dataclass(frozen=True)
class Template:
    """Rows of known characters and holes: each row a list of pieces, a str (known text) or an int (holes)."""

    rows: tuple[tuple[str | int, ...], ...]
    source: str  # the node kind, for error messages
    pad_to: int | None = None  # holes appended to each row up to this many positions

    def encode(self, den: DiscreteDenoiser) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (G, L) with the mask id (masked models) or -1 (uniform models) at holes, and the
        fixed (G, L) bool of known positions; rows shorter than the longest end in fixed EOS padding
        (the text ends there). NodeError when a row is longer than the model's context."""
        rows, fixed = [], []
        for g, pieces in enumerate(self.rows):
            ids: list[int] = []
            known: list[bool] = []
            for piece in pieces:
                if isinstance(piece, int):
                    ids += [-1 if den.mask_id is None else den.mask_id] * piece
                    known += [False] * piece
                else:
                    enc = den.encode(piece, f"{self.source} text {g}")
                    ids += enc
                    known += [True] * len(enc)
            if self.pad_to is not None:
                if len(ids) >= self.pad_to:
                    raise NodeError(f"{self.source} prompt {g} is {len(ids)} tokens, leaving no position to generate "
                                    f"in length {self.pad_to}")
                holes = self.pad_to - len(ids)
                ids += [-1 if den.mask_id is None else den.mask_id] * holes
                known += [False] * holes
            if len(ids) > den.length:
                raise NodeError(f"{self.source} text {g}: {len(ids)} positions is longer than the model's context "
                                f"of {den.length}; shorten it")
            rows.append(ids)
            fixed.append(known)
        width = max(len(r) for r in rows)  # shorter texts end there: fixed EOS padding, as in training
        eos = min(den.vocab.eos)
        rows = [r + [eos] * (width - len(r)) for r in rows]
        fixed = [f + [True] * (width - len(f)) for f in fixed]
        return torch.tensor(rows, dtype=torch.long), torch.tensor(fixed, dtype=torch.bool)

    def start(self, den: DiscreteDenoiser, per_row: int, noise: NoiseSource,
              device: torch.device | str = "cpu") -> tuple[DiscreteState, torch.Tensor, int]:
        """per_row particles per template row (row-major) at t = 1, their group ids (B,) and the group count.
        Particle ids are row numbers; uniform-noise models start their holes from uniform tokens."""
        tokens, fixed = self.encode(den)  # (G, L)
        groups = tokens.shape[0]
        tokens = tokens.to(device).repeat_interleave(per_row, 0)  # (B, L)
        fixed = fixed.to(device).repeat_interleave(per_row, 0)  # (B, L)
        particle = torch.arange(tokens.shape[0], device=device)
        if den.mask_id is None:
            clean = den.clean_ids.to(device)  # (K,)
            u = uniform(noise, particle, 0, (tokens.shape[1],), INIT)  # (B, L)
            draw = clean[(u * clean.numel()).long().clamp(max=clean.numel() - 1)]  # (B, L)
            tokens = torch.where(fixed, tokens, draw)
        group = torch.arange(groups, device=device).repeat_interleave(per_row)
        return DiscreteState.start(tokens, fixed, particle), group, groups


def texts_of(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@node("discrete.template", version=1)
class DiscreteTemplate(Node):
    """A prompt prefix (or none) followed by masked positions up to `length`: unconditional generation."""

    length: int = Field(64, ge=1, le=100_000, description="total positions L (prompt included)")
    prompt: str | list[str] = Field("", description="known text at the start (several: one group each)")
    marker: str = Field("_", min_length=1, max_length=1, description="the character that marks a hole in discrete.infill; "
                        "never allowed in a prompt")

    @model_validator(mode="after")
    def _fits(self) -> DiscreteTemplate:
        for i, p in enumerate(texts_of(self.prompt)):
            if self.marker in p:
                raise ValueError(f"prompt {i} holds the mask marker {self.marker!r} at character {p.index(self.marker)}: "
                                 "a prompt is known text; use discrete.infill to leave holes in a text")
        return self

    def run(self) -> Template:
        return Template(rows=tuple(((p,) if p else ()) for p in texts_of(self.prompt)), source="discrete.template",
                        pad_to=self.length)


@node("discrete.infill", version=1)
class DiscreteInfill(Node):
    """A text whose marker characters are the positions to fill (one position per marker)."""

    text: str | list[str] = Field(..., description="e.g. '19__-0_-1_'; several texts: one group each")
    marker: str = Field("_", min_length=1, max_length=1, description="the character that marks a hole")

    @field_validator("text")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one text")
        return value

    @model_validator(mode="after")
    def _holes(self) -> DiscreteInfill:
        for i, t in enumerate(texts_of(self.text)):
            if self.marker not in t:
                raise ValueError(f"text {i} ({t!r}) has no masked position: mark the positions to fill with "
                                 f"{self.marker!r}")
        return self

    def run(self) -> Template:
        return Template(rows=tuple(tuple(pieces(t, self.marker)) for t in texts_of(self.text)), source="discrete.infill")


def pieces(text: str, marker: str) -> list[str | int]:
    """'ab__c' -> ['ab', 2, 'c']: known runs as text, hole runs as counts."""
    out: list[str | int] = []
    for ch in text:
        hole = ch == marker
        if out and isinstance(out[-1], int) and hole:
            out[-1] += 1
        elif out and isinstance(out[-1], str) and not hole:
            out[-1] += ch
        else:
            out.append(1 if hole else ch)
    return out
