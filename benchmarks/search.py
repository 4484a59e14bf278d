"""Search strategies: reward, and on the GMM the distance to the exact tilted target, versus NFE at equal
compute; checks the published DTS / DTS* claims in the same run.

    python benchmarks/search.py [--quick] [--no-plot]

Every strategy node of nodes/search/ is run through its own run() with a NodeContext (as a workflow
would run it) at budgets of 1x, 2x, ..., 64x the NFE of a plain run (T = 20 Euler-ancestral steps):
samplers of the tilted target (smc, tds, fkc, svdd with alpha = 1/lambda, dts) and maximisers
(best_of_n, beam, zero_order, paths, rollover, dts* = search.dts greedy). search.fkc takes a second
model instead of a reward; on the GMM the reward's factor exp(lambda r) is itself a Gaussian model, so
fkc's 'product' target is exactly the tilted target there (it has no digits row).
A budget picks the strategy's parameters (from its cost formula, or for paths, tds and fkc the
candidate whose measured particle-NFE per output sample is nearest to budget x T, cells farther than
1.5x left empty; a budget below a strategy's least cost is left empty too); the
NFE reported and plotted is what the node's Budget counted (particle-NFE per output sample,
Tweedie value calls included, reward calls not).

Tasks:
- gmm: the 8-mode ring (radius 4, std 0.5), reward.quadratic centred between two modes (scale 1),
  lambda 1. The tilted target p(x) exp(lambda r(x)) / Z is a Gaussian mixture in closed form
  (reward.tilted_gmm); samplers are scored by sliced W2 to 20,000 exact tilted samples and by the
  total-variation error of the per-mode masses. search.rejection gives exact tilted samples (the
  reference row, NFE per accepted sample).
- digits: model.digits + model.condition(label=None), reward.classifier log p(y | x0) for class y = 3
  of the digits classifier (model.digits_classifier when registered, else a logistic regression fit here on the
  training split, said in the output), lambda 1: the tilted target p(x) p(y | x) / p(y) is the
  classifier's class conditional. Scored by mean reward and the fraction classified as y; a plain run
  of model.condition(label=3) and rejection sampling are reference rows.

Claims (Jain et al. 2025): DTS* reaches the reward of best-of-N with up to 5x less NFE; DTS matches
the best sampling baseline's quality (here: SW2 on the GMM, reward on digits) with up to 10x less
compute. NFE-to-reach is interpolated linearly in log NFE between the measured budgets.
Writes benchmarks/results/search_<task>.png and benchmarks/results/search.md (Pillow plots)."""
from __future__ import annotations

import argparse
import colorsys
import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from samplegraph.nodes import builtin_nodes
from samplegraph.nodes.api import Node
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Denoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.metrics.common import sliced_wasserstein
from samplegraph.nodes.models.classifier import Classifier
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.rewards.classifier import RewardClassifier
from samplegraph.nodes.rewards.quadratic import RewardQuadratic
from samplegraph.nodes.rewards.reward import Reward
from samplegraph.nodes.rewards.tilted_gmm import RewardTiltedGMM
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.beam import Beam
from samplegraph.nodes.search.best_of_n import BestOfN
from samplegraph.nodes.search.dts import Dts
from samplegraph.nodes.search.fkc import Fkc
from samplegraph.nodes.search.paths import Paths
from samplegraph.nodes.search.rejection import Rejection
from samplegraph.nodes.search.rollover import Rollover
from samplegraph.nodes.search.smc import Smc
from samplegraph.nodes.search.svdd import Svdd
from samplegraph.nodes.search.tds import Tds
from samplegraph.nodes.search.zero_order import ZeroOrder

from common import table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEPS = 20
BUDGETS, QUICK_BUDGETS = [1, 2, 4, 8, 16, 32, 64], [1, 2, 4]
POWERS = [1, 2, 4, 8, 16, 32, 64]  # candidate particle counts where the cost per particle is measured
TARGET_CLASS = 3
SAMPLER = EulerAncestral()


