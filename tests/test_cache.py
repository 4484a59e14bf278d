"""Caching: Merkle keys (kind, version, params, input keys, seed only where used; never tensor
bytes), memory hits in a process, disk hits across processes, exact invalidation of
descendants, corrupt entries detected and recomputed, LRU byte bounds, uncacheable nodes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers_nodes as H
from samplegraph import Node, Registry, Runtime, Workflow, node
from samplegraph.graph.hashing import node_key
from samplegraph.graph.validate import execution_order
from samplegraph.runtime.cache import DiskCache, MemoryCache
from samplegraph.runtime.events import CacheDiscarded, NodeStarted
from samplegraph.runtime.executor import compute_keys

TESTS = Path(__file__).parent


def chain() -> dict:
    """a -> sa -> d <- sc <- c, plus t -> s (tensor). Outputs d and s."""
    return {"nodes": {
        "a": {"kind": "test.const", "params": {"value": 1.0, "tag": "a"}},
        "sa": {"kind": "test.scale", "inputs": {"x": "a"}, "params": {"tag": "sa"}},
        "c": {"kind": "test.const", "params": {"value": 3.0, "tag": "c"}},
        "sc": {"kind": "test.scale", "inputs": {"x": "c"}, "params": {"tag": "sc"}},
        "d": {"kind": "test.add", "inputs": {"xs": ["sa", "sc"]}, "params": {"tag": "d"}},
        "t": {"kind": "test.tensor", "params": {"n": 5, "value": 0.5, "tag": "t"}},
        "s": {"kind": "test.tensor_sum", "inputs": {"x": "t"}, "params": {"tag": "s"}},
    }, "outputs": ["d", "s"]}


def runtime(cache_dir: Path | None = None, **kw) -> Runtime:
    return Runtime(device="cpu", registry=kw.pop("registry", H.REGISTRY), cache_dir=cache_dir, **kw)


def statuses(result) -> dict[str, str]:
    return {n.node: n.cache for n in result.report.nodes}


def keys_of(doc: dict, registry: Registry = H.REGISTRY, seed: int | None = None) -> dict[str, str]:
    wf = Workflow.from_dict(doc)
    graph = Runtime(device="cpu", registry=registry, cache=False).validate(wf)
    return compute_keys(graph, execution_order(graph), wf.seed if seed is None else seed)


@pytest.fixture(autouse=True)
def _reset():
    H.reset()


# ---------------------------------------------------------------- memory and disk hits


def test_rerun_in_same_process_hits_memory_and_runs_nothing():
    rt = runtime()
    first = rt.run(chain())
    H.reset()
    second = rt.run(chain())
    assert set(statuses(first).values()) == {"miss"}
    assert set(statuses(second).values()) == {"memory"}
    assert H.RUNS == {}
    assert (second["d"], second["s"]) == (first["d"], first["s"]) == (8.0, 25.0)


def test_new_process_hits_disk_cache(tmp_path):
    first = runtime(tmp_path).run(chain())
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import helpers_nodes as H; "
              "from samplegraph import Runtime; "
              "r = Runtime(device='cpu', registry=H.REGISTRY, cache_dir=sys.argv[2]).run(json.loads(sys.argv[3])); "
              "print(json.dumps({'cache': {n.node: n.cache for n in r.report.nodes}, 'd': r['d'], 's': r['s'], "
              "'runs': H.RUNS}))")
    out = subprocess.run([sys.executable, "-c", script, str(TESTS), str(tmp_path), json.dumps(chain())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(got["cache"].values()) == {"disk"} and len(got["cache"]) == 7
    assert got["runs"] == {}
    assert (got["d"], got["s"]) == (first["d"], first["s"])


def test_disk_hit_restores_tensor_exactly_and_fills_memory(tmp_path):
    doc = {"nodes": {"t": {"kind": "test.tensor", "params": {"n": 6, "width": 3, "value": -2.25}}}, "outputs": ["t"]}
    first = runtime(tmp_path).run(doc)["t"]
    rt = runtime(tmp_path)
    second = rt.run(doc)
    third = rt.run(doc)
    assert statuses(second) == {"t": "disk"} and statuses(third) == {"t": "memory"}
    assert second["t"].dtype == first.dtype and torch.equal(second["t"], first)


def test_live_objects_are_cached_in_memory_only(tmp_path):
    doc = {"nodes": {"o": {"kind": "test.live", "params": {"value": 4.0}},
                     "v": {"kind": "test.unlive", "inputs": {"obj": "o"}}}, "outputs": ["v"]}
    rt = runtime(tmp_path)
    rt.run(doc)
    assert statuses(rt.run(doc)) == {"o": "memory", "v": "memory"}
    again = runtime(tmp_path).run(doc)
    assert statuses(again) == {"o": "miss", "v": "disk"} and again["v"] == 4.0


# ---------------------------------------------------------------- invalidation


def test_changing_upstream_param_invalidates_exactly_its_descendants():
    rt = runtime()
    rt.run(chain())
    doc = chain()
    doc["nodes"]["a"]["params"]["value"] = 2.0
    H.reset()
    result = rt.run(doc)
    assert statuses(result) == {"a": "miss", "sa": "miss", "d": "miss",
                                "c": "memory", "sc": "memory", "t": "memory", "s": "memory"}
    assert result["d"] == 2.0 * 2 + 3.0 * 2
    assert set(H.RUNS) == {"a", "sa", "d"}


def test_override_invalidates_exactly_its_descendants():
    rt = runtime()
    rt.run(chain())
    result = rt.run(chain(), overrides={"sc.factor": 10.0})
    assert {n for n, s in statuses(result).items() if s == "miss"} == {"sc", "d"}
    assert result["d"] == 2.0 + 30.0


def test_seed_enters_keys_of_seeded_nodes_and_their_descendants_only():
    doc = {"nodes": {"n": {"kind": "test.seeded", "params": {"n": 3}},
                     "s": {"kind": "test.tensor_sum", "inputs": {"x": "n"}},
                     "c": {"kind": "test.const"}, "sc": {"kind": "test.scale", "inputs": {"x": "c"}}},
           "outputs": ["s", "sc"]}
    k0, k1 = keys_of(doc, seed=0), keys_of(doc, seed=1)
    assert k0["n"] != k1["n"] and k0["s"] != k1["s"]
    assert (k0["c"], k0["sc"]) == (k1["c"], k1["sc"])
    rt = runtime()
    r0 = rt.run(doc, seed=0)
    r1 = rt.run(doc, seed=1)
    assert statuses(r1) == {"n": "miss", "s": "miss", "c": "memory", "sc": "memory"}
    assert r0["s"] != r1["s"]
    assert statuses(rt.run(doc, seed=0)) == dict.fromkeys("n s c sc".split(), "memory")
    assert rt.run(doc, seed=0)["s"] == r0["s"]


# ---------------------------------------------------------------- what keys depend on


@node("test.versioned", version=1)
class VersionedV1(Node):
    """Version 1 of a node kind."""

    def run(self) -> float:
        return 1.0


@node("test.versioned", version=2)
class VersionedV2(Node):
    """Version 2 of the same kind (a changed algorithm)."""

    def run(self) -> float:
        return 2.0


def test_key_ignores_node_ids_and_equivalent_param_spellings():
    k1 = keys_of({"nodes": {"a": {"kind": "test.const"}, "b": {"kind": "test.scale", "inputs": {"x": "a"}}},
                  "outputs": ["b"]})
    k2 = keys_of({"nodes": {"p": {"kind": "test.const", "params": {"value": 1}},
                            "q": {"kind": "test.scale", "inputs": {"x": "p.out"}, "params": {"factor": 2.0}}},
                  "outputs": ["q"]})
    assert (k1["a"], k1["b"]) == (k2["p"], k2["q"])


def test_key_depends_on_kind_version_params_and_input_links():
    doc = {"nodes": {"a": {"kind": "test.const", "params": {"value": 1.0}},
                     "b": {"kind": "test.const", "params": {"value": 2.0}},
                     "t": {"kind": "test.tensor"}, "mm": {"kind": "test.minmax", "inputs": {"x": "t"}},
                     "from_a": {"kind": "test.scale", "inputs": {"x": "a"}},
                     "from_b": {"kind": "test.scale", "inputs": {"x": "b"}},
                     "from_lo": {"kind": "test.scale", "inputs": {"x": "mm.lo"}},
                     "from_hi": {"kind": "test.scale", "inputs": {"x": "mm.hi"}},
                     "sink_a": {"kind": "test.sink", "inputs": {"x": "a"}, "params": {"tag": "scale"}},
                     "ab": {"kind": "test.add", "inputs": {"xs": ["a", "b"]}},
                     "ba": {"kind": "test.add", "inputs": {"xs": ["b", "a"]}}},
           "outputs": ["from_a", "from_b", "from_lo", "from_hi", "sink_a", "ab", "ba"]}
    k = keys_of(doc)
    assert k["a"] != k["b"]  # params
    assert k["from_a"] != k["from_b"]  # upstream key
    assert k["from_lo"] != k["from_hi"]  # upstream port
    assert k["ab"] != k["ba"]  # order of a fan-in
    assert k["from_a"] != k["sink_a"]  # kind (scale/sink: same input, different params too)
    assert node_key("test.scale", 1, {}, {"x": "k:out"}, None) != node_key("test.sink", 1, {}, {"x": "k:out"}, None)
    one = {"nodes": {"v": {"kind": "test.versioned"}}, "outputs": ["v"]}
    assert keys_of(one, Registry([VersionedV1]))["v"] != keys_of(one, Registry([VersionedV2]))["v"]


def test_key_is_defined_for_every_json_string_param():
    """Keys hash the parameters as JSON; any string JSON can carry (a lone surrogate escape too)
    must give a key, not a UnicodeEncodeError."""
    doc = json.loads('{"nodes": {"a": {"kind": "test.const", "params": {"tag": "\\ud800"}}}, "outputs": ["a"]}')
    assert runtime().run(doc)["a"] == 1.0


def test_descendants_of_an_uncacheable_node_are_never_cached():
    """`fresh` is uncacheable and returns different bytes each run; since keys never hash
    tensors, a consumer's key cannot see that, so the consumer must not be cached either."""
    doc = {"nodes": {"f": {"kind": "test.fresh_tensor"}, "s": {"kind": "test.tensor_sum", "inputs": {"x": "f"}}},
           "outputs": ["s"]}
    rt = runtime()
    first = rt.run(doc)
    second = rt.run(doc)
    assert H.ran("fresh") == 2 and H.ran("tensor_sum") == 2
    assert statuses(second) == {"f": "uncached", "s": "uncached"}
    assert (first["s"], second["s"]) == (3.0, 6.0)  # the consumer saw the second run's fresh bytes


