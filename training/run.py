"""Command line shared by the training scripts: pick a model from a table, train it on one CPU thread."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "nodes" / "models" / "weights"


def arguments(doc: str, option: str, table: dict[str, tuple[Any, int, str]], default: str
              ) -> tuple[str, Any, int, Path]:
    """(choice, config, steps, output path) from --<option> (table: name -> (config, steps, file)), --steps, --out."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{option}", choices=sorted(table), default=default)
    parser.add_argument("--steps", type=int, default=None, help=f"default: the {option}'s (see the docstring)")
    parser.add_argument("--out", type=Path, default=None, help=f"default: nodes/models/weights/<{option} file>")
    args = parser.parse_args()
    choice = getattr(args, option)
    config, steps, name = table[choice]
    out = args.out or WEIGHTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return choice, config, args.steps or steps, out


def timed(train: Callable[[Any, int], tuple[torch.nn.Module, list[float]]], config: Any, steps: int
          ) -> tuple[torch.nn.Module, list[float], float]:
    """train(config, steps) on one CPU thread (deterministic and fastest for these sizes), with its wall time."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    net, losses = train(config, steps)
    return net, losses, time.perf_counter() - start