@dataclass
class Task:
    """One benchmark problem: a model, a reward and lambda, and how outputs are scored."""

    name: str
    denoise: Denoiser
    sigmas: Sigmas
    shape: tuple[int, ...]
    dtype: torch.dtype
    reward: Reward
    lam: float
    groups: int  # output samples per strategy run
    exact: GaussianMixture | None = None  # the exact tilted target, where known
    exact_samples: torch.Tensor | None = None
    classify: Classifier | None = None
    reward_factor: GaussianMixture | None = None  # exp(lam r) as a model, where it is one (search.fkc's p2)

    def latent(self, rows: int, seed: int) -> torch.Tensor:
        """rows initial noises (rows, ...) at sigma_max, keyed by row (as latent.noise draws them)."""
        eps = NoiseSource(seed).normal(torch.arange(rows), -1, self.shape, dtype=self.dtype)  # (rows, ...)
        return eps * float(self.sigmas.values[0])

    @property
    def metrics(self) -> list[str]:
        return ["reward", "sw2", "mode_tv"] if self.exact is not None else ["reward", "accuracy"]

    def score(self, x: torch.Tensor) -> dict[str, float]:
        """Mean reward, and SW2 + mode-mass TV error to the exact target (GMM) or class accuracy (digits)."""
        out = {"reward": float(self.reward(x).double().mean())}
        if self.exact is not None:
            out["sw2"] = sliced_wasserstein(x, self.exact_samples, 32, torch.Generator().manual_seed(0))
            out["mode_tv"] = 0.5 * float((self.exact.mode_weights_of(x) - self.exact.weights).abs().sum())
        if self.classify is not None:
            out["accuracy"] = float((self.classify(x).argmax(1) == TARGET_CLASS).double().mean())
        return out


@dataclass(frozen=True)
class Strategy:
    """A strategy node's candidate configurations per budget multiple, and its latent rows per output."""

    name: str
    samples_target: bool  # True: samples the tilted target (scored by distance); False: a maximiser
    configs: Callable[[int], list[Node]]  # budget multiple -> candidate nodes
    rows: Callable[[Node], int] = lambda node: 1
    inputs: Callable[[Task], dict[str, object]] = lambda task: {}  # extra input ports (search.fkc's denoise2)


