"""Runs workflow files in this process, each on a fresh Runtime over one shared disk cache, and
prints (as JSON) what the cache did for every node: the subprocess half of the warm re-run test.

Usage: python helpers_cache_runs.py CACHE_DIR OUT_DIR WORKFLOW.json ..."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from samplegraph import Runtime
from samplegraph.runtime import values
from samplegraph.runtime.events import CacheDiscarded, CacheUndecodable, CacheWriteFailed

CACHE_EVENTS = (CacheDiscarded, CacheUndecodable, CacheWriteFailed)


def disk_decodable(port_type: type) -> bool:
    """Whether values of this declared port type can come back from the disk cache."""
    return port_type is torch.Tensor or issubclass(port_type, values.PLAIN) or hasattr(port_type, "cache_decode")


def run_one(path: Path, cache_dir: Path, out_dir: Path) -> dict:
    events: list = []
    runtime = Runtime(device="cpu", cache_dir=cache_dir)
    result = runtime.run(path, on_event=events.append, out_dir=out_dir / path.stem)
    specs = runtime.registry.specs
    nodes = {n.node: {"kind": n.kind, "cache": n.cache,
                      "decodable": [p.type_name for p in specs[n.kind].outputs if disk_decodable(p.type)]}
             for n in result.report.nodes}
    return {"nodes": nodes, "events": [repr(e) for e in events if isinstance(e, CACHE_EVENTS)]}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    cache_dir, out_dir = Path(argv[0]), Path(argv[1])
    print(json.dumps({Path(p).stem: run_one(Path(p), cache_dir, out_dir) for p in argv[2:]}))


if __name__ == "__main__":
    main(sys.argv[1:])
