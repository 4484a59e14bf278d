"""Fast sampling: quality and wall time versus NFE for every solver, schedule and acceleration method
(the entries of benchmarks/fast_entries/*.py) on the same models, seeds and budgets, in one run.

    python benchmarks/fast.py [--models gmm digits dit] [--nfe 5 8 10 15 20 50]
                              [--families baseline solver schedule accel] [--entries NAME ...]
                              [--samples N] [--quick] [--no-plot] [--out DIR] [--dump NAME]

Every row is a workflow (an entry's fragment + the model nodes + latent.noise, run by the Runtime on CPU,
torch threads 1); `--dump NAME` prints the JSON of one. For each NFE budget an entry runs the largest step
count whose measured sampling NFE (the sample node's count, batch 1 probe) fits the budget; the NFE the
real run counted is shown where it differs, "n/a" where even the fewest steps need more.

Models and quality (seed 0; class models: one run per class, workflow seed 1000 * 0 + class, pooled):
- gmm: model.gmm (8-mode ring), float64, 512 particles; median distance to scipy's DOP853 (rtol = atol =
  1e-12) solution of the probability-flow ODE from the run's own sigmas[0] to 0.002, then D(x, 0.002);
- digits: model.digits (shipped MLP) bound to each of the 10 classes, 100 samples each (1000); FD in
  model.digits_classifier features against the 300 held-out images (data.digits heldout);
- dit: model.mnist_dit (class-conditional DiT), 10 classes x 20 samples (200); FD in model.mnist_classifier
  features against data.mnist heldout (500). FD from 200 samples is biased upward, equally for every row;
- mnist (not default): model.mnist (the shipped MLP), sized and scored like dit.
Sigmas: Karras rho 7 over 0.002 -> 80 unless an entry says otherwise. Wall: the sample node's seconds
summed over a cell's runs (all classes), each the least of --repeat timing runs (3 on gmm and digits);
the other nodes that ran (calibration: schedule fits,
statistics, searches; model.* loading and binding aside) are summed per row apart; each row runs on
its own Runtime, so it pays its own calibrations, once each where classes or budgets share one. A
shared 2-core machine: indicative. --quick: gmm 64 particles, 10 samples per class (the test's size).
Cost: plain rows take ~5 s on gmm + digits (all budgets, 3 timing runs) and ~30 s on the DiT (200
samples); calibrated rows add their calibration (DC-Solver 280 s on digits, hence digits only; AYS and
plan search are capped by Entry.max_nfe). Measured on the shared 2-core machine: gmm + digits 16 minutes,
the DiT about as long: over the ~25-minute target; --families / --entries / --samples trim it.
Writes benchmarks/results/fast.md, fast_<model>_nfe.png and fast_<model>_wall.png (--quick: fast_quick*)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samplegraph.graph.errors import SamplegraphError
from samplegraph.nodes.metrics.common import frechet_distance, in_chunks
from samplegraph.runtime.api import Runtime

from charts import line_chart
from common import table
from fast_core import (ENTRIES_DIR, FAMILIES, Cost, ModelSpec, StepProbe, Entry, assemble, cost, load_entries,
                       missing_kinds,
                       slot_for)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = (5, 8, 10, 15, 20, 50)
SEED = 0
MNIST_REF = {"kind": "data.mnist", "params": {"split": "heldout"}}
MODELS = {
    "gmm": ModelSpec("gmm", {"kind": "model.gmm"}, ("model.gmm",), (2,), "float64", None, 512, 64,
                     "median error vs DOP853"),
    "digits": ModelSpec("digits", {"kind": "model.digits"}, ("model.digits", "model.digits_classifier"), (8, 8),
                        "float32", 10, 100, 10, "FD_digits", "model.digits_classifier",
                        {"kind": "data.digits", "params": {"split": "heldout"}}),
    "dit": ModelSpec("dit", {"kind": "model.mnist_dit"}, ("model.mnist_dit", "model.mnist_classifier"), (28, 28),
                     "float32", 10, 20, 4, "FD_mnist", "model.mnist_classifier", MNIST_REF),
    "mnist": ModelSpec("mnist", {"kind": "model.mnist"}, ("model.mnist", "model.mnist_classifier"), (28, 28),
                       "float32", 10, 20, 4, "FD_mnist", "model.mnist_classifier", MNIST_REF),
}
DEFAULT_MODELS = ("gmm", "digits", "dit")


@dataclass
class Cell:
    """One (entry, budget) measurement; quality None with `why` when it could not be measured."""

    budget: int
    steps: int | None = None
    nfe: int = 0
    calibration_nfe: int = 0
    wall_s: float = 0.0
    calibration_s: float = 0.0
    quality: float | None = None
    why: str = ""
    shown: str = ""  # the entry's `show` numbers, e.g. "rounds 7"

    def text(self) -> str:
        if self.quality is None:
            return self.why
        extra = "" if self.nfe == self.budget else f" [{self.nfe}]"
        extra += f" +{self.calibration_nfe} cal" if self.calibration_nfe else ""
        return f"{self.quality:.3g} / {self.wall_s:.2g}s{extra}" + (f" ({self.shown})" if self.shown else "")


@dataclass
class ModelResult:
    spec: ModelSpec
    rows: dict[str, list[Cell]] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Quality:
    """The model's quality figure of pooled samples: error to the ODE reference (gmm) or FD (images)."""

    def __init__(self, spec: ModelSpec, runtime: Runtime):
        self.spec, self.runtime, self.refs, self.classifier = spec, runtime, {}, None
        if spec.reference is None:
            got = runtime.run({"version": 1, "nodes": {"m_model": spec.model}, "outputs": ["m_model"]})
            self.model = got["m_model"]
            return
        nodes = {"ref": spec.reference} | ({"clf": {"kind": spec.classifier}} if spec.classifier else {})
        outputs = ["ref.images", *(["clf"] if spec.classifier else [])]
        got = runtime.run({"version": 1, "nodes": nodes, "outputs": outputs})
        self.classifier = got["clf"] if spec.classifier else None
        self.reference = self.features(got["ref.images"])  # (M, F)

    def floor(self, n: int) -> float | None:
        """FD of n training images (seeded draw) against the reference: what real data scores (None for gmm)."""
        if self.spec.reference is None:
            return None
        train = {**self.spec.reference, "params": {**self.spec.reference.get("params", {}), "split": "train"}}
        x = self.runtime.run({"version": 1, "nodes": {"train": train}, "outputs": ["train.images"]})["train.images"]
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(SEED))[:n]
        return frechet_distance(self.features(x[pick]), self.reference)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier features (N, F) float64, or the flattened pixels without a classifier."""
        if self.classifier is None:
            return x.reshape(x.shape[0], -1).to(torch.float64)
        return in_chunks(self.classifier.features, x, 512)  # (N, F) float64

    def __call__(self, samples: list[torch.Tensor], latents: list[torch.Tensor], sigma0: float) -> float:
        """Error to the ODE reference of the same latent (no reference images), else FD to the reference."""
        if self.spec.reference is not None:
            return frechet_distance(self.features(torch.cat(samples)), self.reference)
        x, out = latents[0].to(torch.float64), samples[0].to(torch.float64)  # (B, 2)
        key = (sigma0, x.shape[0])
        if key not in self.refs:
            from solvers import reference
            end = self.spec.sigma_min
            at_end = reference(self.model, x, sigma0, end)  # (B, 2)
            self.refs[key] = self.model(at_end, torch.full((x.shape[0],), end, dtype=torch.float64))
        return float((out - self.refs[key]).norm(dim=1).median())


def measure_cell(entry: Entry, spec: ModelSpec, probe: StepProbe, quality: Quality, runtime: Runtime,
                 budget: int, per_class: int, done: dict[str, Cell], repeat: int = 1) -> Cell:
    """Run the entry at the budget for every class; identical workflows (another budget, same steps) reuse.
    Sampling wall per class: the least of `repeat` runs (the repeats draw other seeds, the same work, so the
    sample node cannot be served from the cache; calibration nodes keyed without the seed are not re-run)."""
    if budget > entry.max_nfe.get(spec.name, budget):
        return Cell(budget, why="not run (cost)")
    steps = probe.steps(entry, budget)
    if steps is None and probe.nfe(entry, 1) is None and probe.nfe(entry, 2) is None:
        raise RuntimeError(f"its workflow does not run (probe): {probe.errors.get(entry.name, '?')}")
    if steps is None:
        return Cell(budget, why="n/a")
    workflows = [assemble(entry, spec, slot_for(spec, steps, budget, label), per_class,
                          SEED * 1000 + (label or 0)) for label in spec.labels()]
    key = json.dumps(workflows[0], sort_keys=True)
    if key in done:
        return Cell(**{**done[key].__dict__, "budget": budget})
    samples, latents, costs, sigma0 = [], [], [], 0.0
    for wf in workflows:
        result = runtime.run(wf)
        first = cost(result)
        again = [cost(runtime.run({**wf, "seed": wf["seed"] + 100_000 * r})).wall_s for r in range(1, repeat)]
        costs.append(dataclasses.replace(first, wall_s=min([first.wall_s, *again])))
        samples.append(result["sample"])
        latents.append(result["latent"])
        sigma0 = float(result[wf["outputs"][2]].values[0])
    cell = Cell(budget, steps, max(c.nfe for c in costs), sum(c.calibration_nfe for c in costs),
                sum(c.wall_s for c in costs), sum(c.calibration_s for c in costs), quality(samples, latents, sigma0),
                shown=shown(entry.show, costs))
    done[key] = cell
    return cell


def shown(names: tuple[str, ...], costs: list[Cost]) -> str:
    """'name mean' of each recorded number over the runs (classes), in the entry's order."""
    parts = []
    for name in names:
        values = [c.recorded[name] for c in costs if isinstance(c.recorded.get(name), (int, float))]
        if values:
            parts.append(f"{name} {sum(values) / len(values):.3g}")
    return ", ".join(parts)


