"""The workflow DAG as Mermaid or Graphviz DOT text, so it can be drawn."""
from __future__ import annotations

from .workflow import Workflow, parse_link


def edges(wf: Workflow) -> list[tuple[str, str, str]]:
    """(source link, target node, target port) for every link."""
    found = []
    for node_id, decl in wf.nodes.items():
        for port, value in decl.inputs.items():
            for link in value if isinstance(value, list) else [value]:
                found.append((str(link), node_id, port))
    return found


def to_mermaid(wf: Workflow) -> str:
    lines = ["flowchart LR"]
    for node_id, decl in wf.nodes.items():
        shape = ("[[", "]]") if node_id in {parse_link(o)[0] for o in wf.outputs} else ("[", "]")
        lines.append(f'  {node_id}{shape[0]}"{node_id}<br/><small>{decl.kind}</small>"{shape[1]}')
    for link, target, port in edges(wf):
        src, src_port = parse_link(link)
        label = f"{src_port} → {port}" if src_port else port
        lines.append(f"  {src} -->|{label}| {target}")
    return "\n".join(lines) + "\n"


def to_dot(wf: Workflow) -> str:
    outputs = {parse_link(o)[0] for o in wf.outputs}
    lines = ["digraph workflow {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for node_id, decl in wf.nodes.items():
        style = ", peripheries=2" if node_id in outputs else ""
        lines.append(f'  "{node_id}" [label="{node_id}\\n{decl.kind}"{style}];')
    for link, target, port in edges(wf):
        src, src_port = parse_link(link)
        label = f"{src_port} → {port}" if src_port else port
        lines.append(f'  "{src}" -> "{target}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