def test_keys_are_known_before_anything_runs_and_never_read_tensor_bytes():
    """compute_keys needs only the validated graph: no node has run and no tensor exists yet."""
    from samplegraph.graph.validate import execution_order
    from samplegraph.runtime.executor import compute_keys

    rt = runtime()
    graph = rt.validate(Workflow.from_dict(TENSOR_DOC))
    order = execution_order(graph)
    keys = compute_keys(graph, order, seed=0)
    assert H.ran("tensor") == 0 and all(keys[n] for n in order)
    assert keys == compute_keys(graph, order, seed=1)  # no node here uses the seed
    rt.run(TENSOR_DOC)
    assert compute_keys(graph, order, seed=0) == keys


def test_uncacheable_node_always_runs_and_is_never_stored(tmp_path):
    doc = {"nodes": {"c": {"kind": "test.const"}, "k": {"kind": "test.sink", "inputs": {"x": "c"}}},
           "outputs": ["k"]}
    rt = runtime(tmp_path)
    for i in range(3):
        assert statuses(rt.run(doc))["k"] == "uncached"
        assert H.ran("sink") == i + 1
    assert statuses(runtime(tmp_path).run(doc)) == {"c": "disk", "k": "uncached"}
    assert len(DiskCache(tmp_path).entries()) == 1


