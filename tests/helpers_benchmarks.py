"""Importing a benchmark script's module (benchmarks/ is not a package) for a test of its pieces."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_modules(*names: str) -> Iterator[list[ModuleType]]:
    """The named benchmarks/ modules, imported with benchmarks/ on sys.path for as long as the block runs."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(BENCHMARKS))
