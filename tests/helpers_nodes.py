"""Test-only node kinds (prefix "test.") and the side-effect probes the engine tests read.

Counters and signals are module globals guarded by a lock, so tests can see which nodes
actually ran (and how often), also from several threads at once. Call `reset()` first."""
from __future__ import annotations

import threading
import time
from typing import NamedTuple

import torch
from pydantic import Field

from samplegraph import Node, Registry, node
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.sigmas import Sigmas

_lock = threading.Lock()
RUNS: dict[str, int] = {}  # tag -> how many times a probing node ran
SIGNALS: dict[str, threading.Event] = {}  # tag -> set when a loop node reaches `signal_at`


def reset() -> None:
    with _lock:
        RUNS.clear()
        SIGNALS.clear()


def ran(tag: str) -> int:
    with _lock:
        return RUNS.get(tag, 0)


def _count(tag: str) -> None:
    with _lock:
        RUNS[tag] = RUNS.get(tag, 0) + 1


def signal(tag: str) -> threading.Event:
    with _lock:
        return SIGNALS.setdefault(tag, threading.Event())


@node("test.const")
class Const(Node):
    """A constant float (counts its runs under `tag`)."""

    value: float = Field(1.0, ge=-100.0, le=100.0)
    tag: str = "const"

    def run(self) -> float:
        _count(self.tag)
        return self.value


@node("test.add")
class Add(Node):
    """Sum of its inputs plus a bias."""

    bias: float = Field(0.0, ge=-10.0)
    tag: str = "add"

    def run(self, xs: list[float]) -> float:
        _count(self.tag)
        return sum(xs) + self.bias


@node("test.scale")
class Scale(Node):
    """x times a factor."""

    factor: float = 2.0
    tag: str = "scale"

    def run(self, x: float) -> float:
        _count(self.tag)
        return x * self.factor


@node("test.tensor")
class MakeTensor(Node):
    """An (n, width) tensor: row i holds value + i."""

    n: int = Field(4, ge=1, le=4096)
    width: int = Field(2, ge=1, le=256)
    value: float = 0.0
    tag: str = "tensor"

    def run(self) -> torch.Tensor:
        _count(self.tag)
        rows = torch.arange(self.n, dtype=torch.float32)[:, None]  # (n, 1)
        return (rows + self.value).expand(self.n, self.width).contiguous()  # (n, width)


@node("test.tensor_scale")
class TensorScale(Node):
    """sin(x * factor) + x, elementwise (enough work to overlap threads)."""

    factor: float = 2.0
    tag: str = "tensor_scale"

    def run(self, x: torch.Tensor) -> torch.Tensor:
        _count(self.tag)
        return torch.sin(x * self.factor) + x  # (B, ...)


@node("test.tensor_sum")
class TensorSum(Node):
    """The sum of a tensor, as a float."""

    tag: str = "tensor_sum"

    def run(self, x: torch.Tensor) -> float:
        _count(self.tag)
        return float(x.double().sum())


@node("test.sigmas")
class MakeSigmas(Node):
    """A linear schedule from sigma_max to 0 (a port type unrelated to float and Tensor)."""

    steps: int = Field(4, ge=1)

    def run(self) -> Sigmas:
        return Sigmas(torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64))


class MinMax(NamedTuple):
    lo: float
    hi: float


@node("test.minmax")
class MinMaxNode(Node):
    """Two named outputs: the smallest and largest element of a tensor."""

    def run(self, x: torch.Tensor) -> MinMax:
        return MinMax(float(x.min()), float(x.max()))


@node("test.seeded")
class Seeded(Node):
    """Normal noise of shape (n, 2) from the run's NoiseSource (its key includes the seed)."""

    uses_seed = True
    n: int = Field(4, ge=1)
    tag: str = "seeded"

    def run(self, ctx: NodeContext) -> torch.Tensor:
        _count(self.tag)
        return ctx.noise.normal(torch.arange(self.n), -1, (2,))  # (n, 2)


@node("test.sink")
class Sink(Node):
    """A side effect: counts every run; never cached."""

    cacheable = False
    tag: str = "sink"

    def run(self, x: float) -> float:
        _count(self.tag)
        return x


@node("test.fresh_tensor")
class FreshTensor(Node):
    """Uncacheable source whose bytes differ on every run (its n-th run is filled with n)."""

    cacheable = False
    tag: str = "fresh"

    def run(self) -> torch.Tensor:
        _count(self.tag)
        return torch.full((3,), float(ran(self.tag)))


@node("test.fail")
class Fail(Node):
    """Always raises: proves a node did (not) run."""

    tag: str = "fail"

    def run(self, x: float | None = None) -> float:
        _count(self.tag)
        raise ValueError("this node must not run")


@node("test.sleep")
class Sleep(Node):
    """Sleeps without checking cancellation (cancellation must be seen between nodes)."""

    seconds: float = Field(0.1, ge=0.0)
    tag: str = "sleep"

    def run(self, x: float | None = None) -> float:
        _count(self.tag)
        time.sleep(self.seconds)
        return 1.0 if x is None else x


@node("test.flaky")
class Flaky(Node):
    """Sleeps, then fails the first time it runs under its tag and returns 1.0 after that."""

    seconds: float = Field(0.1, ge=0.0)
    tag: str = "flaky"

    def run(self) -> float:
        _count(self.tag)
        time.sleep(self.seconds)
        if ran(self.tag) == 1:
            raise ValueError("the first run of this node fails")
        return 1.0


@node("test.loop")
class Loop(Node):
    """A long loop that checks cancellation and reports progress every step."""

    steps: int = Field(10, ge=1)
    sleep_s: float = Field(0.001, ge=0.0)
    signal_at: int = -1  # set SIGNALS[tag] when this step is reached (for a canceller)
    tag: str = "loop"

    def run(self, ctx: NodeContext, x: float | None = None) -> float:
        _count(self.tag)
        done = 0
        for i in range(self.steps):
            ctx.check_cancelled()
            if i == self.signal_at:
                signal(self.tag).set()
            time.sleep(self.sleep_s)
            done = i + 1
            ctx.progress(done, self.steps)
        with _lock:
            RUNS[self.tag + ".completed"] = RUNS.get(self.tag + ".completed", 0) + 1
        return float(done) + (x or 0.0)


@node("test.nfe")
class Nfe(Node):
    """Accounts `calls` denoiser evaluations and records a metric."""

    calls: int = Field(3, ge=0)

    def run(self, ctx: NodeContext) -> torch.Tensor:
        ctx.add_nfe(self.calls)
        ctx.record(note="hello")
        return torch.zeros(2)


class Live:
    """A live object with no cache_encode: may be cached in memory only."""

    def __init__(self, value: float):
        self.value = value


@node("test.live")
class MakeLive(Node):
    """A live (non-encodable) object."""

    value: float = 1.0
    tag: str = "live"

    def run(self) -> Live:
        _count(self.tag)
        return Live(self.value)


@node("test.unlive")
class Unlive(Node):
    """The value of a live object."""

    def run(self, obj: Live) -> float:
        return obj.value


ALL = [Const, Add, Scale, MakeTensor, TensorScale, TensorSum, MakeSigmas, MinMaxNode, Seeded,
       Sink, FreshTensor, Fail, Sleep, Flaky, Loop, Nfe, MakeLive, Unlive]
REGISTRY = Registry(ALL)