# ---------------------------------------------------------------- corrupt disk entries


TENSOR_DOC = {"nodes": {"t": {"kind": "test.tensor", "params": {"n": 3, "value": 1.0}},
                        "s": {"kind": "test.tensor_sum", "inputs": {"x": "t"}}}, "outputs": ["s", "t"]}


def flip_last(b: bytes) -> bytes:
    return b[:-1] + bytes([b[-1] ^ 0x40])


CORRUPTIONS = {
    "flip_data_byte": flip_last,
    "truncate": lambda b: b[: len(b) // 2],
    "garbage_header_length": lambda b: b"\xff" * 8 + b[8:],
    "garbage_header_json": lambda b: b[:8] + bytes((x * 7 + 13) % 256 for x in b[8:100]) + b[100:],
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_disk_entry_is_discarded_recomputed_and_rewritten(tmp_path, how):
    good = runtime(tmp_path).run(TENSOR_DOC)
    key = keys_of(TENSOR_DOC)["t"]
    path = DiskCache(tmp_path).path(key)
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))
    events = []
    H.reset()
    again = runtime(tmp_path).run(TENSOR_DOC, on_event=events.append)
    discarded = [e for e in events if isinstance(e, CacheDiscarded)]
    assert [e.key for e in discarded] == [key] and discarded[0].reason
    i = events.index(discarded[0])  # reported while node t runs
    assert (events[i - 1], events[i + 1].node, events[i + 1].cache) == (NodeStarted("t", "test.tensor", 0, 2), "t", "miss")
    assert statuses(again) == {"t": "miss", "s": "disk"} and H.ran("tensor") == 1
    assert torch.equal(again["t"], good["t"]) and again["s"] == good["s"]
    third = runtime(tmp_path).run(TENSOR_DOC, on_event=events.append)
    assert statuses(third) == {"t": "disk", "s": "disk"}
    assert len([e for e in events if isinstance(e, CacheDiscarded)]) == 1


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("node_id", ["t", "s"])
def test_no_single_bit_flip_of_a_disk_entry_returns_a_wrong_value(tmp_path, node_id):
    """Every bit flip anywhere in the file (header, metadata, tensor data) is either detected
    (entry deleted, on_corrupt told) or harmless (the exact original outputs and metrics come back)."""
    runtime(tmp_path).run(TENSOR_DOC)
    key = keys_of(TENSOR_DOC)[node_id]
    disk = DiskCache(tmp_path)
    port_types = {"out": torch.Tensor if node_id == "t" else float}
    path = disk.path(key)
    original = path.read_bytes()
    want = disk.get(key, port_types, torch.device("cpu"))
    wrong = []
    for pos in range(len(original)):
        for mask in (0x01, 0x04, 0x20):
            data = bytearray(original)
            data[pos] ^= mask
            path.write_bytes(bytes(data))
            told = []
            got = disk.get(key, port_types, torch.device("cpu"), on_corrupt=lambda k, why: told.append(k))
            if got is None:
                assert told == [key] and not path.exists()
            elif not (same(got.outputs["out"], want.outputs["out"]) and got.metrics == want.metrics):
                wrong.append((pos, mask, got.outputs["out"], got.metrics))
    path.write_bytes(original)
    assert not wrong, f"{len(wrong)} corrupted entries were returned as valid, e.g. {wrong[:3]}"


