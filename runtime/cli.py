"""The `samplegraph` command: run, validate, nodes, schema, graph.

User mistakes (bad workflows, bad node inputs) print located messages and exit 2 (invalid
workflow) or 1 (a node failed), never a traceback; `--debug` shows tracebacks."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ..graph.errors import NodeRunError, Problem, RunCancelled, SamplegraphError, WorkflowError
from ..graph.render import to_dot, to_mermaid
from ..graph.schema import workflow_schema
from ..graph.workflow import Workflow, parse_override, suggest

EXIT_INVALID, EXIT_FAILED, EXIT_CANCELLED = 2, 1, 130
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like other Unix tools


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLEGRAPH_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "samplegraph"


VRAM_HELP = ("device memory for model weights, e.g. 6GiB, 512MiB, 1.5GB: pipeline components are offloaded to "
             "the CPU, least recently used first, so the resident ones fit (default: the GPU's free memory "
             "bounds them)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="samplegraph", description="Run and inspect sampling workflows.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--version", action="version", version=f"samplegraph {__version__}")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the top-level value when absent
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)
    add = lambda name, **kw: sub.add_parser(name, parents=[common], **kw)

    run = add("run", help="run a workflow headless")
    run.add_argument("workflow", type=Path)
    add_set(run)
    run.add_argument("--out", type=Path, help="output folder (default: out/<workflow name>)")
    run.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--vram-budget", type=size_arg, metavar="SIZE", help=VRAM_HELP)
    run.add_argument("--cache-dir", type=Path, help=f"disk cache (default: {default_cache_dir()})")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write any cache")
    run.add_argument("--seed", type=int, help="override the workflow's seed")
    run.add_argument("--output", action="append", dest="outputs",
                     help="compute only this output (repeatable): NODE or NODE.PORT; a tensor is saved as "
                          "OUT/NAME.safetensors (key 'x'), a number printed")
    run.add_argument("--quiet", action="store_true",
                     help="no progress output on stderr (no bars, no per-node lines); the outputs and the report "
                          "path are still printed on stdout, and errors on stderr")
    run.add_argument("--threads", type=threads_arg, default="auto",
                     help="CPU threads for torch: a positive integer, or 'auto' (the default): one per core that "
                          "other processes leave free when the run starts (busy cores make torch's threads wait "
                          "for each other; see benchmarks/threads.py)")

    sweep = add("sweep", help="run the cartesian product of parameter grids; one results table and a plot")
    sweep.add_argument("workflow", type=Path)
    sweep.add_argument("--grid", action="append", default=[], metavar="NODE.PARAM=V1,V2,...",
                       help="one sweep axis (values parsed as JSON each, else strings); repeatable: the product runs")
    add_set(sweep)
    sweep.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="where nodes run: this process (default) or a Ray cluster (needs the ray extra)")
    sweep.add_argument("--address", help="Ray cluster address: 'auto' or HOST:PORT (default: start a local one)")
    sweep.add_argument("--parallel", type=int, default=0,
                       help="with --backend ray: grid points in flight at once (default: all of them)")
    sweep.add_argument("--out", type=Path, help="output folder (default: out/<workflow name>-sweep)")
    sweep.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda | cuda:N (default: auto)")
    sweep.add_argument("--vram-budget", type=size_arg, metavar="SIZE", help=VRAM_HELP)
    sweep.add_argument("--cache-dir", type=Path, help=f"disk cache (default: {default_cache_dir()})")
    sweep.add_argument("--no-cache", action="store_true",
                       help="no disk cache (the memory cache still shares a sweep's common nodes)")
    sweep.add_argument("--seed", type=int, help="override the workflow's seed")
    sweep.add_argument("--output", action="append", dest="outputs", help="compute only this output (repeatable)")
    sweep.add_argument("--quiet", action="store_true", help="no per-point lines on stderr")

    val = add("validate", help="report every problem of a workflow")
    val.add_argument("workflow", type=Path)
    add_set(val)

    nodes = add("nodes", help="list node kinds, or show one in full")
    nodes.add_argument("kind", nargs="?", help="a kind (sampler.heun) or a role prefix (sampler) to list its kinds")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")

    add("schema", help="print the JSON Schema of workflow files")

    graph = add("graph", help="print a workflow's DAG as Mermaid or DOT")
    graph.add_argument("workflow", type=Path)
    add_set(graph)
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")

    serve = add("serve", help="run the HTTP job server (needs the extra: pip install samplegraph[serve])")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1; anything but loopback requires the bearer token)")
    serve.add_argument("--port", type=port_arg, default=8188, help="port (default: 8188)")
    serve.add_argument("--state-dir", type=Path, default=Path("samplegraph-state"),
                       help="jobs database, outputs, token and cache (default: ./samplegraph-state)")
    serve.add_argument("--workers", type=positive_int, default=1, help="jobs run at once (worker threads)")
    serve.add_argument("--threads", type=threads_arg, default="auto",
                       help="CPU threads for torch in each worker (each running job): a positive integer, or 'auto' "
                            "(the default): the cores other processes leave free at start, shared among the workers")
    serve.add_argument("--model-root", action="append", type=Path, default=[], dest="model_roots",
                       help="folder that workflows may load model files from (repeatable; default: none)")
    serve.add_argument("--cache-dir", type=Path, help="disk cache (default: STATE_DIR/cache)")
    serve.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda | cuda:N")
    serve.add_argument("--vram-budget", type=size_arg, metavar="SIZE", help=VRAM_HELP)
    serve.add_argument("--max-body", type=positive_int, default=8 << 20, help="request size limit in bytes")
    return p


def positive_int(text: str, expected: str = "a positive integer", most: int | None = None) -> int:
    """An argument that must be a positive integer (at most `most`); anything else is a usage error."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or (most is not None and n > most):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return n


