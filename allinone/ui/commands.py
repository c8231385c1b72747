"""``allinone status`` and ``allinone ui``: the server's state in a terminal, the dashboard
in a browser. Both only read the API (``GET /api/v1/status``; ``/ui``)."""

from __future__ import annotations

import argparse
import json
import webbrowser
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from allinone.client import Client


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("status", help="components, versions, ports, state dir, pods, budget")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p = sub.add_parser("ui", help="open the dashboard (/ui) in a browser")
    p.add_argument("--print", action="store_true", dest="print_only",
                   help="print the dashboard's address instead of opening it")


def _mib(n: Any) -> str:
    return f"{int(n) / 1048576:.1f} MiB" if isinstance(n, int | float) else "-"


def render_status(st: dict[str, Any]) -> str:
    lines = [f"allinone {st['version']}  state dir {st['stateDir']}  "
             f"instance {st.get('instance', '')}", ""]
    rows = [("COMPONENT", "STATE", "VERSION", "ADDRESS", "PID", "CPU s", "RSS")]
    for c in st["components"]:
        state = c["state"] + (f" ({c['detail']})" if c.get("detail") else "")
        rows.append((c["name"], state, c.get("version") or "-", c.get("address") or "-",
                     str(c.get("pid", "-")),
                     f"{c['cpuSeconds']:.1f}" if "cpuSeconds" in c else "-",
                     _mib(c.get("memoryBytes"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    pods = st["pods"]
    by_fn = ", ".join(f"{k} {v}" for k, v in sorted(pods["byFunction"].items())) or "none"
    lines += ["", f"functions {st.get('functions', 0)}, pods {pods['total']} ({by_fn})"]
    b = st.get("budget") or {}
    if b:
        lines.append(f"pod memory budget: {b['usedMiB']} of {b['podMemoryMiB']} MiB used; "
                     f"at most {b['maxPodsPerFunction']} pods per function")
    return "\n".join(lines)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    st = client.json("GET", "/api/v1/status")
    if args.output == "json":
        print(json.dumps(st, indent=2))
    else:
        print(render_status(st))
    return 0


def cmd_ui(client: Client, args: argparse.Namespace) -> int:
    url = client.server + "/ui"
    client.json("GET", "/healthz")  # says clearly when no server answers
    if args.print_only or not webbrowser.open(url):
        print(url)
    return 0


def render_pods(pods: list[dict[str, Any]], now: float) -> str:
    """``function get``'s per-pod table: pod, phase, age, requests in flight, CPU % and
    memory (status.usage), restarts (status.restartCount); '-' for what a pod lacks."""
    from allinone.objects import parse_rfc3339

    rows = [("POD", "PHASE", "AGE", "IN-FLIGHT", "CPU %", "MEMORY", "RESTARTS")]
    for p in pods:
        st = p.get("status") or {}
        u = st.get("usage") or {}
        created = p["metadata"].get("creationTimestamp")
        age = f"{int(now - parse_rfc3339(created))}s" if created else "-"
        rows.append((p["metadata"]["name"], str(st.get("phase", "?")), age,
                     str(st.get("inFlight", "-")),
                     f"{u['cpuPercent']:.1f}" if u else "-",
                     _mib(u.get("memoryBytes")) if u else "-",
                     str(st.get("restartCount", "-"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