# ---------------------------------------------------------------- size bounds


def test_memory_cache_is_an_lru_bounded_in_bytes():
    mem = MemoryCache(max_bytes=1000)
    mem.put("a", {"out": torch.zeros(100)})  # 400 bytes
    mem.put("b", {"out": torch.zeros(100)})
    assert mem.get("a") is not None  # a is now more recent than b
    mem.put("c", {"out": torch.zeros(100)})  # 1200 > 1000: evict the least recently used (b)
    assert (mem.get("a") is not None, mem.get("b"), mem.get("c") is not None) == (True, None, True)
    assert mem.nbytes == 800 and len(mem) == 2
    mem.put("huge", {"out": torch.zeros(1000)})  # larger than the bound: not stored, evicts nothing
    assert mem.get("huge") is None and len(mem) == 2
    mem.put("a", {"out": torch.zeros(50)})  # replacing an entry re-accounts its size
    assert mem.nbytes == 600


def test_runtime_memory_cache_stays_within_its_byte_bound():
    rt = runtime(memory_cache_bytes=6000)
    doc = {"nodes": {"t1": {"kind": "test.tensor", "params": {"n": 100, "width": 10, "value": 1}},  # 4000 B
                     "t2": {"kind": "test.tensor", "params": {"n": 100, "width": 10, "value": 2}}},
           "outputs": ["t1", "t2"]}
    rt.run(doc)
    assert rt.memory.nbytes == 4000 and len(rt.memory) == 1
    assert statuses(rt.run(doc, outputs=["t2"])) == {"t2": "memory"}
    assert statuses(rt.run(doc, outputs=["t1"])) == {"t1": "miss"}


