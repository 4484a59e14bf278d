"""The device-memory manager: large modules (a pipeline's text encoders, UNet/transformer, VAE) live on the
offload device ('cpu') and move to the run's device when called; others are offloaded, least recently used
first, when a move would exceed the budget or the device's free memory.

State (one MemoryManager per Runtime, guarded by a lock; runs on one Runtime share it):
- `components`: id(module) -> Component (name, size in bytes, resident or not); modules are held weakly, so a
  pipeline that nothing holds any more (a run without a memory cache, an evicted cache entry) frees its
  weights and its component is forgotten (`seen` keeps its name and size for reports);
- `lru`: the resident components, least recently used first; `resident_bytes` their total;
- `moved_in` / `moved_out`: transfers (count, bytes, seconds) onto the device and back, cumulative; a run
  reports the difference over its own span, a node over its own.
Policy, on each call of a managed module (a forward pre-hook on the module and on its direct children, which
is where methods such as AutoencoderKL.decode enter it): a resident component is marked most recent; else
evict from the LRU end until its size fits the budget and the free device memory, then move it in (a CUDA
out-of-memory during the move offloads every other component and retries once). Tensor arguments follow it
onto the device. A component larger than the budget is refused when it is registered, naming its size and
the budget. `.to(device)` on a managed module is a no-op (the manager places it; executor moves of a
Denoiser would otherwise load the UNet behind the budget's back)."""
from __future__ import annotations

import re
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch

from ..graph.errors import NodeError, Problem, WorkflowError
from ..nodes.core.memory import Residency
from .preflight import fmt_bytes

CPU = torch.device("cpu")


@dataclass
class Transfers:
    """Module moves in one direction: how many, how many bytes, how long they took."""

    count: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def minus(self, earlier: Transfers) -> Transfers:
        return Transfers(self.count - earlier.count, self.bytes - earlier.bytes, self.seconds - earlier.seconds)


@dataclass(frozen=True)
class Snapshot:
    """The manager's counters at one moment (a run or node reports what changed since)."""

    moved_in: Transfers
    moved_out: Transfers
    evictions: int


class Mover(Protocol):
    """How modules move (tests plug in a recording one)."""

    def move(self, module: torch.nn.Module, device: torch.device) -> bool:
        """Put the module's parameters and buffers on `device`; False when they were there already."""

    def free_bytes(self, device: torch.device) -> int | None:
        """What a move onto `device` can still allocate now; None when not measured (CPU)."""


class TorchMover:
    """nn.Module.to (the class's, not a managed module's no-op), synchronised so the seconds are the copy's."""

    def move(self, module: torch.nn.Module, device: torch.device) -> bool:
        if placement(module) == device:
            return False
        torch.nn.Module.to(module, device)
        for d in {device, placement(module)}:
            if d.type == "cuda":
                torch.cuda.synchronize(d)
        return True

    def free_bytes(self, device: torch.device) -> int | None:
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        # what the caching allocator holds but no tensor uses is free for the next allocation too
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


@dataclass(eq=False)
class Component:
    name: str  # e.g. "pipe.model.net": node id, port, attribute
    what: str  # its class, e.g. "UNetNet(UNet2DConditionModel)"
    nbytes: int  # parameters and buffers
    ref: weakref.ref
    resident: bool = False

    def describe(self) -> str:
        return f"component '{self.name}' ({self.what}, {fmt_bytes(self.nbytes, binary=True)})"


