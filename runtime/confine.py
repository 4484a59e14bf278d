"""Confinement of the files a workflow names, for runs on behalf of someone else (the server).

Node parameters are data, but some name files: io nodes write `output_files(out_dir)` and model nodes read
`input_files()`. A confined run refuses, before computing anything, any output outside the run's out_dir
(`../`, absolute paths, symlinks leading out) and any input outside the configured model roots, as a
located WorkflowError naming the node and the parameter."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..graph.errors import Problem, WorkflowError
from ..graph.validate import ValidGraph
from .preflight import methods_named


def inside(path: Path, root: Path) -> bool:
    """Whether `path` (resolved, symlinks followed) lies in `root` (resolved) or is `root` itself."""
    return path.expanduser().resolve().is_relative_to(root.expanduser().resolve())


def confinement_problems(graph: ValidGraph, order: list[str], out_dir: Path,
                         model_roots: Sequence[Path]) -> list[Problem]:
    """Every output file outside `out_dir` and every input file outside all of `model_roots`."""
    problems = []
    for node_id, files in methods_named(graph, order, "output_files"):
        for path in files(out_dir):
            if not inside(path, out_dir):
                problems.append(Problem(f"writes '{path}', outside this job's output folder", node=node_id,
                                        where="param 'path'", hint="use a relative path without '..'"))
    roots = ", ".join(f"'{r}'" for r in model_roots) or "none configured"
    for node_id, files in methods_named(graph, order, "input_files"):
        for path in files():
            if not any(inside(path, root) for root in model_roots):
                problems.append(Problem(f"reads '{path}', outside the server's model roots ({roots})",
                                        node=node_id, where=param_naming(graph.nodes[node_id].params, path),
                                        hint="place the file under a --model-root of the server"))
    return problems


def param_naming(params: object, path: Path) -> str:
    """"param 'NAME'" for the string parameter whose value is (the tail of) `path`."""
    for name in type(params).model_fields:  # type: ignore[attr-defined]  # a pydantic node
        value = getattr(params, name)
        if isinstance(value, str) and str(path).endswith(str(Path(value).expanduser()).lstrip("/") or value):
            return f"param '{name}'"
    return "a file parameter"


def check_confined(graph: ValidGraph, order: list[str], out_dir: Path, model_roots: Sequence[Path]) -> None:
    """Raise a WorkflowError with every confinement problem (see confinement_problems)."""
    problems = confinement_problems(graph, order, out_dir, model_roots)
    if problems:
        raise WorkflowError(problems)
