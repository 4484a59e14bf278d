"""The pieces benchmarks/fast.py is built from, and what an entry file in benchmarks/fast_entries/ needs:
`Entry` (one row of the table: a workflow fragment built for a model, NFE budget and class), `Slot` (what
the fragment is built for), `ModelSpec` (a model, its latent and its quality metric) and the helpers that
assemble a fragment into a runnable workflow, size it to an NFE budget and account its cost.

An entry is a workflow, not a function call: `Entry.build(slot)` returns workflow JSON nodes, the harness
adds the model nodes and the initial latent and runs the whole through the runtime, so every row can be
dumped and run with `samplegraph run`. Interface notes for other helpers: /work/notes/fast_interface.md."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from samplegraph.graph.errors import SamplegraphError
from samplegraph.nodes.api import Registry
from samplegraph.runtime.api import RunResult, Runtime

Family = Literal["baseline", "solver", "schedule", "accel"]
FAMILIES: tuple[Family, ...] = ("baseline", "solver", "schedule", "accel")
MODEL_NAMES = ("gmm", "digits", "dit", "mnist")
RESERVED = ("denoise", "latent")  # plus every id starting with "m_"
ENTRIES_DIR = Path(__file__).resolve().parent / "fast_entries"
Nodes = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Slot:
    """What one fragment is built for: a model, a step count (sized to `budget` NFE) and a class."""

    model: str  # a ModelSpec name
    steps: int
    budget: int  # the NFE budget of the column
    denoise: str  # link of the harness's Denoiser, bound to `label`
    model_node: str  # id of the raw model node (unbound), for entries that wrap or re-condition it
    label: int | None  # the class of this run (None: unconditional model)
    sigma_min: float
    sigma_max: float
    shape: tuple[int, ...]  # one sample's shape (for calibration nodes that draw their own noise)


@dataclass(frozen=True)
class Entry:
    """One row: a named method whose fragment defines node "sample" (the samples), its sigmas linked."""

    name: str
    family: Family
    kinds: tuple[str, ...]  # node kinds the fragment uses; any unregistered -> the entry is skipped
    build: Callable[[Slot], Nodes]
    models: tuple[str, ...] = MODEL_NAMES
    steps: Callable[[int], int | None] | None = None  # budget -> steps (None: infeasible); default: probed
    note: str = ""
    versus: str | None = None  # the entry it accelerates or refines: compared cell by cell (wall, quality)
    show: tuple[str, ...] = ()  # numbers the sample node records (ctx.record) to print in its cells (mean over runs)
    max_nfe: dict[str, int] = field(default_factory=dict)  # per model: budgets above are not run (calibration cost)


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: its nodes, latent, sigma range, class count and the quality metric's parts."""

    name: str
    model: dict[str, Any]  # the raw model node ("m_model")
    kinds: tuple[str, ...]  # kinds it needs (model, classifier, data); any missing -> the model is skipped
    shape: tuple[int, ...]  # one sample's shape
    dtype: Literal["float32", "float64"]
    classes: int | None  # class-conditional: one run per class; None: one unconditional run
    per_class: int  # default samples per run (per class, or particles of the one run)
    quick_per_class: int
    quality: str  # column heading of the quality figure
    classifier: str | None = None  # kind of the feature network of FD
    reference: dict[str, Any] | None = None  # data node of the reference images of FD
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    notes: tuple[str, ...] = field(default=())

    def nodes(self, label: int | None) -> tuple[Nodes, str]:
        """The model nodes and the link of the Denoiser bound to `label`."""
        nodes: Nodes = {"m_model": self.model}
        if self.classes is None:
            return nodes, "m_model"
        nodes["denoise"] = {"kind": "model.condition", "params": {"label": label}, "inputs": {"model": "m_model"}}
        return nodes, "denoise"

    def labels(self) -> list[int | None]:
        return [None] if self.classes is None else list(range(self.classes))


def karras(slot: Slot, steps: int | None = None, rho: float = 7.0) -> dict[str, Any]:
    """A schedule.karras node over the model's sigma range with `steps` (default slot.steps) steps."""
    return {"kind": "schedule.karras", "params": {"steps": steps or slot.steps, "sigma_min": slot.sigma_min,
                                                  "sigma_max": slot.sigma_max, "rho": rho}}


def unconditional(slot: Slot) -> tuple[Nodes, str]:
    """Nodes and link of the model's unconditional Denoiser (its null class; the model itself when it has no
    classes): what a calibration fitted once per model, not per class, runs on (so all classes share it)."""
    if slot.label is None:
        return {}, slot.denoise
    return {"cal_uncond": {"kind": "model.condition", "params": {"label": None},
                           "inputs": {"model": slot.model_node}}}, "cal_uncond"


def solver_fragment(slot: Slot, kind: str, params: dict[str, Any] | None = None,
                    sigmas: dict[str, Any] | None = None, denoise: str | None = None) -> Nodes:
    """sigmas (Karras by default) + the solver node + the sample node: a whole fragment for a plain solver."""
    return {"sigmas": sigmas or karras(slot),
            "solver": {"kind": kind, "params": params or {}},
            "sample": {"kind": "sample", "inputs": {"denoise": denoise or slot.denoise, "sigmas": "sigmas",
                                                    "sampler": "solver", "latent": "latent"}}}


