"""Whole-workflow validation: every problem at once, each located (node, port/param).

Checks, in order of the document: outputs name nodes; node ids are valid; kinds exist;
parameters validate against the node's pydantic model; every input port exists, every
required input is linked, every link names an existing node and output port, and the
produced type is the expected class or a subclass; the graph has no cycle."""
from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import networkx as nx
from pydantic import BaseModel, ValidationError

from .errors import Problem, WorkflowError
from .spec import NodeSpec, PortSpec, compatible
from .workflow import NODE_ID, NodeDecl, Workflow, parse_link, suggest


class Link(NamedTuple):
    """A resolved edge end: the producing node and its output port. A tuple, so it is itself the
    (node, port) key under which the executor holds that output."""

    node: str
    port: str


@dataclass(frozen=True, slots=True)
class ResolvedNode:
    """A node after validation: its spec, validated parameter model and resolved inputs."""

    id: str
    spec: NodeSpec
    params: BaseModel
    inputs: dict[str, Link | list[Link]]

    def links(self) -> Iterator[Link]:
        """Every input link, once per link (a value linked twice comes twice)."""
        for link in self.inputs.values():
            if type(link) is list:
                yield from link
            else:
                yield link


@dataclass(frozen=True)
class ValidGraph:
    """A validated workflow: resolved nodes, requested outputs, and every node in one deterministic
    topological order (smallest id first among ready nodes), computed once by validation."""

    workflow: Workflow
    nodes: dict[str, ResolvedNode]
    outputs: list[Link]
    order: tuple[str, ...]

    @cached_property
    def dag(self) -> nx.DiGraph:
        """The dependency DAG as a networkx graph (built on first use; running never needs it)."""
        return build_dag(self.workflow)


def validate(wf: Workflow, specs: Mapping[str, NodeSpec], source: str | None = None,
             broken: frozenset[str] = frozenset()) -> ValidGraph:
    """Validate `wf` against the registered `specs`; raise WorkflowError with all problems.

    `broken`: ids of nodes whose declarations did not parse (already reported): links and
    outputs naming them are not reported again."""
    problems: list[Problem] = []
    nodes: dict[str, ResolvedNode] = {}
    for node_id, decl in wf.nodes.items():
        resolved = check_node(node_id, decl, wf, specs, problems, broken)
        if resolved is not None:
            nodes[node_id] = resolved
    outputs = check_outputs(wf, specs, problems, broken)
    order = topological_order(nodes) if not problems else []
    if problems or len(order) < len(nodes):  # a cycle, or links that did not resolve: networkx locates cycles
        problems.extend(cycle_problems(build_dag(wf)))
        raise WorkflowError(problems, source)
    return ValidGraph(wf, nodes, outputs, tuple(order))


def validate_document(error: WorkflowError, specs: Mapping[str, NodeSpec]) -> WorkflowError:
    """A structural WorkflowError extended with the problems of the parts that still parsed."""
    if error.partial is None:
        return error
    try:
        validate(error.partial.workflow, specs, error.source, error.partial.broken)
    except WorkflowError as more:
        return WorkflowError(error.problems + more.problems, error.source)
    return error


def check_outputs(wf: Workflow, specs: Mapping[str, NodeSpec], problems: list[Problem],
                  broken: frozenset[str]) -> list[Link]:
    if not wf.outputs:
        problems.append(Problem("'outputs' is empty: name the node(s) whose results you want"))
    links = []
    for name in wf.outputs:
        node_id, port = parse_link(name)
        if node_id in broken:
            continue
        if node_id not in wf.nodes:
            problems.append(Problem(f"output '{name}' names no node", where="outputs",
                                    hint=suggest(node_id, wf.nodes)))
            continue
        spec = specs.get(wf.nodes[node_id].kind)
        if spec is None:
            continue
        resolved = resolve_port(spec, node_id, port, f"output '{name}'", problems, node=None)
        if resolved:
            links.append(Link(node_id, resolved.name))
    return links


def check_node(node_id: str, decl: NodeDecl, wf: Workflow, specs: Mapping[str, NodeSpec],
               problems: list[Problem], broken: frozenset[str] = frozenset()) -> ResolvedNode | None:
    if not NODE_ID.match(node_id):
        problems.append(Problem("invalid node id: use letters, digits, '_' or '-', starting with a letter "
                                "or '_' (no dots: 'node.port' names an output)", node_id))
    spec = specs.get(decl.kind)
    if spec is None:
        hint = suggest(decl.kind, specs) or "run `samplegraph nodes` to list kinds"
        problems.append(Problem(f"unknown node kind '{decl.kind}'", node_id, "kind", hint))
        return None
    params = check_params(node_id, decl.params, spec, problems)
    inputs = check_inputs(node_id, decl, spec, wf, specs, problems, broken)
    if params is None or inputs is None:
        return None
    return ResolvedNode(node_id, spec, params, inputs)


