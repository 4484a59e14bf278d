"""Progress events: what the CLI renders as progress bars and embedders subscribe to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class RunStarted:
    total: int  # nodes that will run (after pruning)


@dataclass(frozen=True)
class NodeStarted:
    node: str
    kind: str
    index: int  # 0-based position in the execution order
    total: int


@dataclass(frozen=True)
class StepProgress:
    node: str
    step: int  # steps done so far
    total: int


@dataclass(frozen=True)
class StepPreview:
    node: str
    step: int  # steps done so far
    total: int
    image: Any  # (3, h, w) float32 tensor in [0, 1]: latent.preview's picture of the current x0 estimate (row 0)


@dataclass(frozen=True)
class NodeWarning:
    node: str
    message: str  # something the node did that the user should know (e.g. a prompt truncated)


@dataclass(frozen=True)
class NodeFinished:
    node: str
    kind: str
    cache: str  # "memory", "disk", "miss" or "uncached"
    wall_s: float


@dataclass(frozen=True)
class CacheDiscarded:
    key: str
    reason: str  # a corrupt or truncated disk entry was deleted and will be recomputed


@dataclass(frozen=True)
class CacheUndecodable:
    key: str
    reason: str  # a sound disk entry this version cannot rebuild (e.g. written by another version): a miss


@dataclass(frozen=True)
class CacheWriteFailed:
    key: str
    reason: str  # the disk cache could not be written (told once); the run goes on, results stay in memory


@dataclass(frozen=True)
class RunFinished:
    report: Any  # RunReport


Event = Union[RunStarted, NodeStarted, StepProgress, StepPreview, NodeWarning, NodeFinished, CacheDiscarded, CacheUndecodable,
              CacheWriteFailed, RunFinished]