def port_arg(text: str) -> int:
    """--port: a TCP port number, 1-65535; anything else is a usage error."""
    return positive_int(text, "a port number from 1 to 65535", most=65535)


def device_arg(text: str) -> str:
    """--device: a device torch knows and this machine has; anything else is a usage error naming --device."""
    from .devices import resolve_device

    try:
        resolve_device(text)
    except WorkflowError as e:
        raise argparse.ArgumentTypeError("; ".join(str(p) for p in e.problems)) from None
    return text


def size_arg(text: str) -> int:
    """--vram-budget: a size with a unit (6GiB, 512MiB, 1.5GB) or bytes; anything else is a usage error."""
    from .memory import parse_bytes

    try:
        return parse_bytes(text)
    except WorkflowError as e:
        raise argparse.ArgumentTypeError("; ".join(str(p) for p in e.problems)) from None


def threads_arg(text: str) -> int | str:
    """--threads: a positive integer or 'auto'; anything else is a usage error."""
    if text == "auto":
        return text
    return positive_int(text, "a positive integer or 'auto'")


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a parameter (value parsed as JSON, else a string); repeatable")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except WorkflowError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_INVALID
    except RunCancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return EXIT_CANCELLED
    except NodeRunError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exception(e.__cause__ or e)
        else:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    except SamplegraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass  # not a real file (captured in-process): nothing is flushed at exit