def check_params(node_id: str, params: dict[str, Any], spec: NodeSpec,
                 problems: list[Problem]) -> BaseModel | None:
    try:  # the model's validator itself: model_validate only forwards to it (and costs as much again)
        return spec.params.__pydantic_validator__.validate_python(params)
    except ValidationError as e:
        for err in e.errors():
            problems.append(param_problem(node_id, err, spec))
        return None


def param_problem(node_id: str, err: dict, spec: NodeSpec) -> Problem:
    name = str(err["loc"][0]) if err["loc"] else "?"
    sub = "".join(f"[{p}]" for p in err["loc"][1:])
    fields = spec.params.model_fields
    if err["type"] == "extra_forbidden":
        hint = suggest(name, fields) or (f"parameters: {', '.join(fields)}" if fields else "this node has no parameters")
        return Problem(f"unknown parameter '{name}'", node_id, f"param '{name}'", hint)
    if err["type"] == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        if not err["loc"]:
            return Problem(msg, node_id, "params")
        return Problem(f"{msg}; got {err['input']!r}", node_id, f"param '{name}{sub}'")
    if err["type"] == "missing":
        return Problem("missing required parameter", node_id, f"param '{name}'", describe_field(spec, name))
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    expected = msg[0].lower() + msg[1:]
    return Problem(f"{expected}; got {err['input']!r}", node_id, f"param '{name}{sub}'")


def describe_field(spec: NodeSpec, name: str) -> str | None:
    info = spec.params.model_fields.get(name)
    return f"expected {getattr(info.annotation, '__name__', info.annotation)}" if info else None


def check_inputs(node_id: str, decl: NodeDecl, spec: NodeSpec, wf: Workflow,
                 specs: Mapping[str, NodeSpec], problems: list[Problem], broken: frozenset[str]) -> dict | None:
    ok = True
    resolved: dict[str, Link | list[Link]] = {}
    for port_name, value in decl.inputs.items():
        port = spec.input(port_name)
        if port is None:
            hint = suggest(port_name, [p.name for p in spec.inputs]) or \
                f"inputs: {', '.join(p.name for p in spec.inputs) or 'none'}"
            problems.append(Problem(f"unknown input port '{port_name}'", node_id, f"input '{port_name}'", hint))
            ok = False
            continue
        if not isinstance(value, list):
            link = check_link(node_id, port, value, wf, specs, problems, broken)
            if link is None:
                ok = False
            else:
                resolved[port_name] = [link] if port.many else link
            continue
        if not port.many:
            problems.append(Problem(f"takes one link, got a list of {len(value)}", node_id, f"input '{port_name}'"))
            ok = False
            continue
        got = [check_link(node_id, port, link, wf, specs, problems, broken) for link in value]
        if None in got:
            ok = False
            continue
        resolved[port_name] = got
    for port in spec.inputs:
        if port.required and port.name not in decl.inputs:
            problems.append(Problem(f"missing required input (expected a link to a {port.type_name} output)",
                                    node_id, f"input '{port.name}'"))
            ok = False
    return resolved if ok else None


def check_link(node_id: str, port: PortSpec, link: Any, wf: Workflow, specs: Mapping[str, NodeSpec],
               problems: list[Problem], broken: frozenset[str]) -> Link | None:
    if not isinstance(link, str):
        problems.append(Problem(f"a link must be a string 'node' or 'node.port', got {link!r}", node_id,
                                f"input '{port.name}'"))
        return None
    src, src_port = parse_link(link)
    if src in broken:
        return None  # its declaration's problem is reported already
    if (decl := wf.nodes.get(src)) is None:
        problems.append(Problem(f"links to '{link}', but there is no node '{src}'", node_id, f"input '{port.name}'",
                                suggest(src, wf.nodes)))
        return None
    src_spec = specs.get(decl.kind)
    if src_spec is None:
        return None  # the unknown kind of `src` is reported on its own node
    out = src_spec.outputs[0] if src_port is None and len(src_spec.outputs) == 1 else \
        resolve_port(src_spec, src, src_port, f"input '{port.name}'", problems, node=node_id)  # (a fan-in's hot path)
    if out is None:
        return None
    if not compatible(out.type, port.type):
        problems.append(Problem(f"type mismatch: expected {port.type_name}, but '{link}' produces {out.type_name}",
                                node_id, f"input '{port.name}'"))
        return None
    return Link(src, out.name)