class MemoryManager(Residency):
    """Per-component residency on `device` with least-recently-used offload to `offload` under `budget` bytes
    of resident weights (None: only the device's free memory bounds it)."""

    def __init__(self, device: torch.device, budget: int | None = None, offload: torch.device = CPU,
                 mover: Mover | None = None):
        self.device = concrete(device)
        self.budget = budget
        self.offload_device = offload
        self.mover: Mover = mover if mover is not None else TorchMover()
        self.components: dict[int, Component] = {}
        self.seen: dict[str, Component] = {}  # every component registered, by name, for reports (no module held)
        self.lru: OrderedDict[int, Component] = OrderedDict()
        self.resident_bytes = 0
        self.peak_resident_bytes = 0
        self.moved_in, self.moved_out, self.evictions = Transfers(), Transfers(), 0
        self.mru: Component | None = None  # the fast path of a hook: the last component used needs no lock
        self._lock = threading.RLock()
        self._dead: list[int] = []  # ids of collected modules (weakref callbacks only append)

    def manage(self, name: str, module: torch.nn.Module) -> None:
        with self._lock:
            self._purge()
            if id(module) in self.components:
                return
            comp = Component(name, describe_module(module), module_bytes(module),
                             weakref.ref(module, lambda _, key=id(module): self._dead.append(key)))
            if self.budget is not None and comp.nbytes > self.budget:
                raise NodeError(self.over_budget(comp))
            self.components[id(module)] = self.seen[name] = comp
            if placement(module) == self.device and self.device != self.offload_device:
                self._admit(comp)  # already there (loaded onto the device): count it, make room
                self.lru[id(module)] = comp
            else:
                self._move(comp, module, self.offload_device, self.moved_out)
            install_hooks(self, comp, module)

    def use(self, comp: Component) -> None:
        """Make `comp` resident (evicting others as needed) and most recently used."""
        with self._lock:
            self._purge()
            key = id(comp.ref())
            if comp.resident:
                self.lru.move_to_end(key)
            else:
                self._admit(comp)
                self._move_in(comp)
                self.lru[key] = comp
            self.mru = comp

    def offload_all(self) -> list[str]:
        """Offload every resident component; their names."""
        with self._lock:
            self._purge()
            victims = list(self.lru.values())
            for comp in victims:
                self._evict(comp)
            return [c.name for c in victims]

    def resident(self) -> list[str]:
        """Names of the resident components, least recently used first."""
        with self._lock:
            self._purge()
            return [c.name for c in self.lru.values()]

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(replace(self.moved_in), replace(self.moved_out), self.evictions)

    def changes(self, since: Snapshot) -> dict[str, Any]:
        """Transfers since `since` as report numbers: {"in": {...}, "out": {...}, "evictions": n}."""
        now = self.snapshot()
        return {"in": asdict(now.moved_in.minus(since.moved_in)), "out": asdict(now.moved_out.minus(since.moved_out)),
                "evictions": now.evictions - since.evictions}

    def report(self, since: Snapshot) -> dict[str, Any]:
        """The run report's "memory" section."""
        with self._lock:
            self._purge()
            components = {c.name: {"class": c.what, "bytes": c.nbytes, "resident": c.resident,
                                   "loaded": c.ref() is not None} for c in self.seen.values()}
            return {"device": str(self.device), "offload": str(self.offload_device), "budget_bytes": self.budget,
                    "resident_bytes": self.resident_bytes, "peak_resident_bytes": self.peak_resident_bytes,
                    "components": components, "transfers": self.changes(since)}

    def _admit(self, comp: Component) -> None:
        """Evict least recently used components until `comp` fits the budget and the free device memory."""
        if self.budget is not None:
            while self.resident_bytes + comp.nbytes > self.budget and self.lru:
                self._evict(next(iter(self.lru.values())))
            if comp.nbytes > self.budget:  # only after a dtype change: registration refuses it
                raise NodeError(self.over_budget(comp))
        while (free := self.mover.free_bytes(self.device)) is not None and comp.nbytes > free and self.lru:
            self._evict(next(iter(self.lru.values())))
        if (free := self.mover.free_bytes(self.device)) is not None and comp.nbytes > free:
            raise self._cannot_fit(comp, free)
        comp.resident = True
        self.resident_bytes += comp.nbytes
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def _move_in(self, comp: Component) -> None:
        module = comp.ref()
        try:
            self._move(comp, module, self.device, self.moved_in)
        except torch.OutOfMemoryError:
            self.mover.move(module, self.offload_device)  # the parameters that got there come back
            for other in [c for c in self.lru.values() if c is not comp]:
                self._evict(other)
            torch.cuda.empty_cache()
            try:
                self._move(comp, module, self.device, self.moved_in)
            except torch.OutOfMemoryError:
                self.mover.move(module, self.offload_device)
                comp.resident = False
                self.resident_bytes -= comp.nbytes
                raise self._cannot_fit(comp, self.mover.free_bytes(self.device)) from None

    def _evict(self, comp: Component) -> None:
        self.lru = OrderedDict((k, c) for k, c in self.lru.items() if c is not comp)
        comp.resident = False
        self.resident_bytes -= comp.nbytes
        self.evictions += 1
        if self.mru is comp:
            self.mru = None
        if (module := comp.ref()) is not None:
            self._move(comp, module, self.offload_device, self.moved_out)

    def _move(self, comp: Component, module: torch.nn.Module, device: torch.device, into: Transfers) -> None:
        start = time.perf_counter()
        if self.mover.move(module, device):
            into.count += 1
            into.bytes += comp.nbytes
            into.seconds += time.perf_counter() - start

    def over_budget(self, comp: Component) -> str:
        return (f"{comp.describe()} alone exceeds the memory budget of {fmt_bytes(self.budget, binary=True)} "
                f"(--vram-budget / Runtime(vram_budget=)); raise the budget or load it in a smaller dtype "
                f"(model.pipeline's dtype / dtypes)")

    def _cannot_fit(self, comp: Component, free: int | None) -> NodeError:
        room = f"only {fmt_bytes(free, binary=True)} is free" if free is not None else "it does not fit"
        return NodeError(f"{comp.describe()} cannot be moved onto {self.device}: {room} with every other component "
                         f"offloaded; load it in a smaller dtype (model.pipeline's dtype / dtypes), free device "
                         f"memory, or use a device with more memory")

    def _purge(self) -> None:
        """Forget the components whose modules were collected."""
        while self._dead:
            comp = self.components.pop(self._dead.pop(), None)
            if comp is not None and comp.resident:
                comp.resident = False
                self.resident_bytes -= comp.nbytes
                self.lru = OrderedDict((k, c) for k, c in self.lru.items() if c is not comp)
            if self.mru is comp:
                self.mru = None


