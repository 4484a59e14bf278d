"""The engine runs a tiny workflow and caches it (fuller tests live beside this file)."""
from pydantic import Field

from samplegraph import Node, Registry, Runtime, Workflow, node


@node("test.const")
class Const(Node):
    """A constant float."""

    value: float = 1.0

    def run(self) -> float:
        return self.value


@node("test.add")
class Add(Node):
    """Sum of its inputs plus a bias."""

    bias: float = Field(0.0, ge=-10)

    def run(self, xs: list[float]) -> float:
        return sum(xs) + self.bias


def test_runs_and_hits_memory_cache():
    rt = Runtime(registry=Registry([Const, Add]))
    wf = Workflow.from_dict({"nodes": {"a": {"kind": "test.const", "params": {"value": 2}},
                                       "b": {"kind": "test.add", "inputs": {"xs": ["a", "a"]}}},
                             "outputs": ["b"]})
    assert rt.run(wf)["b"] == 4.0
    assert [n.cache for n in rt.run(wf).report.nodes] == ["memory", "memory"]
