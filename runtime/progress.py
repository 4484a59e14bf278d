"""Terminal rendering of run events: a bar over nodes and one bar per sampler step loop
(tqdm, on stderr); on a non-terminal, one line per finished node instead."""
from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from .events import (CacheDiscarded, CacheWriteFailed, Event, NodeFinished, NodeStarted, NodeWarning, RunFinished,
                     RunStarted, StepProgress)


class ProgressPrinter:
    """An `on_event` callback for the CLI."""

    def __init__(self, stream: TextIO = sys.stderr, bars: bool | None = None):
        self.stream = stream
        self.bars = stream.isatty() if bars is None else bars
        self.nodes: tqdm | None = None
        self.steps: tqdm | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted) and self.bars:
            self.nodes = tqdm(total=event.total, desc="nodes", unit="node", file=self.stream, position=0)
        elif isinstance(event, RunStarted):
            self.write(row("node", "kind", "cache", "wall s"))
        elif isinstance(event, NodeStarted) and self.nodes is not None:
            self.nodes.set_postfix_str(f"{event.node} ({event.kind})")
        elif isinstance(event, StepProgress):
            self.on_step(event)
        elif isinstance(event, NodeFinished):
            self.on_finished(event)
        elif isinstance(event, CacheDiscarded):
            self.write(f"warning: discarded a corrupt cache entry {event.key[:12]}… ({event.reason}); recomputing")
        elif isinstance(event, CacheWriteFailed):
            self.write(f"warning: {event.reason}")
        elif isinstance(event, NodeWarning):
            self.write(f"warning: node '{event.node}': {event.message}")
        elif isinstance(event, RunFinished):
            self.close()

    def on_step(self, event: StepProgress) -> None:
        if not self.bars:
            return
        if self.steps is None:
            self.steps = tqdm(total=event.total, desc=f"  {event.node}", unit="step", file=self.stream,
                              position=1, leave=False)
        self.steps.update(event.step - self.steps.n)

    def on_finished(self, event: NodeFinished) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None
        if self.nodes is not None:
            self.nodes.update(1)
        else:
            self.write(row(event.node, event.kind, event.cache, f"{event.wall_s:.3f}"))

    def write(self, text: str) -> None:
        if self.nodes is not None:
            self.nodes.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def close(self) -> None:
        for bar in (self.steps, self.nodes):
            if bar is not None:
                bar.close()
        self.steps = self.nodes = None


def row(node: str, kind: str, cache: str, wall: str) -> str:
    """One line of the per-node table (its header too): cache is memory, disk, miss or uncached."""
    return f"  {node:<20} {kind:<28} {cache:<8} {wall:>8}"
