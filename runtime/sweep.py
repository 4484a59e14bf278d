"""Parameter sweeps: the cartesian product of `--grid NODE.PARAM=v1,v2,...` axes on one Runtime.

Each grid point is the workflow with that point's overrides. Identical subgraphs have identical
Merkle keys, so the Runtime's caches make a sweep's shared upstream nodes the same work: every
distinct key is computed once (the `computed` column counts what each point really ran)."""
from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..graph.errors import Problem, WorkflowError
from ..graph.workflow import Workflow, parse_override, suggest
from .api import RunResult, Runtime
from .values import report_value


@dataclass(frozen=True)
class GridAxis:
    """One `--grid` flag: a parameter and the values it takes."""

    target: str  # "node.param"
    values: tuple[Any, ...]


@dataclass
class SweepResult:
    axes: list[GridAxis]
    rows: list[dict[str, Any]]  # one per grid point: axis values, scalar outputs, computed / side_effects
    results: list[RunResult] = field(repr=False)
    table_paths: list[Path] = field(default_factory=list)
    plot_path: Path | None = None

    @property
    def computed(self) -> int:
        """Nodes the whole sweep ran (cache misses): each distinct Merkle key once."""
        return sum(row["computed"] for row in self.rows)


def split_values(raw: str) -> list[str]:
    """Split at the commas outside brackets, braces and strings: `1,[2,3],"a,b"` -> 3 values."""
    parts, depth, start, quoted, escaped = [], 0, 0, False, False
    for i, ch in enumerate(raw):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return parts


def parse_grid(text: str) -> GridAxis:
    """`node.param=v1,v2,...` -> GridAxis; each value is JSON when it parses, else a string (like --set)."""
    target, eq, raw = text.partition("=")
    target = target.strip()
    node, dot, param = target.partition(".")
    if not eq or not dot or not node or not param:
        raise WorkflowError([Problem(f"--grid '{text}' must look like NODE.PARAM=v1,v2,... "
                                     f"(e.g. sigmas.steps=10,20,40)")])
    values, problems = [], []
    for i, part in enumerate(split_values(raw), 1):
        if not part.strip():
            problems.append(Problem(f"--grid '{target}': value {i} is empty (in '{raw}')"))
        else:
            values.append(parse_override(f"{target}={part.strip()}")[1])
    if problems:
        raise WorkflowError(problems)
    return GridAxis(target, tuple(values))


def parse_grids(texts: list[str]) -> list[GridAxis]:
    if not texts:
        raise WorkflowError([Problem("a sweep needs at least one --grid NODE.PARAM=v1,v2,...")])
    axes, problems = [], []
    for text in texts:
        try:
            axis = parse_grid(text)
        except WorkflowError as e:
            problems += e.problems
            continue
        if any(a.target == axis.target for a in axes):
            problems.append(Problem(f"--grid '{axis.target}' is given twice; put all its values in one flag"))
        axes.append(axis)
    if problems:
        raise WorkflowError(problems)
    return axes


def grid_points(axes: list[GridAxis]) -> list[dict[str, Any]]:
    """The cartesian product, the last axis varying fastest."""
    return [dict(zip((a.target for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def check_points(runtime: Runtime, wf: Workflow, source: str | None, axes: list[GridAxis],
                 points: list[dict[str, Any]], base: dict[str, Any]) -> list[Workflow]:
    """Every point's workflow, validated before anything runs; all problems at once, each naming the grid."""
    problems = [Problem(f"--grid '{a.target}' names no node", hint=suggest(a.target.partition(".")[0], wf.nodes))
                for a in axes if a.target.partition(".")[0] not in wf.nodes]
    if problems:
        raise WorkflowError(problems, source)
    workflows, seen = [], set()
    for point in points:
        point_wf = wf.with_overrides({**base, **point})
        try:
            runtime.validate(point_wf, source)
        except WorkflowError as e:
            for p in e.problems:
                if str(p) not in seen:
                    seen.add(str(p))
                    problems.append(Problem(p.message, p.node, p.where,
                                            hint=" ".join(filter(None, [p.hint, f"at grid point {label(point)}"]))))
        workflows.append(point_wf)
    if problems:
        raise WorkflowError(problems, source)
    return workflows


def label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())


def scalar(value: Any) -> Any:
    """A table cell: numbers and strings as they are, a one-element tensor as its number, else described."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return report_value(value)


def run_sweep(runtime: Runtime, workflow: Workflow | str | Path | dict, axes: list[GridAxis], out_dir: Path,
              overrides: dict[str, Any] | None = None, outputs: list[str] | None = None, seed: int | None = None,
              parallel: int = 1, on_point: Callable[[int, int, dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every grid point (`parallel` at once: useful when the backend runs nodes elsewhere); write
    results.csv, results.jsonl and sweep.png (when an output is a number) into `out_dir`."""
    wf, source = runtime.load(workflow)
    points = grid_points(axes)
    workflows = check_points(runtime, wf, source, axes, points, overrides or {})

    def one(i: int) -> RunResult:
        result = runtime.run(workflows[i], outputs=outputs, out_dir=out_dir / "points" / f"{i:03d}", seed=seed)
        if on_point is not None:
            on_point(i, len(points), points[i])
        return result

    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            results = list(pool.map(one, range(len(points))))
    else:
        results = [one(i) for i in range(len(points))]
    rows = [table_row(point, result) for point, result in zip(points, results)]
    sweep = SweepResult(axes, rows, results)
    sweep.table_paths = write_tables(rows, out_dir)
    from .sweep_plot import plot_sweep

    sweep.plot_path = plot_sweep(axes, rows, out_dir / "sweep.png")
    return sweep


def table_row(point: dict[str, Any], result: RunResult) -> dict[str, Any]:
    row = dict(point)
    row.update({name: scalar(v) for name, v in result.outputs.items()})
    caches = [n.cache for n in result.report.nodes]
    row["computed"], row["side_effects"] = caches.count("miss"), caches.count("uncached")
    row["wall_s"] = result.report.wall_s
    return row


def write_tables(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """results.jsonl (floats round-trip exactly) and results.csv (floats as repr: also exact)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, csv_path = out_dir / "results.jsonl", out_dir / "results.csv"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return [csv_path, jsonl]


def cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else value
