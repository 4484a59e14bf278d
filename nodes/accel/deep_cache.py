"""model.deep_cache: DeepCache (Ma et al. 2023) for networks seen as embed -> blocks -> head.

DeepCache runs the whole UNet every N steps and, in between, only its shallow down and up blocks,
taking the deep branch's features from the last full step. A BlockNetwork has no UNet skips; its
residual stream plays the skip: the first `shallow` blocks always run, and on cached calls the deep
blocks' total residual (h_out - h_in of the last full call) is added to the fresh shallow output
before the head. Uniform refresh (every `interval` calls per particle, counting from the first);
DeepCache's non-uniform variant is not built. interval = 1 is the plain model, bit for bit."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model
from .block_cache import BlockCached, BlockMemory, ReusePolicy


class DeepCachePolicy(ReusePolicy):
    """Two groups: shallow blocks (always run) and the deep rest (reused between refreshes)."""

    name = "model.deep_cache"

    def __init__(self, interval: int, shallow: int):
        self.interval, self.shallow = interval, shallow

    def groups(self, blocks: int) -> list[range]:
        return [range(0, self.shallow), range(self.shallow, blocks)] if self.shallow else [range(0, blocks)]

    def reuse(self, group: int, change: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        deep = 1 if self.shallow else 0  # index of the deep group
        return torch.full_like(runs, group == deep, dtype=torch.bool)

    def gate(self, x: torch.Tensor, sigma: torch.Tensor, memory: BlockMemory) -> torch.Tensor:
        """Rows not due a full call: the call index (0-based) is not a multiple of `interval`."""
        return memory.calls % self.interval != 0  # (B,)


@node("model.deep_cache")
class ModelDeepCache(Node):
    """DeepCache (Ma et al. 2023): the deep blocks' residual cached for `interval` calls, shallow blocks fresh."""

    interval: int = Field(3, ge=1, description="a full call every this many calls per particle; 1 = the plain model")
    shallow: int = Field(1, ge=0, description="leading blocks that run on every call (model.digits has 3 blocks)")

    def run(self, model: Model) -> Model:
        """The stateful cached model (connect it to 'sample'); the report counts blocks computed and skipped."""
        net = BlockCached.check(model, "model.deep_cache")
        count = len(net.net.blocks)
        if self.shallow >= count:
            raise NodeError(f"model.deep_cache: 'shallow' is {self.shallow} but the network has {count} blocks, so "
                            f"nothing would be cached; use shallow <= {count - 1}")
        return BlockCached(net, DeepCachePolicy(self.interval, self.shallow))