def install_hooks(manager: MemoryManager, comp: Component, module: torch.nn.Module) -> None:
    """Forward pre-hooks on the module and its direct children: each makes the component resident and moves
    tensor arguments onto the device; `.to(device)` becomes a no-op (a dtype change still applies)."""

    def before(_: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if manager.mru is not comp or not comp.resident:
            manager.use(comp)
        device = manager.device
        return on_device(args, device), on_device(kwargs, device)

    for m in (module, *module.children()):
        m.register_forward_pre_hook(before, with_kwargs=True)
    ref = comp.ref

    def to(*args: Any, **kwargs: Any) -> torch.nn.Module:
        target = ref()
        _, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None or memory_format is not None:
            with manager._lock:
                torch.nn.Module.to(target, dtype=dtype, memory_format=memory_format)
                size = module_bytes(target)
                if comp.resident:
                    manager.resident_bytes += size - comp.nbytes
                comp.nbytes = size
        return target

    object.__setattr__(module, "to", to)


def on_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor in it (tuples, lists, dicts) on `device`."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(on_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: on_device(v, device) for k, v in value.items()}
    return value


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def placement(module: torch.nn.Module) -> torch.device | None:
    """The device of the module's first parameter (or buffer); None for a module without tensors."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None


def describe_module(module: torch.nn.Module) -> str:
    """Its class; a wrapper with one child names that too, e.g. "UNetNet(UNet2DConditionModel)"."""
    children = list(module.children())
    name = type(module).__name__
    return f"{name}({type(children[0]).__name__})" if len(children) == 1 else name


def concrete(device: torch.device) -> torch.device:
    """cuda -> cuda:<current>, as tensors report it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
         "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str | int, what: str = "--vram-budget") -> int:
    """'6GiB', '512 MiB', '1.5GB', '4g', '1000000' (bytes) -> bytes; a WorkflowError naming `what` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        m = SIZE.fullmatch(str(text))
        if m is None or m.group(2).lower() not in UNITS:
            raise WorkflowError([Problem(f"{what} {text!r} is not a size", hint="write e.g. 6GiB, 512MiB, 1.5GB "
                                         "or a number of bytes")])
        value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if value < 1:
        raise WorkflowError([Problem(f"{what} {text!r} must be at least 1 byte", hint="write e.g. 6GiB")])
    return int(value)
