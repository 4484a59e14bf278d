"""ComfyUI's execution engine driven headless on trivial nodes of our own (benchmarks/executor_overhead.py's
ComfyUI columns). Standalone: it runs in ComfyUI's interpreter (COMFYUI_PYTHON, with COMFYUI_PYTHONPATH), imports
nothing of samplegraph, and is driven by benchmarks/comfyui_engine.py over stdin and stdout.

    PYTHONPATH=$COMFYUI_PYTHONPATH $COMFYUI_PYTHON benchmarks/comfyui_executor_driver.py $COMFYUI_DIR

Each stdin line is a JSON request {"shape": "chain" | "fan-in", "size": nodes, "rounds": R}; each answer is one
JSON line on stdout, {mode: [seconds per round, ...]} for the modes below, or {"error": "..."}. A new case is
built and warmed up once (one round) before its first rounds; rounds=0 only does that.

The nodes are written in ComfyUI's documented (V1) custom-node format (INPUT_TYPES, RETURN_TYPES, FUNCTION,
OUTPUT_NODE) and registered into nodes.NODE_CLASS_MAPPINGS. One call times what a POST /prompt and its queue
worker run (server.py's post_prompt, main.py's prompt_worker): `execution.validate_prompt` and then
`PromptExecutor.execute` with the outputs it returned and a client id, on a stub of the PromptServer whose
messages go nowhere. Modes: "none", a new executor with CacheType.NONE (main.py --cache-none), and
"validate", that call's validation part; "run", a new executor with ComfyUI's default cache (CacheType.CLASSIC,
as main.py makes it without cache flags), so every node runs and is keyed; "hits", one CLASSIC executor
re-executing the identical prompt, so its cache serves every node."""
from __future__ import annotations

import asyncio
import gc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types
import uuid
from typing import Any

CLIENT_ID = "samplegraph-bench"  # as the UI sends: cached nodes' UI results then reach the history too


class FloatNode:
    """What our nodes share: one FLOAT output, computed by `run`."""

    CATEGORY = "samplegraph_bench"
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"


class BenchConst(FloatNode):
    """A constant float (widget input `value`)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 0.0, "min": -1e12, "max": 1e12})}}

    def run(self, value: float) -> tuple[float]:
        return (value,)


class BenchInc(FloatNode):
    """x + 1 (a linked input)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"x": ("FLOAT", {"forceInput": True})}}

    def run(self, x: float) -> tuple[float]:
        return (x + 1.0,)


class BenchIncOut(BenchInc):
    """x + 1 as the chain's output node: the value also goes to the UI result (history "outputs")."""

    OUTPUT_NODE = True

    def run(self, x: float) -> dict[str, Any]:
        return {"ui": {"value": [x + 1.0]}, "result": (x + 1.0,)}


def sum_class(width: int) -> type:
    """An output node summing `width` linked float inputs x0..x{width-1} (V1 nodes have a fixed input list)."""
    inputs = {"required": {f"x{i}": ("FLOAT", {"forceInput": True}) for i in range(width)}}

    def input_types(cls) -> dict[str, Any]:  # built once: ComfyUI calls INPUT_TYPES for every link it follows
        return inputs

    def run(self, **xs: float) -> dict[str, Any]:
        total = sum(xs.values())
        return {"ui": {"value": [total]}, "result": (total,)}

    return type(f"BenchSum{width}", (FloatNode,), {"OUTPUT_NODE": True, "INPUT_TYPES": classmethod(input_types),
                                                    "run": run})


def chain_prompt(n: int) -> tuple[dict[str, Any], dict[str, type], float]:
    """API-format prompt of a chain of n nodes (a constant, n-2 increments, an increment as output node), its
    node classes and the output's value."""
    if n < 2:
        raise ValueError(f"a ComfyUI chain needs n >= 2 (a constant and an output node), got {n}")
    prompt = {"0": {"class_type": "BenchConst", "inputs": {"value": 0.0}}}
    prompt.update({str(i): {"class_type": "BenchIncOut" if i == n - 1 else "BenchInc",
                            "inputs": {"x": [str(i - 1), 0]}} for i in range(1, n)})
    classes = {"BenchConst": BenchConst, "BenchInc": BenchInc, "BenchIncOut": BenchIncOut}
    return prompt, classes, float(n - 1)


def fan_in_prompt(width: int) -> tuple[dict[str, Any], dict[str, type], float]:
    """API-format prompt of `width` constants 0..width-1 summed by one output node (width + 1 nodes)."""
    if width < 1:
        raise ValueError(f"a fan-in needs width >= 1, got {width}")
    prompt = {str(i): {"class_type": "BenchConst", "inputs": {"value": float(i)}} for i in range(width)}
    summed = sum_class(width)
    prompt[str(width)] = {"class_type": summed.__name__,
                          "inputs": {f"x{i}": [str(i), 0] for i in range(width)}}
    return prompt, {"BenchConst": BenchConst, summed.__name__: summed}, float(sum(range(width)))


def build(shape: str, size: int) -> tuple[dict[str, Any], dict[str, type], float]:
    """The prompt, classes and expected output of a case: "chain" of `size` nodes, "fan-in" of `size` nodes."""
    if shape == "chain":
        return chain_prompt(size)
    if shape == "fan-in":
        return fan_in_prompt(size - 1)
    raise ValueError(f"unknown shape {shape!r}: use 'chain' or 'fan-in'")


