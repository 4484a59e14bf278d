"""What the graph layer knows about a node kind: its ports and parameter model.

Built by `samplegraph.nodes.api` from node classes; the graph layer only reads it, so
validation never imports node code or the runtime."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class PortSpec:
    """One input or output port. `many=True` inputs take a list of links (fan-in)."""

    name: str
    type: type
    required: bool = True
    many: bool = False

    @property
    def type_name(self) -> str:
        return type_label(self.type)


@dataclass(frozen=True)
class NodeSpec:
    """A registered node kind: name, version (part of the cache key), ports, parameters."""

    kind: str
    version: int
    doc: str
    params: type[BaseModel]
    inputs: tuple[PortSpec, ...]
    outputs: tuple[PortSpec, ...]
    cacheable: bool = True
    uses_seed: bool = False
    context_param: str | None = None  # name of run()'s NodeContext parameter, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", ({p.name: p for p in self.inputs}, {p.name: p for p in self.outputs}))

    def input(self, name: str) -> PortSpec | None:
        return self._by_name[0].get(name)

    def output(self, name: str) -> PortSpec | None:
        return self._by_name[1].get(name)


def type_label(tp: type) -> str:
    """Short readable name of a port type ("Tensor", "Sigmas")."""
    return getattr(tp, "__name__", repr(tp))


def compatible(produced: type, expected: type) -> bool:
    """An output connects to an input when it is the same class or a subclass."""
    try:
        return issubclass(produced, expected)
    except TypeError:
        return produced is expected
