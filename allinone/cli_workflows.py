"""``allinone workflow ...``: the CLI of workflows (a thin client of the HTTP API).

deploy (create or update from a JSON or YAML file), list, get, delete, run (wait for
the outcome, or ``--async``), executions, execution (the history as a table) and graph
(a PNG/SVG of the state machine by Graphviz, an execution's path highlighted; ``.dot``
writes the Graphviz source without needing ``dot``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from allinone.cli import Client, CliError, out_json


def add_parser(sub: Any) -> None:
    wf = sub.add_parser("workflow", help="deploy, run and inspect workflows (Amazon States "
                        "Language)").add_subparsers(dest="wcommand", required=True)
    p = wf.add_parser("deploy", help="create a workflow, or update it when it exists")
    p.add_argument("name")
    p.add_argument("--file", "-f", required=True, help="the state machine, .json or .yaml")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = wf.add_parser("list", help="list workflows")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = wf.add_parser("get", help="show one workflow and its definition")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = wf.add_parser("delete", help="delete a workflow and its executions")
    p.add_argument("name")
    p = wf.add_parser("run", help="start an execution and wait for its outcome")
    p.add_argument("name")
    p.add_argument("-d", "--data", help="the execution's input (JSON)")
    p.add_argument("--async", dest="async_", action="store_true",
                   help="print the execution ID and return at once")
    p = wf.add_parser("executions", help="list a workflow's executions, newest first")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = wf.add_parser("execution", help="one execution and its history")
    p.add_argument("name")
    p.add_argument("id")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = wf.add_parser("graph", help="draw the state machine (PNG, SVG or Graphviz .dot)")
    p.add_argument("name")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="FILE.png, FILE.svg or FILE.dot")
    p.add_argument("--execution", metavar="ID", help="highlight the path this execution took")


def read_definition(path: str) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"{path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                       "name YAML files .yaml") from None


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[:width - 3] + "..."


def run(client: Client, args: argparse.Namespace) -> int:
    cmd = args.wcommand
    if cmd == "deploy":
        definition = read_definition(args.file)
        status, _ = client.request("GET", f"/api/v1/workflows/{args.name}")
        if status == 404:
            body = json.dumps({"name": args.name, "definition": definition}).encode()
            wf = client.json("POST", "/api/v1/workflows", body, "application/json")
        else:
            body = json.dumps({"definition": definition}).encode()
            wf = client.json("PUT", f"/api/v1/workflows/{args.name}", body, "application/json")
        if args.output == "json":
            out_json(wf)
        else:
            print(f"{args.name} deployed (generation {wf['metadata']['generation']}, "
                  f"{len(definition['States'])} states)")
        return 0
    if cmd == "list":
        data = client.json("GET", "/api/v1/workflows")
        if args.output == "json":
            out_json(data)
            return 0
        rows: list[tuple[str, ...]] = [("NAME", "STATES", "START AT", "GENERATION")]
        for wf in data["items"]:
            d = wf["spec"]["definition"]
            rows.append((wf["metadata"]["name"], str(len(d["States"])), d["StartAt"],
                         str(wf["metadata"]["generation"])))
        _table(rows)
        return 0
    if cmd == "get":
        wf = client.json("GET", f"/api/v1/workflows/{args.name}")
        if args.output == "json":
            out_json(wf)
        else:
            print(f"Name:       {wf['metadata']['name']}\nGeneration: "
                  f"{wf['metadata']['generation']}\nPhase:      {wf['status'].get('phase')}")
            print(json.dumps(wf["spec"]["definition"], indent=2))
        return 0
    if cmd == "delete":
        client.json("DELETE", f"/api/v1/workflows/{args.name}")
        print(f"{args.name} deleted")
        return 0
    if cmd == "run":
        data = args.data if args.data is not None else "{}"
        path = f"/workflow/{args.name}" + ("?mode=async" if args.async_ else "")
        out = client.json("POST", path, data.encode(), "application/json", ok=(200, 202))
        if args.async_:
            print(out["executionId"])
            return 0
        out_json(out)
        return 0 if out.get("status") == "SUCCEEDED" else 1
    if cmd == "executions":
        data = client.json("GET", f"/api/v1/workflows/{args.name}/executions?limit={args.limit}")
        if args.output == "json":
            out_json(data)
            return 0
        erows: list[tuple[str, ...]] = [("EXECUTION", "STATUS", "STARTED", "STOPPED")]
        erows += [(e["executionId"], e["status"], e.get("startDate") or "-",
                   e.get("stopDate") or "-") for e in data["items"]]
        _table(erows)
        return 0
    if cmd == "execution":
        ex = client.json("GET", f"/api/v1/workflows/{args.name}/executions/{args.id}")
        if args.output == "json":
            out_json(ex)
            return 0
        print(f"Execution: {ex['executionId']}\nStatus:    {ex['status']}\n"
              f"Started:   {ex.get('startDate')}\nStopped:   {ex.get('stopDate') or '-'}\n"
              f"Input:     {_short(ex['input'], 200)}")
        if ex["status"] == "SUCCEEDED":
            print(f"Output:    {_short(ex.get('output'), 200)}")
        elif ex["status"] != "RUNNING":
            print(f"Error:     {ex.get('error')}\nCause:     {ex.get('cause')}")
        hrows: list[tuple[str, ...]] = [("ID", "TIMESTAMP", "TYPE", "STATE", "DETAIL")]
        for e in ex.get("events", []):
            detail = ""
            if "error" in e:
                detail = f"{e['error']}: {e.get('cause', '')}"
            elif "output" in e:
                detail = "output " + _short(e["output"])
            elif "input" in e:
                detail = "input " + _short(e["input"])
            if "index" in e:
                detail = f"item {e['index']} {detail}".strip()
            hrows.append((str(e.get("id", "")), e["timestamp"], e["type"], e.get("name", ""),
                          detail))
        print()
        _table(hrows)
        return 0
    if cmd == "graph":
        from allinone.workflows.graph import render

        wf = client.json("GET", f"/api/v1/workflows/{args.name}")
        events = None
        if args.execution:
            ex = client.json("GET", f"/api/v1/workflows/{args.name}/executions/{args.execution}")
            events = ex.get("events", [])
        g = render(wf["spec"]["definition"], args.name, events)
        out = Path(args.out)
        fmt = out.suffix.lstrip(".").lower()
        if fmt == "dot":
            out.write_text(g.source, encoding="utf-8")
        elif fmt in ("png", "svg", "pdf"):
            if shutil.which("dot") is None:
                raise CliError("Graphviz's `dot` is not installed: run `sudo allinone setup` "
                               "(or apt-get install graphviz), or write FILE.dot")
            out.write_bytes(g.pipe(format=fmt))
        else:
            raise CliError(f"cannot draw {out.name}: name the file .png, .svg, .pdf or .dot")
        print(f"wrote {out}")
        return 0
    raise CliError(f"unknown workflow command {cmd!r}")
