"""A picture of a state machine, laid out by Graphviz (``dot``).

States are nodes (shape by type), transitions are edges: ``Next``, each Choice rule
labelled with the rule, ``Default``, and dashed ``Catch`` edges labelled with the errors.
Parallel branches and the Map item processor are clusters inside their state. Given
an execution's history, the states it entered and the transitions it took are drawn
thick and coloured (green; the state it failed in red).

Nodes are identified by their path in the definition, so the same state name in two
branches stays two nodes; the history names states only, so a name used in several
machines is highlighted in each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import graphviz

from allinone.workflows.choice import describe

_SHAPES = {"Task": ("box", "rounded"), "Pass": ("box", "dashed"),
           "Choice": ("diamond", ""), "Wait": ("ellipse", ""),
           "Succeed": ("doublecircle", ""), "Fail": ("doubleoctagon", ""),
           "Parallel": ("box3d", ""), "Map": ("box3d", "")}
HIGHLIGHT, FAILED = "#1a7f37", "#cf222e"


@dataclass
class Trace:
    """What a history says about the path: states entered and when each entered/left."""

    entered: dict[str, list[int]] = field(default_factory=dict)
    left: dict[str, list[int]] = field(default_factory=dict)
    failed: str | None = None

    def took(self, a: str, b: str) -> bool:
        """Was ``b`` entered after ``a`` was left (the transition a -> b taken)?"""
        return any(j > i for i in self.left.get(a, ()) for j in self.entered.get(b, ()))


def path_of(events: list[dict[str, Any]]) -> Trace:
    t = Trace()
    for i, e in enumerate(events):
        kind, name = e.get("type", ""), e.get("name")
        if name is None:
            continue
        if kind.endswith("StateEntered"):
            t.entered.setdefault(name, []).append(i)
        elif kind.endswith("StateExited") or kind == "TaskCaught":
            t.left.setdefault(name, []).append(i)
        if kind in ("TaskFailed", "TaskTimedOut", "ParallelStateFailed", "MapStateFailed",
                    "FailStateEntered", "ChoiceStateEntered"):
            t.failed = name
        elif kind in ("TaskCaught", "TaskRetried", "ChoiceStateExited"):
            t.failed = None
    if not events or events[-1].get("type") not in ("ExecutionFailed", "ExecutionTimedOut"):
        t.failed = None
    return t


def render(definition: dict[str, Any], title: str = "",
           events: list[dict[str, Any]] | None = None) -> graphviz.Digraph:
    trace = path_of(events or [])
    g = graphviz.Digraph(name=title or "workflow", graph_attr={
        "rankdir": "TB", "fontname": "Helvetica", "label": title, "labelloc": "t"},
        node_attr={"fontname": "Helvetica", "fontsize": "11"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    g.node("__start", "", shape="circle", style="filled", fillcolor="black", width="0.2")
    g.node("__end", "", shape="doublecircle", style="filled", fillcolor="black", width="0.15")
    start = _machine(g, definition, "", trace, "__end")
    g.edge("__start", start, color=HIGHLIGHT if events else "black",
           penwidth="2.5" if events else "1")
    return g


def _id(prefix: str, name: str) -> str:
    return f"{prefix}/{name}"


def _machine(g: graphviz.Digraph, m: dict[str, Any], prefix: str, trace: Trace,
             end: str) -> str:
    states: dict[str, Any] = m["States"]
    for name, st in states.items():
        kind = st["Type"]
        shape, style = _SHAPES.get(kind, ("box", ""))
        attrs = {"shape": shape, "style": style}
        if name in trace.entered:
            colour = FAILED if name == trace.failed else HIGHLIGHT
            attrs.update(color=colour, penwidth="2.5", fontcolor=colour)
        label = f"{name}\\n{kind}" + (f": {st['Resource']}" if kind == "Task" else "")
        node = _id(prefix, name)
        if kind in ("Parallel", "Map"):
            with g.subgraph(name=f"cluster_{node}") as c:
                c.attr(label=f"{name} ({kind})", style="rounded,dashed", color="gray50")
                c.node(node, label, **attrs)
                subs = st["Branches"] if kind == "Parallel" else [
                    st.get("ItemProcessor") or st["Iterator"]]
                for i, sub in enumerate(subs):
                    sub_prefix = f"{node}/{i}"
                    join = f"{sub_prefix}/__join"
                    c.node(join, "", shape="point", width="0.05")
                    first = _machine(c, sub, sub_prefix, trace, join)
                    c.edge(node, first, style="dotted",
                           label=f"branch {i}" if kind == "Parallel" else "each item")
        else:
            g.node(node, label, **attrs)
        for target, label, dashed in _edges(st):
            on_path = trace.took(name, target)
            g.edge(node, _id(prefix, target), label=label, style="dashed" if dashed else "solid",
                   color=HIGHLIGHT if on_path else "black", penwidth="2.5" if on_path else "1")
        if st.get("End") or kind == "Succeed":
            done = name in trace.left or (kind == "Succeed" and name in trace.entered)
            g.edge(node, end, color=HIGHLIGHT if done else "black")
    return _id(prefix, m["StartAt"])


def _edges(st: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    if "Next" in st:
        out.append((st["Next"], "", False))
    for rule in st.get("Choices", []):
        out.append((rule["Next"], _wrap(describe(rule)), False))
    if "Default" in st:
        out.append((st["Default"], "Default", False))
    for c in st.get("Catch", []):
        out.append((c["Next"], "Catch: " + ", ".join(c["ErrorEquals"]), True))
    return out


def _wrap(text: str, width: int = 36) -> str:
    if len(text) <= width:
        return text
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\\n".join(lines)