def measure_model(spec: ModelSpec, entries: list[Entry], budgets: list[int], per_class: int,
                  runtime: Runtime, repeat: int = 1) -> ModelResult:
    res = ModelResult(spec)
    probe, quality = StepProbe(runtime, spec), Quality(spec, runtime)
    for entry in entries:
        start = time.perf_counter()
        done: dict[str, Cell] = {}
        cells = []
        own = Runtime(device=runtime.device, registry=runtime.registry)  # each row pays its own calibrations
        own.run({"version": 1, "nodes": spec.nodes(None)[0], "outputs": ["m_model"]})
        for budget in budgets:
            try:
                cells.append(measure_cell(entry, spec, probe, quality, own, budget, per_class, done, repeat))
            except Exception as e:  # an entry under construction elsewhere must not sink the table
                cells.append(Cell(budget, why="error"))
                res.notes.append(f"{entry.name} at {budget} NFE failed: {type(e).__name__}: {str(e)[:300]}")
        res.rows[entry.name], res.entries[entry.name] = cells, entry
        print(f"  {spec.name} | {entry.name}: " + ", ".join(c.text() for c in cells)
              + f" ({time.perf_counter() - start:.1f} s)", flush=True)
    return res


def quality_table(res: ModelResult, budgets: list[int]) -> str:
    rows = [[name, res.entries[name].family, *(c.text() for c in cells), f"{sum(c.calibration_s for c in cells):.3g}"]
            for name, cells in res.rows.items()]
    return table(["method", "family", *[f"NFE {b}" for b in budgets], "calibration s (row)"], rows)


