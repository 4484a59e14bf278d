"""A third-party samplegraph plugin: one node kind, registered through an entry point."""
from __future__ import annotations

from pydantic import Field

from samplegraph import Node, node


@node("demo.scale")
class DemoScale(Node):
    """Multiplies a value by a factor (demo plugin node)."""

    value: float = 1.0
    factor: float = Field(3.0, gt=0)

    def run(self, x: float | None = None) -> float:
        return (self.value if x is None else x) * self.factor


NODES = [DemoScale]