class StubServer:
    """What PromptExecutor and its progress handler touch of ComfyUI's PromptServer; messages go nowhere."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict[str, Any] = {}

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Messages go nowhere (the real server queues them for its WebSocket loop)."""

    def queue_updated(self) -> None:
        """No queue here."""


def placeholder_torchvision() -> bool:
    """ComfyUI imports torchvision at module level only for models that are never built here (comfy.sd ->
    ldm/cascade); where the interpreter has none (e.g. a CPU torch without its matching torchvision), a
    placeholder module that fails on first use stands in. True when the placeholder was installed."""
    if importlib.util.find_spec("torchvision") is not None:
        return False

    def missing(name: str) -> Any:
        raise AttributeError(f"torchvision is not installed (placeholder for ComfyUI's imports): {name}")

    for name in ("torchvision", "torchvision.transforms"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        module.__getattr__ = missing
        sys.modules[name] = module
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    return True


MODES = ("none", "validate", "run", "hits")
RECURSION_LIMIT = 200_000  # validate_inputs recurses once per link: Python's default 1000 refuses a 1000-chain


class Engine:
    """ComfyUI's modules, imported once on CPU, and the case being timed."""

    def __init__(self, root: str) -> None:
        os.chdir(root)
        sys.path.insert(0, root)
        sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
        self.torchvision_placeholder = placeholder_torchvision()
        from comfy.cli_args import args
        args.cpu = True  # as main.py --cpu, set before comfy.model_management is imported
        import execution
        import nodes
        self.execution, self.nodes = execution, nodes
        self.loop = asyncio.new_event_loop()  # the server's validation runs on its already-running loop
        self.case: tuple[str, int] | None = None

    def executor(self, cache: str = "CLASSIC") -> Any:
        """A PromptExecutor as main.py's prompt_worker makes it: CLASSIC without cache flags, NONE with
        --cache-none."""
        return self.execution.PromptExecutor(StubServer(), cache_type=self.execution.CacheType[cache],
                                             cache_args={"lru": 0, "ram": 0})

    def prepare(self, shape: str, size: int) -> None:
        """Build the case, register its classes and warm up (one round, which also fills the hits cache)."""
        self.prompt, classes, self.expected = build(shape, size)
        self.nodes.NODE_CLASS_MAPPINGS.update(classes)
        self.cached = self.executor()
        self.case = (shape, size)
        self.round(warm_up=True)

    def once(self, executor: Any, cached: int) -> tuple[float, float]:
        """Seconds of validate_prompt + execute, and of the validation alone; checks that `cached` nodes were
        cache hits and that the output node's UI value is the expected one."""
        prompt_id = uuid.uuid4().hex
        gc.collect()
        start = time.perf_counter()
        valid = self.loop.run_until_complete(self.execution.validate_prompt(prompt_id, self.prompt, None))
        validated = time.perf_counter()
        if not valid[0]:
            raise RuntimeError(f"ComfyUI refused the prompt: {valid[1]} {valid[3]}")
        executor.execute(self.prompt, prompt_id, {"client_id": CLIENT_ID}, valid[2])
        end = time.perf_counter()
        self.check(executor, cached)
        return end - start, validated - start

    def check(self, executor: Any, cached: int) -> None:
        if not executor.success:
            raise RuntimeError(f"ComfyUI's execution failed: {executor.status_messages[-1:]}")
        hits = [len(d["nodes"]) for e, d in executor.status_messages if e == "execution_cached"]
        if hits != [cached]:
            raise RuntimeError(f"expected {cached} cached nodes, ComfyUI reported {hits}")
        values = [o["value"] for o in executor.history_result["outputs"].values()]
        if values != [[self.expected]]:
            raise RuntimeError(f"expected the output {self.expected}, ComfyUI's outputs are {values}")

    def round(self, warm_up: bool = False) -> dict[str, float]:
        """One call of each mode: "none" (--cache-none) with its "validate" part, "run" (a new executor with
        the default cache: no node cached yet) and "hits" (the same executor each round: every node cached)."""
        none, validate = self.once(self.executor("NONE"), 0)
        run, _ = self.once(self.executor(), 0)
        hits, _ = self.once(self.cached, 0 if warm_up else len(self.prompt))
        return {"none": none, "validate": validate, "run": run, "hits": hits}

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """`rounds` rounds of the case (0: only build and warm it up)."""
        case = (request["shape"], int(request["size"]))
        if case != self.case:
            self.case = None
            self.prepare(*case)
        rounds = [self.round() for _ in range(int(request.get("rounds", 1)))]
        return {k: [r[k] for r in rounds] for k in MODES}


def serve(root: str) -> None:
    """Answer requests line by line; ComfyUI's own prints go to stderr so that stdout carries only answers."""
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        engine = Engine(root)
        ready = {"ready": True, "torchvision_placeholder": engine.torchvision_placeholder}
    except Exception as e:  # noqa: BLE001 - reported to the client, which shows it in the row
        ready = {"error": f"ComfyUI did not import: {e!r}"}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    if "error" in ready:
        return
    for line in sys.stdin:
        try:
            reply = engine.answer(json.loads(line))
        except Exception as e:  # noqa: BLE001 - one case failing is reported, the next may still run
            reply = {"error": repr(e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # benchmarks/ holds modules whose names ComfyUI's imports must not find
    if len(sys.argv) != 2:
        sys.exit("usage: comfyui_executor_driver.py COMFYUI_DIR  (JSON requests on stdin)")
    serve(sys.argv[1])