def versus_table(res: ModelResult, budgets: list[int]) -> str | None:
    """Entries that name the entry they accelerate or refine: sampling wall speed-up and quality, cell by cell."""
    rows = []
    for name, cells in res.rows.items():
        ref = res.entries[name].versus
        if ref is None or ref not in res.rows:
            continue
        out = []
        for c, r in zip(cells, res.rows[ref]):
            ok = c.quality is not None and r.quality is not None and c.wall_s > 0
            out.append(f"{r.wall_s / c.wall_s:.2f}x, {c.quality:.3g} vs {r.quality:.3g}" if ok else "-")
        rows.append([name, ref, *out])
    if not rows:
        return None
    return table(["method", "versus", *[f"NFE {b}: speed-up, quality vs its" for b in budgets]], rows)


def best_table(res: ModelResult, budgets: list[int]) -> str:
    """Per budget: the best configuration within it (measured NFE <= budget) and the best baseline."""
    rows = []
    for i, budget in enumerate(budgets):
        fits = [(c.quality, name, c) for name, cells in res.rows.items() for c in [cells[i]]
                if c.quality is not None and math.isfinite(c.quality) and c.nfe <= budget]
        if not fits:
            rows.append([budget, "-", "-", "-", "-", "-", "-", "-"])
            continue
        q, name, c = min(fits, key=lambda t: t[0])
        base = [t for t in fits if res.entries[t[1]].family == "baseline"]
        bq, bname, _ = min(base, key=lambda t: t[0]) if base else (None, "-", None)
        gain = f"{bq / q:.2f}x" if bq is not None and q > 0 else "-"
        rows.append([budget, name, res.entries[name].family, q, f"{c.wall_s:.2g}", bname,
                     "-" if bq is None else bq, gain])
    return table(["NFE budget", "best configuration", "family", res.spec.quality, "wall s", "best baseline",
                  f"baseline {res.spec.quality}", "baseline / best"], rows)