TENSOR_PORT = {"out": torch.Tensor}


def entry(value: float) -> dict:
    return {"out": torch.full((64,), float(value))}  # 256 bytes of float32


def test_disk_cache_evicts_least_recently_used_entries_beyond_its_bound(tmp_path):
    probe = DiskCache(tmp_path / "probe")
    probe.put("k" * 64, entry(0.0), TENSOR_PORT)
    size = probe.total_bytes()
    disk = DiskCache(tmp_path / "store", max_bytes=int(3.5 * size))
    keys = {name: name * 64 for name in "abcd"}
    for i, name in enumerate("abc"):
        disk.put(keys[name], entry(i), TENSOR_PORT)
        os.utime(disk.path(keys[name]), (1000 + i, 1000 + i))  # a oldest ... c newest
    assert disk.get(keys["a"], {"out": torch.Tensor}, torch.device("cpu")) is not None  # a becomes newest
    disk.put(keys["d"], entry(3.0), TENSOR_PORT)  # 4 entries > 3.5: evict down to 80% of the bound, oldest first
    present = {name for name, k in keys.items() if disk.path(k).exists()}
    assert present == {"a", "d"}
    assert disk.total_bytes() <= disk.max_bytes


def test_runtime_disk_cache_stays_within_its_byte_bound(tmp_path):
    rt = runtime(tmp_path, disk_cache_bytes=4000)
    for v in range(12):
        rt.run({"nodes": {"t": {"kind": "test.tensor", "params": {"n": 50, "width": 4, "value": v}}},
                "outputs": ["t"]})  # 800 B of data per entry
        assert rt.disk.total_bytes() <= 4000
    assert 0 < len(rt.disk.entries()) < 12


def test_disk_cache_root_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert DiskCache("~/.cache/samplegraph").root == tmp_path / ".cache" / "samplegraph"


def test_nan_and_infinite_floats_go_to_disk_and_come_back(tmp_path):
    """A metric of NaN (e.g. 'no valid sample') is plain data: stored and read back, not memory-only."""
    import math
    disk = DiskCache(tmp_path)
    outputs = {"a": math.nan, "b": -math.inf, "c": [1.0, math.nan]}
    assert disk.put("n" * 64, outputs, {"a": float, "b": float, "c": list}, {"m": math.nan})
    got = disk.get("n" * 64, {"a": float, "b": float, "c": list}, torch.device("cpu"))
    assert math.isnan(got.outputs["a"]) and got.outputs["b"] == -math.inf and math.isnan(got.outputs["c"][1])
    assert math.isnan(got.metrics["m"])
