"""Where a run's nodes execute: the `Backend` seam between planning and running.

`Runtime.run` validates, prunes, orders and computes every Merkle key (`plan_keys`) before it
hands the plan to its backend, so a backend only decides *where* each node's run happens and
never changes what a node computes or how it is keyed. `LocalBackend` (the default) is the
in-process loop of runtime/executor.py, unchanged."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ...graph.validate import Link, ValidGraph
from ..executor import RunSettings, execute
from ..report import RunReport


class Backend(ABC):
    """Runs an ordered, keyed plan; returns the values of the `wanted` links and fills `report`
    (one NodeReport per node, in `order`)."""

    name: str

    @abstractmethod
    def execute(self, graph: ValidGraph, order: list[str], keys: dict[str, str | None], wanted: list[Link],
                report: RunReport, run: RunSettings) -> dict[tuple[str, str], Any]:
        """Run `order` (producers first) whose Merkle keys are `keys` (None: not cacheable)."""

    def close(self) -> None:
        """Release what the backend holds (workers, connections); the local backend holds nothing."""


class LocalBackend(Backend):
    """Every node in this process, one after the other (today's behaviour; the default)."""

    name = "local"

    def execute(self, graph: ValidGraph, order: list[str], keys: dict[str, str | None], wanted: list[Link],
                report: RunReport, run: RunSettings) -> dict[tuple[str, str], Any]:
        return execute(graph, order, wanted, report, run, keys)