def plots(res: ModelResult, out: Path, suffix: str) -> list[Path]:
    nfe = {n: [(c.nfe, c.quality) for c in cells if c.quality is not None and c.quality > 0]
           for n, cells in res.rows.items()}
    wall = {n: [(c.wall_s, c.quality) for c in cells if c.quality is not None and c.quality > 0 and c.wall_s > 0]
            for n, cells in res.rows.items()}
    nfe, wall = {k: v for k, v in nfe.items() if v}, {k: v for k, v in wall.items() if v}
    paths = []
    for curves, axis, tag in ((nfe, "NFE (sampling denoiser evaluations)", "nfe"), (wall, "wall s", "wall")):
        if curves:
            path = out / f"fast{suffix}_{res.spec.name}_{tag}.png"
            line_chart(curves, path, f"{res.spec.name}: {res.spec.quality} vs {tag}", axis, res.spec.quality,
                       log_y=True)
            paths.append(path)
    return paths


def select(entries: list[Entry], families: list[str], names: list[str] | None) -> list[Entry]:
    chosen = [e for e in entries if e.family in families and (names is None or e.name in names)]
    unknown = sorted(set(names or ()) - {e.name for e in entries})
    if unknown:
        raise SystemExit(f"--entries: no entry named {unknown}; known: {[e.name for e in entries]}")
    return chosen


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    ap.add_argument("--nfe", nargs="+", type=int, default=list(BUDGETS))
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--entries", nargs="+", default=None, help="only these entry names")
    ap.add_argument("--samples", type=int, default=None, help="samples per class (gmm: particles)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--repeat", type=int, default=None, help="timing runs per class, least wall kept (default 3 on "
                                                              "gmm and digits, 1 on the 28x28 models and --quick)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--entries-dir", type=Path, default=ENTRIES_DIR, help="folder of the entry files")
    ap.add_argument("--dump", metavar="NAME", help="print the workflow of entry NAME (first model, budget, class)")
    return ap.parse_args()


