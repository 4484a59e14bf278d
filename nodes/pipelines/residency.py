"""A loaded Pipeline's large modules handed to the run's device-memory manager (NodeContext.residency), found
by walking the three ports' attributes, so that no family's code knows about residency."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..core.memory import Residency
from .types import Pipeline

PACKAGE = __name__.split(".nodes.")[0]  # "samplegraph": plain objects of ours are walked into, others' are not
DEPTH = 3  # port object -> helper object -> container -> module is as deep as a family goes


def manage_pipeline(node_id: str, pipeline: Pipeline, residency: Residency) -> list[str]:
    """Register every outermost module of `pipeline` with `residency` as "<node>.<port>.<attribute path>"."""
    found: dict[int, tuple[str, torch.nn.Module]] = {}
    for port, obj in pipeline._asdict().items():
        for path, module in modules_in(obj, f"{node_id}.{port}", DEPTH):
            found.setdefault(id(module), (path, module))
    inner = {id(s) for _, m in found.values() for s in m.modules() if s is not m}  # held by another module found
    names = []
    for key, (path, module) in found.items():
        if key not in inner:
            residency.manage(path, module)
            names.append(path)
    return names


def modules_in(obj: Any, path: str, depth: int) -> Iterator[tuple[str, torch.nn.Module]]:
    """(attribute path, module) for the modules held by `obj`'s attributes, lists, tuples and dicts."""
    if isinstance(obj, torch.nn.Module):
        yield path, obj
    elif depth == 0:
        return
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from modules_in(v, f"{path}[{i}]", depth - 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from modules_in(v, f"{path}[{k!r}]", depth - 1)
    elif type(obj).__module__.startswith(PACKAGE) and hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            yield from modules_in(v, f"{path}.{k}", depth - 1)