def load(args: argparse.Namespace, runtime: Any) -> Workflow:
    wf, _ = runtime.load(args.workflow)
    overrides = overrides_of(args)
    return wf.with_overrides(overrides) if overrides else wf


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The --set overrides as {"node.param": value}."""
    return dict(parse_override(s) for s in args.set)


def cmd_run(args: argparse.Namespace) -> int:
    from .threads import threads_applied

    with threads_applied(args.threads):
        return run_workflow(args)


def run_workflow(args: argparse.Namespace) -> int:
    from .api import CancelToken, Runtime
    from .progress import ProgressPrinter

    out = args.out or Path("out") / args.workflow.stem
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    runtime = Runtime(device=args.device, cache_dir=cache_dir, cache=not args.no_cache, vram_budget=args.vram_budget)
    overrides = overrides_of(args)
    printer = None if args.quiet else ProgressPrinter()
    token = CancelToken()
    try:  # the path, not a loaded Workflow, so that the report names its source
        result = runtime.run(args.workflow, outputs=args.outputs, overrides=overrides, on_event=printer,
                             cancel=token, out_dir=out, seed=args.seed)
    except KeyboardInterrupt:
        token.cancel()
        raise RunCancelled("interrupted") from None
    finally:
        if printer is not None:
            printer.close()
    for name, value in result.outputs.items():
        print(f"{name}: {show_output(save_tensor_output(name, value, out))}")
    if (line := memory_summary(result.report)) is not None:
        print(line)
    print(f"report: {result.report_path}")
    return 0


def memory_summary(report: Any) -> str | None:
    """One line on device memory: the node with the highest CUDA peak, the manager's transfers and budget."""
    from .preflight import fmt_bytes

    parts = []
    peaks = [n for n in report.nodes if n.peak_cuda_bytes is not None]
    if peaks:
        top = max(peaks, key=lambda n: n.peak_cuda_bytes)
        parts.append(f"peak {fmt_bytes(top.peak_cuda_bytes, binary=True)} in node '{top.node}'")
    if report.memory is not None:
        moved = report.memory["transfers"]
        count = moved["in"]["count"] + moved["out"]["count"]
        nbytes = moved["in"]["bytes"] + moved["out"]["bytes"]
        seconds = moved["in"]["seconds"] + moved["out"]["seconds"]
        parts.append(f"{count} transfers ({fmt_bytes(nbytes, binary=True)}, {seconds:.2f} s), "
                     f"{moved['evictions']} offloads")
        if (budget := report.memory["budget_bytes"]) is not None:
            parts.append(f"budget {fmt_bytes(budget, binary=True)}, peak resident "
                         f"{fmt_bytes(report.memory['peak_resident_bytes'], binary=True)}")
    return "memory: " + "; ".join(parts) if parts else None