def dump(entry: Entry, spec: ModelSpec, budget: int, runtime: Runtime) -> str:
    steps = StepProbe(runtime, spec).steps(entry, budget)
    label = spec.labels()[0]
    wf = assemble(entry, spec, slot_for(spec, steps or 1, budget, label), spec.per_class, SEED * 1000 + (label or 0))
    return json.dumps(wf, indent=2)


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    start = time.perf_counter()
    runtime = Runtime(device="cpu")
    entries = load_entries(args.entries_dir)
    if args.dump:
        print(dump(select(entries, list(FAMILIES), [args.dump])[0], MODELS[args.models[0]], args.nfe[0], runtime))
        return
    chosen = select(entries, args.families, args.entries)
    skipped = [f"{e.name} ({e.family}): kinds not registered: {', '.join(m)}"
               for e in chosen if (m := missing_kinds(e.kinds, runtime.registry))]
    runnable = [e for e in chosen if not missing_kinds(e.kinds, runtime.registry)]
    suffix = "_quick" if args.quick else ""
    sections, notes = [], []
    for name in args.models:
        spec = MODELS[name]
        absent = missing_kinds(spec.kinds, runtime.registry)
        if absent:
            notes.append(f"model {name}: kind {', '.join(absent)} not registered")
            print(notes[-1], flush=True)
            continue
        try:  # registered is not enough: weights may be missing
            scorer = Quality(spec, runtime)
            runtime.run({"version": 1, "nodes": spec.nodes(None)[0], "outputs": ["m_model"]})
        except SamplegraphError as e:
            notes.append(f"model {name}: could not be loaded: {str(e).splitlines()[0][:300]}")
            print(notes[-1], flush=True)
            continue
        per_class = args.samples or (spec.quick_per_class if args.quick else spec.per_class)
        here = [e for e in runnable if name in e.models]
        repeat = args.repeat or (1 if args.quick or spec.name in ("dit", "mnist") else 3)
        res = measure_model(spec, here, args.nfe, per_class, runtime, repeat)
        n_total = per_class * (spec.classes or 1)
        floor = scorer.floor(n_total)
        head = (f"## {name}\n\n{spec.quality}, {n_total} samples"
                + (f" ({spec.classes} classes x {per_class})" if spec.classes else "")
                + f", sampling wall the least of {repeat} run(s)"
                + ("" if floor is None else f"; floor: {n_total} training images score {floor:.3g}")
                + "; cells: quality / sampling wall s over all runs [measured sampling NFE where it differs from "
                  "the budget] (+NFE of calibration nodes, all runs); n/a: the fewest steps need more NFE; not run "
                  "(cost): the entry's calibration is too costly at that budget here; calibration s: wall of the "
                  "row's other nodes (schedule fits, statistics, searches), paid once per distinct calibration.")
        not_here = [e.name for e in runnable if name not in e.models]
        body = [head, "", quality_table(res, args.nfe), "", f"Best configuration per NFE budget ({name}):", "",
                best_table(res, args.nfe)]
        versus = versus_table(res, args.nfe)
        if versus:
            body += ["", f"Versus the method each one accelerates or refines ({name}; sampling wall of the other / "
                         f"this one, same budget):", "", versus]
        if not_here:
            body += ["", f"Not applicable to {name}: {', '.join(not_here)}."]
        body += [f"- {n}" for n in [*(f"{e}: {res.entries[e].note}" for e in res.rows if res.entries[e].note),
                                    *res.notes]]
        if not args.no_plot:
            body += ["", "Plots: " + ", ".join(p.name for p in plots(res, args.out, suffix))]
        sections.append("\n".join(body))
    title = "# Fast sampling: quality and wall time versus NFE" + (" (quick)" if args.quick else "")
    tail = ["Notes:", *(f"- {n}" for n in notes)] if notes else []
    tail += ["Skipped:", *(f"- {s}" for s in skipped)] if skipped else []
    parts = [title, f"torch threads {torch.get_num_threads()}, device cpu, seed {SEED}.", *sections]
    text = "\n\n".join([*parts, *(["\n".join(tail)] if tail else []), f"total {time.perf_counter() - start:.0f} s"])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"fast{suffix}.md").write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
