"""io.save_tensor: write a tensor to a .safetensors file, atomically."""
from __future__ import annotations

import json
from typing import ClassVar

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.tensorfile import safetensors_bytes
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output

SafetensorsPath = path_with_suffix(".safetensors")


@node("io.save_tensor")
class SaveTensor(WritesFile, Node):
    """Save a tensor as safetensors (relative paths land in the run's out_dir); outputs the file's path."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: SafetensorsPath = Field(description="output file; relative paths resolve against the run's out_dir")
    key: str = Field("x", min_length=1, description="name of the tensor inside the file")

    def run(self, x: torch.Tensor, ctx: NodeContext) -> str:
        t = x.detach().cpu().contiguous()  # (...) as given
        meta = {"node": ctx.node_id, "shape": json.dumps(list(t.shape)),
                "dtype": str(t.dtype).removeprefix("torch.")}
        data = safetensors_bytes({self.key: t}, meta)
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: f.write(data)))