def save_tensor_output(name: str, value: Any, out: Path) -> Any:
    """A tensor output is saved as <out>/<name>.safetensors (its path is what is shown); others pass through."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    from ..nodes.core.tensorfile import safetensors_bytes
    from ..nodes.io.common import atomic_write

    data = safetensors_bytes({"x": value.detach().cpu().contiguous()}, {"output": name})
    return str(atomic_write(out.resolve() / f"{name}.safetensors", lambda f: f.write(data)))


def show_output(value: Any) -> str:
    from ..nodes.lm.generations import Generations
    from .values import describe

    if isinstance(value, Generations):
        return show_generations(value)
    if isinstance(value, str) and Path(value).exists():
        rel = os.path.relpath(value)
        return value if rel.startswith("..") else rel
    if isinstance(value, float):
        return f"{value:.6g}"
    return describe(value)


SHOWN_ROWS, SHOWN_CHARS = 10, 72


def show_generations(gens: Any) -> str:
    """A count line, then one line per row (the first SHOWN_ROWS): index, group, log-weight, end, text."""
    groups = len(set(gens.group.tolist()))
    head = f"{len(gens)} texts ({groups} prompt{'s' if groups != 1 else ''}, {int(gens.finished.sum())} finished)"
    lines = [head]
    for i, row in enumerate(gens.rows()[:SHOWN_ROWS]):
        text = json.dumps(row["text"], ensure_ascii=False)
        text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 4] + '..."'
        end = "eos" if row["finished"] else "cut"
        lines.append(f"  [{i}] group {row['group']}  log_w {row['log_weight']:.4g}  {end}  {text}")
    if len(gens) > SHOWN_ROWS:
        lines.append(f"  ... {len(gens) - SHOWN_ROWS} more")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .api import Runtime
    from .backends import backend_named
    from .sweep import grid_points, label, parse_grids, run_sweep

    axes = parse_grids(args.grid)  # a bad --grid is reported before anything starts
    if args.backend != "ray" and (args.address is not None or args.parallel > 1):
        raise WorkflowError([Problem("--address and --parallel are for --backend ray (local points run one after "
                                     "the other, so each shared node is computed once)")])
    out = args.out or Path("out") / f"{args.workflow.stem}-sweep"
    backend = backend_named(args.backend, args.address)
    runtime = Runtime(device=args.device, cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
                      backend=backend, vram_budget=args.vram_budget)
    show = None if args.quiet else (lambda i, n, point: print(f"[{i + 1}/{n}] {label(point)}", file=sys.stderr))
    parallel = 1 if args.backend == "local" else (args.parallel or len(grid_points(axes)))
    try:
        result = run_sweep(runtime, args.workflow, axes, out, overrides_of(args), args.outputs, args.seed,
                           parallel=parallel, on_point=show)
    finally:
        backend.close()
    print(f"{len(result.rows)} grid points; {result.computed} nodes computed")
    for path in result.table_paths + ([result.plot_path] if result.plot_path else []):
        print(f"wrote {os.path.relpath(path)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .api import Runtime

    runtime = Runtime(device="cpu", cache=False)
    wf = load(args, runtime)
    runtime.validate(wf, str(args.workflow))
    print(f"ok: {args.workflow} ({len(wf.nodes)} nodes; outputs: {', '.join(wf.outputs)})")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from ..nodes.api import Registry

    specs = Registry.default().specs
    role = {k: v for k, v in specs.items() if args.kind and k.startswith(args.kind.rstrip(".") + ".")}
    if args.kind is None or (args.kind not in specs and role):  # everything, or a role prefix ("sampler")
        shown = specs if args.kind is None else role
        if args.json:
            print(json.dumps({k: describe_spec(shown[k]) for k in sorted(shown)}, indent=2))
        else:
            width = max((len(k) for k in shown), default=10)
            for kind in sorted(shown):
                print(f"{kind:<{width}}  {shown[kind].doc}")
        return 0
    spec = specs.get(args.kind)
    if spec is None:
        hint = suggest(args.kind, specs)
        print(f"unknown node kind '{args.kind}'" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(describe_spec(spec), indent=2) if args.json else render_spec(spec))
    return 0


def describe_spec(spec: Any) -> dict[str, Any]:
    schema = spec.params.model_json_schema()
    return {"kind": spec.kind, "version": spec.version, "doc": spec.doc,
            "inputs": [{"name": p.name, "type": p.type_name, "required": p.required, "many": p.many}
                       for p in spec.inputs],
            "outputs": [{"name": p.name, "type": p.type_name} for p in spec.outputs],
            "params": schema.get("properties", {}), "required_params": schema.get("required", []),
            "cacheable": spec.cacheable, "uses_seed": spec.uses_seed}


def render_spec(spec: Any) -> str:
    d = describe_spec(spec)
    full_doc = (spec.params.__doc__ or spec.doc).strip()
    lines = [f"{spec.kind} (version {spec.version})", "", full_doc, "", "inputs:"]
    for p in d["inputs"]:
        tags = ("" if p["required"] else " optional") + (" list" if p["many"] else "")
        lines.append(f"  {p['name']}: {p['type']}{tags}")
    lines += ["  (none)"] if not d["inputs"] else []
    lines.append("outputs:")
    lines += [f"  {p['name']}: {p['type']}" for p in d["outputs"]]
    lines.append("params:")
    for name, prop in d["params"].items():
        extra = {k: v for k, v in prop.items() if k not in ("title", "description")}
        req = " (required)" if name in d["required_params"] else ""
        desc = f"  {prop['description']}" if prop.get("description") else ""
        lines.append(f"  {name}{req}: {json.dumps(extra)}{desc}")
    lines += ["  (none)"] if not d["params"] else []
    flags = [f for f, on in (("not cached (side effects)", not spec.cacheable), ("uses the seed", spec.uses_seed)) if on]
    if flags:
        lines += ["", "; ".join(flags)]
    return "\n".join(lines)


def cmd_schema(args: argparse.Namespace) -> int:
    from ..nodes.api import Registry

    print(json.dumps(workflow_schema(Registry.default().specs), indent=2))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from .api import Runtime

    runtime = Runtime(device="cpu", cache=False)
    wf = load(args, runtime)
    runtime.validate(wf, str(args.workflow))  # a broken workflow is reported, not drawn
    print(to_mermaid(wf) if args.format == "mermaid" else to_dot(wf), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401  # the optional extra
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(f"error: samplegraph serve needs the 'serve' extra ({e.name} is missing): "
              f"pip install 'samplegraph[serve]'", file=sys.stderr)
        return EXIT_FAILED
    from .serve.server import ServeOptions, serve

    return serve(ServeOptions(host=args.host, port=args.port, state_dir=args.state_dir, workers=args.workers,
                              model_roots=args.model_roots, cache_dir=args.cache_dir, device=args.device,
                              max_body=args.max_body, threads=args.threads, vram_budget=args.vram_budget))


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "validate": cmd_validate, "nodes": cmd_nodes, "schema": cmd_schema,
            "graph": cmd_graph, "serve": cmd_serve}


if __name__ == "__main__":
    sys.exit(main())