def strategies(task: Task) -> list[Strategy]:
    """Every search node that takes a reward (search.fkc, which takes a second model instead, where the
    reward is a model: on the GMM the quadratic reward's factor exp(lam r) is the Gaussian N(c, s^2 / lam));
    [] where a budget is below a strategy's least cost (SVDD and beam value each child: 2 calls a step).
    TDS (a backward pass a step) and FKC (two models) cost 2 NFE a particle-step: their particle counts are
    chosen by measured cost."""
    lam = task.lam

    def dts(b: int, greedy: bool) -> list[Node]:
        return [Dts(rollouts=4 * b, children=4, lam=lam, greedy=greedy, max_nfe=b * STEPS)]

    def beam(b: int) -> list[Node]:  # K x M children, each stepped and valued: ~2 K M plain runs
        km = b // 2
        k = 2 ** (int(math.log2(km)) // 2) if km else 1
        return [Beam(beams=k, children=km // k)] if km else []

    def zero_order(b: int) -> list[Node]:  # a pivot run plus N candidates per iteration: (1 + N I) plain runs
        n = max(1, min(4, b - 1))
        return [ZeroOrder(candidates=n, iterations=round((b - 1) / n))]

    out = [
        Strategy("best_of_n", False, lambda b: [BestOfN(n=b)], lambda s: s.n),
        Strategy("smc", True, lambda b: [Smc(particles=b, lam=lam, keep="one")], lambda s: s.particles),
        Strategy("tds", True, lambda b: [Tds(particles=n, lam=lam, keep="one") for n in POWERS], lambda s: s.particles),
        Strategy("svdd", True, lambda b: [Svdd(candidates=b // 2, alpha=1 / lam)] if b >= 2 else []),
        Strategy("beam", False, beam, lambda s: s.beams),
        Strategy("zero_order", False, zero_order),
        Strategy("paths", False, lambda b: [Paths(n=n, branches=m, start=5, back=2, forward=5)
                                            for n in (1, 2, 4, 8) for m in (1, 2, 4)], lambda s: s.n),
        Strategy("rollover", False, lambda b: [Rollover(initial=4, budget=b * STEPS)] if b >= 2 else [],
                 lambda s: s.initial),
        Strategy("dts", True, lambda b: dts(b, False)),
        Strategy("dts*", False, lambda b: dts(b, True)),
    ]
    if task.reward_factor is not None:  # two models, each charged: 2 particle-NFE a step
        out.insert(3, Strategy("fkc", True, lambda b: [Fkc(target="product", particles=n, keep="one") for n in POWERS],
                               lambda s: s.particles, lambda task: {"denoise2": task.reward_factor}))
    return out


def run_node(task: Task, strategy: Strategy, node: Node, groups: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The node's outputs on `groups` output groups and its metrics (NFE per output, wall time); each
    input port the node declares gets the task's object of that name."""
    ctx = NodeContext.detached(seed=seed)
    ports = {"denoise": task.denoise, "sigmas": task.sigmas, "sampler": SAMPLER, "reward": task.reward, "ctx": ctx,
             "latent": task.latent(groups * strategy.rows(node), seed), **strategy.inputs(task)}
    start = time.perf_counter()
    x = node.run(**{k: v for k, v in ports.items() if k in inspect.signature(node.run).parameters})
    wall = time.perf_counter() - start
    return x, {**ctx.metrics, "nfe_per_sample": ctx.metrics["particle_nfe"] / x.shape[0], "wall_s": wall}


_COST: dict[str, float] = {}


def cost(strategy: Strategy, node: Node) -> float:
    """Particle-NFE per output of a configuration, measured once on one group of the GMM: fixed-cost
    strategies spend the same NFE on any model with the same schedule and sampler."""
    if repr(node) not in _COST:
        _COST[repr(node)] = run_node(gmm_task(1, 1), strategy, node, 1)[1]["nfe_per_sample"]
    return _COST[repr(node)]


def choose(strategy: Strategy, b: int) -> Node | None:
    """The candidate nearest (in log NFE) to b plain runs; None when all are more than 1.5x away."""
    nodes = strategy.configs(b)
    if len(nodes) <= 1:
        return nodes[0] if nodes else None
    best = min(nodes, key=lambda n: abs(math.log(cost(strategy, n) / (b * STEPS))))
    return best if abs(math.log(cost(strategy, best) / (b * STEPS))) <= math.log(1.5) else None


def sweep(task: Task, budgets: list[int]) -> dict[str, list[dict]]:
    """strategy name -> one record per budget it could be run at: budget, config, NFE, scores, wall time."""
    curves: dict[str, list[dict]] = {}
    for strategy in strategies(task):
        curves[strategy.name] = []
        for b in budgets:
            node = choose(strategy, b)
            if node is None:
                continue
            x, m = run_node(task, strategy, node, task.groups)
            curves[strategy.name].append({"budget": b, "node": node, "nfe": m["nfe_per_sample"],
                                          "wall_s": m["wall_s"], **task.score(x)})
    return curves


def references(task: Task, budgets: list[int]) -> dict[str, dict]:
    """Rejection sampling (exact tilted samples) and, on digits, a plain class-conditional run."""
    rej = Strategy("rejection", True, lambda b: [Rejection(lam=task.lam)])
    x, m = run_node(task, rej, Rejection(lam=task.lam), max(256, task.groups * max(budgets)))  # accepts ~10%
    refs = {"rejection (exact tilted)": {"nfe": m["nfe_per_sample"], "wall_s": m["wall_s"], "samples": x.shape[0],
                                         **task.score(x)}}
    if task.exact is not None:  # the metrics' noise floor: exact samples, as many as a strategy returns
        x = task.exact.sample(task.groups, torch.Generator().manual_seed(2))
        refs["exact tilted samples (metric floor)"] = {"nfe": math.nan, "wall_s": 0.0, "samples": task.groups,
                                                       **task.score(x)}
    if task.classify is not None:
        cond = ModelCondition(label=TARGET_CLASS).run(task.denoise)
        latent = task.latent(task.groups, 0)
        x = run_steps(SAMPLER, cond, SAMPLER.init(latent, task.sigmas), NoiseSource(0)).x
        refs[f"plain model.condition(label={TARGET_CLASS})"] = {"nfe": float(STEPS), "wall_s": 0.0,
                                                                "samples": x.shape[0], **task.score(x)}
    return refs


@functools.cache
def gmm_task(groups: int, exact_n: int = 20_000) -> Task:
    gmm = ModelGMM().run()
    center = ((gmm.means[0] + gmm.means[1]) / 2).tolist()  # between two ring modes: rare under p
    reward = RewardQuadratic(center=center, scale=1.0).run()
    exact = RewardTiltedGMM(lam=1.0).run(gmm, reward)
    factor = GaussianMixture(torch.tensor([center]), torch.ones(1, 2), torch.ones(1))  # N(c, s^2 / lam), s = lam = 1
    return Task("gmm", gmm, Karras(steps=STEPS, sigma_min=0.01, sigma_max=20.0).run(), (2,), torch.float64,
                reward, 1.0, groups, exact, exact.sample(exact_n, torch.Generator().manual_seed(1)),
                reward_factor=factor)


class LogisticDigits(Classifier):
    """Stand-in digits classifier: multinomial logistic regression on the pixels (scikit-learn fit)."""

    classes = 10

    def __init__(self):
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        x, y = digits_split("train")
        with threadpool_limits(1):  # BLAS threads contending with torch's make the fit 40x slower
            fit = LogisticRegression(max_iter=3000).fit(x.reshape(-1, 64).numpy(), y.numpy())
        self.w = torch.tensor(fit.coef_.T, dtype=torch.float32)  # (64, 10)
        self.b = torch.tensor(fit.intercept_, dtype=torch.float32)  # (10,)

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x0.reshape(x0.shape[0], -1).float() @ self.w + self.b, 1)  # (B, 10)

    def features(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.reshape(x0.shape[0], -1)


def digits_classifier() -> tuple[Classifier, str]:
    """model.digits_classifier when it is registered and runs with defaults, else the logistic stand-in."""
    kinds = {getattr(cls, "__node_kind__", None): cls for cls in builtin_nodes()}
    if "model.digits_classifier" in kinds:
        try:
            return kinds["model.digits_classifier"]().run(), "model.digits_classifier"
        except Exception as e:  # noqa: BLE001 - a node under construction elsewhere must not sink the benchmark
            print(f"model.digits_classifier failed ({e}); using the logistic-regression stand-in")
    else:
        print("model.digits_classifier is not registered; using a logistic-regression stand-in classifier")
    return LogisticDigits(), "logistic regression stand-in (fit here on the training split)"


def digits_task(groups: int) -> tuple[Task, str]:
    classifier, which = digits_classifier()
    reward = RewardClassifier(label=TARGET_CLASS).run(classifier)
    uncond = ModelCondition(label=None).run(ModelDigits().run())  # the unconditional model, as workflows bind it
    task = Task("digits", uncond, Karras(steps=STEPS, sigma_min=0.002, sigma_max=80.0).run(),
                (8, 8), torch.float32, reward, 1.0, groups, classify=classifier)
    return task, which


def nfe_to_reach(points: list[tuple[float, float]], target: float, higher: bool) -> float | None:
    """First NFE where the curve reaches target (log-linear between measured points), None if never."""
    pts = sorted(points)
    for i, (n, v) in enumerate(pts):
        if (v >= target) if higher else (v <= target):
            if i == 0 or v == pts[i - 1][1]:
                return n
            n0, v0 = pts[i - 1]
            f = (target - v0) / (v - v0)
            return math.exp(math.log(n0) + f * (math.log(n) - math.log(n0)))
    return None


def claim(curves: dict[str, list[dict]], ours: str, baselines: list[str], metric: str, higher: bool,
          promised: float, what: str) -> str:
    """Per budget: the best baseline value, the NFE `ours` needs to reach it, and the ratio; a verdict."""
    rows, ratios = [], []
    budgets = sorted({r["budget"] for name in baselines for r in curves.get(name, [])})
    ours_pts = [(r["nfe"], r[metric]) for r in curves[ours]]
    for b in budgets:
        cands = [(r[metric], r["nfe"], name) for name in baselines for r in curves.get(name, []) if r["budget"] == b]
        value, nfe, name = max(cands) if higher else min(cands)
        need = nfe_to_reach(ours_pts, value, higher)
        ratio = nfe / need if need else None
        if ratio is not None:
            ratios.append(ratio)
        rows.append([f"{b}x", name, round(nfe, 1), value, "not reached" if need is None else round(need, 1),
                     "-" if ratio is None else f"{ratio:.2f}"])
    best = max(ratios, default=0.0)
    verdict = ("holds" if best >= promised else "partly holds" if best > 1 else "does not hold")
    measured = (f"up to {best:.2f}x less NFE" if ratios else
                f"{ours} never reaches the baseline's {metric} within the measured budgets")
    head = (f"Claim: {what} (up to {promised:g}x). Measured: {measured} -> {verdict}"
            f"{'' if best >= promised else f' (the promised {promised:g}x is not reached here)'}.")
    return head + "\n" + table(["budget", "best baseline", "its NFE/sample", f"its {metric}",
                                f"{ours} NFE to reach it", "NFE ratio (baseline / ours)"], rows)


def matrix(curves: dict[str, list[dict]], metric: str, budgets: list[int]) -> str:
    """Strategies x budgets table of one metric; (k.kx) gives the actual NFE multiple where it differs by >15%."""
    rows = []
    for name, recs in curves.items():
        by_b = {r["budget"]: r for r in recs}
        cells = []
        for b in budgets:
            r = by_b.get(b)
            if r is None:
                cells.append("-")
                continue
            mult = r["nfe"] / STEPS
            cells.append(f"{r[metric]:.3g}" + ("" if abs(math.log(mult / b)) < math.log(1.15) else f" ({mult:.1f}x)"))
        rows.append([name, *cells])
    return table(["strategy", *[f"{b}x" for b in budgets]], rows)


def detail(curves: dict[str, list[dict]], refs: dict[str, dict], metrics: list[str]) -> str:
    """Every run: configuration, NFE per sample, scores, wall time."""
    rows = [[name, f"{r['budget']}x", r["node"].__node_kind__, config(r["node"]), round(r["nfe"], 1),
             *[r[m] for m in metrics], round(r["wall_s"], 2)] for name, recs in curves.items() for r in recs]
    rows += [[name, "-", "-", f"{r['samples']} samples", round(r["nfe"], 1), *[r[m] for m in metrics],
              round(r["wall_s"], 2)] for name, r in refs.items()]
    return table(["strategy", "budget", "node", "parameters", "NFE/sample", *metrics, "wall s"], rows)


def config(node: Node) -> str:
    """The parameters the benchmark set (the node's defaults otherwise)."""
    return ", ".join(f"{k}={getattr(node, k)}" for k in type(node).model_fields if k in node.model_fields_set)


def plot(task: Task, curves: dict[str, list[dict]], refs: dict[str, dict], metrics: list[tuple[str, bool]],
         path: Path) -> None:
    """One panel per metric (log NFE on x; log y where asked): samplers of the tilted target with dots,
    maximisers with squares, references as stars, the exact-sample metric floor as a grey line."""
    pw, ph, pad = 520, 400, 70
    img = Image.new("RGB", (len(metrics) * (pw + pad) + pad + 220, ph + 2 * pad), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=13)
    names = list(curves)
    hsv = [(i / len(names), 0.9, 0.9 - 0.35 * (i % 2)) for i in range(len(names))]  # alternate shades
    color = {n: tuple(round(255 * c) for c in colorsys.hsv_to_rgb(*v)) for n, v in zip(names, hsv)}
    color |= {n: (0, 0, 0) if i == 0 else (150, 150, 150) for i, n in enumerate(refs)}  # rejection black
    square = {s.name for s in strategies(task) if not s.samples_target}
    points = {n: r for n, r in refs.items() if math.isfinite(r["nfe"])}
    floors = {n: r for n, r in refs.items() if not math.isfinite(r["nfe"])}
    for j, (metric, logy) in enumerate(metrics):
        series = {n: [(r["nfe"], r[metric]) for r in recs] for n, recs in curves.items()}
        series |= {n: [(r["nfe"], r[metric])] for n, r in points.items()}
        lines = [r[metric] for r in floors.values() if metric != "reward"]
        panel(draw, font, (pad + j * (pw + pad), pad, pw, ph), series, lines, color, square, metric, logy)
    lx, ly = len(metrics) * (pw + pad) + pad - 20, pad
    for n in [*names, *points, *floors]:
        draw.text((lx + 16, ly), n, fill="black", font=font, anchor="lm")
        if n in points:
            star(draw, (lx + 2, ly), color[n])
        else:
            draw.line([(lx - 6, ly), (lx + 10, ly)], fill=color[n] if n in color else (170, 170, 170), width=3)
            mark(draw, (lx + 2, ly), color[n], n in square) if n in names else None
        ly += 20
    draw.text((img.width / 2, 20), f"search strategies on {task.name}: metric vs particle-NFE per output sample "
              f"(plain run = {STEPS}), {task.groups} samples per point", fill="black", font=font, anchor="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def panel(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, box: tuple[int, int, int, int],
          series: dict[str, list[tuple[float, float]]], lines: list[float], color: dict, square: set[str],
          metric: str, logy: bool) -> None:
    """One log-x panel: a polyline per series (a star for a single point), horizontal grey lines at `lines`."""
    left, top, w, h = box
    pts = [p for v in series.values() for p in v if not logy or p[1] > 0]
    fy = (lambda v: math.log10(v)) if logy else (lambda v: v)
    x_lo, x_hi = math.log10(min(p[0] for p in pts)) - 0.1, math.log10(max(p[0] for p in pts)) + 0.1
    ys = [fy(p[1]) for p in pts] + [fy(v) for v in lines if not logy or v > 0]
    y_lo, y_hi = min(ys), max(ys)
    y_lo, y_hi = y_lo - 0.05 * (y_hi - y_lo + 1e-9), y_hi + 0.05 * (y_hi - y_lo + 1e-9)

    def at(n: float, v: float) -> tuple[float, float]:
        return left + (math.log10(n) - x_lo) / (x_hi - x_lo) * w, top + (y_hi - fy(v)) / (y_hi - y_lo) * h

    draw.rectangle([left, top, left + w, top + h], outline="black")
    for k in range(12):  # a tick at every doubling of the plain run's NFE
        if x_lo <= math.log10(STEPS * 2 ** k) <= x_hi:
            x = at(STEPS * 2 ** k, pts[0][1])[0]
            draw.line([(x, top), (x, top + h)], fill=(225, 225, 225))
            draw.text((x, top + h + 6), f"{STEPS * 2 ** k}", fill="black", font=font, anchor="mt")
    for k in range(5):
        v = y_lo + k / 4 * (y_hi - y_lo)
        y = top + h - k / 4 * h
        draw.text((left - 6, y), f"{10 ** v:.3g}" if logy else f"{v:.3g}", fill="black", font=font, anchor="rm")
    draw.text((left + w / 2, top - 12), metric + (" (log)" if logy else ""), fill="black", font=font, anchor="mm")
    draw.text((left + w / 2, top + h + 26), "NFE per output sample (log)", fill="black", font=font, anchor="mm")
    for v in lines:
        y = at(10.0 ** x_lo, v)[1]
        draw.line([(left, y), (left + w, y)], fill=(170, 170, 170), width=3)
    for n, p in series.items():
        xy = [at(a, v) for a, v in sorted(p) if not logy or v > 0]
        if len(p) == 1:
            star(draw, xy[0], color[n]) if xy else None
            continue
        draw.line(xy, fill=color[n], width=2)
        for q in xy:
            mark(draw, q, color[n], n in square)


def mark(draw: ImageDraw.ImageDraw, at: tuple[float, float], color: tuple[int, int, int], square: bool) -> None:
    x, y = at
    (draw.rectangle if square else draw.ellipse)([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=color)


def star(draw: ImageDraw.ImageDraw, at: tuple[float, float], color: tuple[int, int, int]) -> None:
    x, y = at
    radii = [7 if k % 2 == 0 else 3 for k in range(10)]  # outer and inner points of a five-pointed star
    pts = [(x + r * math.sin(k * math.pi / 5), y - r * math.cos(k * math.pi / 5)) for k, r in enumerate(radii)]
    draw.polygon(pts, fill=color, outline="black")


def report(task: Task, curves: dict[str, list[dict]], refs: dict[str, dict], budgets: list[int], note: str) -> str:
    """The printed section of one task: matrices, reference rows and the two claims."""
    samplers = [s.name for s in strategies(task) if s.samples_target and s.name != "dts"]
    gradient_free = [n for n in samplers if n in ("smc", "svdd")]  # like DTS, they only evaluate r
    quality = ("sw2", False) if task.exact is not None else ("reward", True)
    metrics = task.metrics
    parts = [f"## {task.name}: {note}", ""]
    for m in metrics:
        parts += [f"{m} by budget (multiple of the plain run's {STEPS} NFE per sample):", matrix(curves, m, budgets),
                  ""]
    parts += ["References:", table(["reference", "NFE/sample", "samples", *metrics],
                                   [[n, round(r["nfe"], 1), r["samples"], *[r[m] for m in metrics]]
                                    for n, r in refs.items()]), ""]
    parts += [claim(curves, "dts*", ["best_of_n"], "reward", True, 5.0,
                    "DTS* reaches the best-of-N reward with less NFE"), ""]
    for group in (samplers, gradient_free):
        what = f"DTS matches the best sampling baseline ({', '.join(group)}) in {quality[0]} with less NFE"
        parts += [claim(curves, "dts", group, *quality, 10.0, what), ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke version: budgets 1x-4x, few samples")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    digits, which = digits_task(4 if args.quick else 32)
    tasks = [(gmm_task(32, 2000) if args.quick else gmm_task(512),
              "8-mode ring GMM, reward.quadratic between two modes, lambda 1"),
             (digits, f"model.digits unconditional, reward.classifier label {TARGET_CLASS} of {which}, lambda 1")]
    sections, start = [], time.perf_counter()
    for task, note in tasks:
        curves = sweep(task, budgets)
        refs = references(task, budgets)
        section = report(task, curves, refs, budgets, note + f", {task.groups} output samples per cell")
        print(section)
        sections += [section, "All runs:", detail(curves, refs, task.metrics), ""]
        if not args.no_plot:
            logs = {"sw2": True, "mode_tv": True}
            plot(task, curves, refs, [(m, logs.get(m, False)) for m in task.metrics],
                 RESULTS / f"search_{task.name}{'_quick' if args.quick else ''}.png")
    print(f"total wall {time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()}")
    if not args.quick:
        (RESULTS / "search.md").write_text("# benchmarks/search.py\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