def resolve_port(spec: NodeSpec, src: str, port: str | None, where: str, problems: list[Problem],
                 node: str | None) -> PortSpec | None:
    """The output port a link means; a bare node name is fine when it has exactly one output."""
    if port is None:
        if len(spec.outputs) == 1:
            return spec.outputs[0]
        names = ", ".join(f"'{src}.{p.name}'" for p in spec.outputs)
        problems.append(Problem(f"node '{src}' has several outputs; link one of {names}", node, where))
        return None
    out = spec.output(port)
    if out is None:
        names = [p.name for p in spec.outputs]
        problems.append(Problem(f"node '{src}' ({spec.kind}) has no output '{port}'", node, where,
                                suggest(port, names) or f"outputs: {', '.join(names)}"))
    return out


def build_dag(wf: Workflow) -> nx.DiGraph:
    """Edges producer -> consumer between existing nodes (links to missing nodes are skipped)."""
    dag = nx.DiGraph()
    dag.add_nodes_from(wf.nodes)
    dag.add_edges_from(dependency_edges(wf))
    return dag


def dependency_edges(wf: Workflow) -> Iterator[tuple[str, str]]:
    for node_id, decl in wf.nodes.items():
        for value in decl.inputs.values():
            for link in value if isinstance(value, list) else (value,):
                if isinstance(link, str):
                    src = parse_link(link)[0]
                    if src in wf.nodes:
                        yield src, node_id


def cycle_problems(dag: nx.DiGraph) -> list[Problem]:
    """One problem per strongly connected component that loops, with the cycle path."""
    problems = []
    for comp in nx.strongly_connected_components(dag):
        first = next(iter(comp))
        if len(comp) == 1 and not dag.has_edge(first, first):
            continue
        cycle = nx.find_cycle(dag.subgraph(comp), source=min(comp))
        path = [u for u, _ in cycle] + [cycle[0][0]]
        problems.append(Problem("cycle detected: " + " -> ".join(path), min(comp)))
    return problems


def execution_order(graph: ValidGraph, outputs: list[str] | None = None) -> list[str]:
    """Only what the requested outputs need, in the graph's deterministic topological order.

    Filtering the whole graph's order is the order of Kahn's algorithm on the needed nodes alone:
    they include their ancestors, so no other node ever delays one of them."""
    targets = [parse_link(o)[0] for o in outputs] if outputs else [link.node for link in graph.outputs]
    missing = [t for t in targets if t not in graph.nodes]
    if missing:
        raise WorkflowError([Problem(f"requested output '{t}' names no node", hint=suggest(t, graph.nodes))
                             for t in missing])
    needed = ancestors_and_self(graph.nodes, targets)
    if len(needed) == len(graph.nodes):
        return list(graph.order)
    return [n for n in graph.order if n in needed]


def ancestors_and_self(nodes: Mapping[str, ResolvedNode], targets: list[str]) -> set[str]:
    """`targets` and every node they depend on (one walk over the producers)."""
    needed = set(targets)
    stack = list(needed)
    while stack:
        for p in (link.node for link in nodes[stack.pop()].links()):
            if p not in needed:
                needed.add(p)
                stack.append(p)
    return needed


def topological_order(nodes: Mapping[str, ResolvedNode]) -> list[str]:
    """Kahn's algorithm over resolved nodes, smallest id first among ready nodes (deterministic);
    shorter than `nodes` when they contain a cycle.

    Each producer's consumers are a chain of edge numbers in two flat lists, not a list per node:
    the graph is walked once, and a large workflow leaves the garbage collector a few objects
    instead of one more per node."""
    indegree = dict.fromkeys(nodes, 0)
    consumer: list[str] = []  # edge -> the node that reads it
    next_edge: list[int] = []  # edge -> the producer's previous edge, -1 after its first
    last_edge: dict[str, int] = {}  # producer -> its most recent edge
    for node_id, rn in nodes.items():
        for link in rn.links():
            indegree[node_id] += 1
            next_edge.append(last_edge.get(link.node, -1))
            last_edge[link.node] = len(consumer)
            consumer.append(node_id)
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        edge = last_edge.get(n, -1)
        while edge >= 0:
            m = consumer[edge]
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(ready, m)
            edge = next_edge[edge]
    return order
