"""lm.prompt: the prompt texts a token strategy continues (one group of particles per prompt)."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from ..api import Node, node


@dataclass(frozen=True)
class Prompts:
    """Prompt texts; a strategy encodes them with its LanguageModel and runs `particles` rows per prompt."""

    texts: tuple[str, ...]


@node("lm.prompt", version=1)
class Prompt(Node):
    """One prompt text, or several (each its own group of particles)."""

    text: str | list[str] = Field(..., description="the prompt, or a list of prompts")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one prompt")
        return value

    def run(self) -> Prompts:
        return Prompts(texts=(self.text,) if isinstance(self.text, str) else tuple(self.text))