def solver_entry(name: str, family: Family, kind: str, params: dict[str, Any] | None = None,
                 models: tuple[str, ...] = MODEL_NAMES, note: str = "", versus: str | None = None) -> Entry:
    """An entry for a solver node on Karras sigmas."""
    return Entry(name, family, (kind,), lambda slot: solver_fragment(slot, kind, params), models, note=note,
                 versus=versus)


def load_entries(directory: Path = ENTRIES_DIR) -> list[Entry]:
    """ENTRIES of every benchmarks/fast_entries/*.py (files starting with '_' excepted), by family."""
    entries: list[Entry] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"fast_entries_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        entries += getattr(module, "ENTRIES")
    entries.sort(key=lambda e: FAMILIES.index(e.family))  # baselines first; file order within a family
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"fast_entries: entry names must be unique, repeated: {dup}")
    return entries


def missing_kinds(kinds: Sequence[str], registry: Registry) -> list[str]:
    return [k for k in kinds if k not in registry]


def assemble(entry: Entry, spec: ModelSpec, slot: Slot, batch: int, seed: int) -> dict[str, Any]:
    """The runnable workflow of one (entry, model, steps, class) run; outputs sample, latent and the sigmas
    the sample node steps over (the latent is drawn at their first level)."""
    model_nodes, _ = spec.nodes(slot.label)
    fragment = entry.build(slot)
    clash = sorted(k for k in fragment if k in RESERVED or k.startswith("m_"))
    sigmas = fragment.get("sample", {}).get("inputs", {}).get("sigmas")
    if clash or not isinstance(sigmas, str):
        raise ValueError(f"entry '{entry.name}': its fragment must define node 'sample' with a 'sigmas' input link "
                         f"and not use the harness's ids {list(RESERVED)} or 'm_*'; got {sorted(fragment)}")
    latent = {"kind": "latent.noise", "params": {"batch": batch, "shape": list(spec.shape), "dtype": spec.dtype},
              "inputs": {"sigmas": sigmas}}
    return {"version": 1, "seed": seed, "nodes": {**model_nodes, "latent": latent, **fragment},
            "outputs": ["sample", "latent", sigmas]}


@dataclass(frozen=True)
class Cost:
    """One run's honest cost, from its report: the sample node's NFE and wall time (sampling), and the NFE and
    wall time of every other node that actually ran (calibration: schedule / statistics / search nodes;
    model loading and binding, model.*, aside; a node served from the cache costs nothing again)."""

    nfe: int
    calibration_nfe: int
    wall_s: float
    calibration_s: float
    recorded: dict[str, Any]  # what the sample node recorded (its report entry's metrics)


def cost(result: RunResult) -> Cost:
    nodes = result.report.nodes
    sample = result.report.node("sample")
    worked = [n for n in nodes if n.cache in ("miss", "uncached") and not n.kind.startswith("model.")
              and n.node != "sample"]
    return Cost(sample.nfe, sum(n.nfe for n in nodes) - sample.nfe, sample.wall_s, sum(n.wall_s for n in worked),
                sample.metrics)


def slot_for(spec: ModelSpec, steps: int, budget: int, label: int | None) -> Slot:
    _, denoise = spec.nodes(label)
    return Slot(spec.name, steps, budget, denoise, "m_model", label, spec.sigma_min, spec.sigma_max, spec.shape)


class StepProbe:
    """The largest step count whose sampling NFE (measured on a batch of 1) fits a budget, per entry. It runs
    on its own Runtime, so what it caches (calibration nodes) is not served to, and free for, the real runs."""

    def __init__(self, runtime: Runtime, spec: ModelSpec, max_steps: int = 400):
        self.runtime = Runtime(device=runtime.device, registry=runtime.registry)
        self.spec, self.max_steps = spec, max_steps
        self.memo: dict[tuple[str, int], int | None] = {}
        self.errors: dict[str, str] = {}  # entry name -> the last error its probe runs raised

    def nfe(self, entry: Entry, steps: int) -> int | None:
        """Sampling NFE at `steps` (None where the entry cannot run that many steps)."""
        key = (entry.name, steps)
        if key not in self.memo:
            label = self.spec.labels()[0]
            wf = assemble(entry, self.spec, slot_for(self.spec, steps, 0, label), 1, 0)
            try:
                self.memo[key] = cost(self.runtime.run(wf)).nfe
            except SamplegraphError as e:
                self.memo[key] = None
                self.errors[entry.name] = f"{type(e).__name__}: {str(e)[:300]}"
        return self.memo[key]

    def steps(self, entry: Entry, budget: int) -> int | None:
        if entry.steps is not None:
            return entry.steps(budget)
        base = next((n for n in (1, 2, 3) if self.nfe(entry, n) is not None), None)
        if base is None or self.nfe(entry, base) > budget:
            return None
        per_step = max(1, (self.nfe(entry, base + 1) or self.nfe(entry, base) + 1) - self.nfe(entry, base))
        n = min(self.max_steps, base + (budget - self.nfe(entry, base)) // per_step)
        while n > base and (self.nfe(entry, n) is None or self.nfe(entry, n) > budget):
            n -= 1
        while n < self.max_steps and (found := self.nfe(entry, n + 1)) is not None and found <= budget:
            n += 1
        return n
