"""io.save_texts: write a token strategy's Generations as JSONL (one line per row), atomically."""
from __future__ import annotations

import json
import math
from typing import Any, ClassVar

from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..lm.generations import Generations
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output

JsonlPath = path_with_suffix(".jsonl")


def strict_json(value: Any) -> Any:
    """Non-finite floats (a -inf log-weight) as the strings 'inf', '-inf', 'nan', as the run report writes them."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


@node("io.save_texts")
class SaveTexts(WritesFile, Node):
    """Save generated texts as JSONL: per row text, token_ids, log_weight, group, finished; outputs the path."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: JsonlPath = Field(description="output file; relative paths resolve against the run's out_dir")

    def run(self, texts: Generations, ctx: NodeContext) -> str:
        lines = [json.dumps({k: strict_json(v) for k, v in row.items()}, ensure_ascii=False, allow_nan=False)
                 for row in texts.rows()]
        data = "".join(line + "\n" for line in lines).encode()
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: f.write(data)))
