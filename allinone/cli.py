"""The ``allinone`` command line.

``setup`` and ``serve`` run the platform; the other commands are a thin layer over
:mod:`allinone.client`, the API's one Python client. Errors are printed as one
readable line on stderr with a non-zero exit status; ``-o json`` prints the API's JSON
for scripts. The server is ``--server``, else ``$ALLINONE_SERVER``, else
``http://127.0.0.1:8080``. The management API's bearer token is ``--token``, else
``$ALLINONE_TOKEN``, else, for a server on a loopback address, the token file of the
state directory (``$ALLINONE_STATE_DIR``); see :mod:`allinone.auth`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.budget import DEFAULT_BUDGET_SHARE, DEFAULT_MAX_PODS_PER_FUNCTION
from allinone.client import (
    DEFAULT_SERVER,
    ApiError,
    Client,
    ok,
    read_source,
    token_for,
)
from allinone.config import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_STATE_DIR,
    USAGE_PERIOD_SECONDS,
    Settings,
)
from allinone.kubelet.parking import STANDBY_MODES
from allinone.ui import commands as ui_commands


class CliError(Exception):
    pass


# -- spec flags ------------------------------------------------------------------

SCALING_FLAGS = {
    "min_scale": "minScale", "max_scale": "maxScale", "initial_scale": "initialScale",
    "target": "target", "target_utilization": "targetUtilizationPercentage",
    "container_concurrency": "containerConcurrency", "window": "stableWindowSeconds",
    "panic_window_percentage": "panicWindowPercentage",
    "panic_threshold": "panicThresholdPercentage", "max_scale_up_rate": "maxScaleUpRate",
    "max_scale_down_rate": "maxScaleDownRate",
    "scale_to_zero_grace": "scaleToZeroGracePeriodSeconds",
    "scale_to_zero_retention": "scaleToZeroPodRetentionSeconds",
    "scale_down_delay": "scaleDownDelaySeconds", "activation_scale": "activationScale",
    "metric": "metric", "target_burst_capacity": "targetBurstCapacity",
}
_INT_FLAGS = {"min_scale", "max_scale", "initial_scale", "container_concurrency", "window",
              "scale_down_delay", "activation_scale"}


def fill(spec: dict[str, Any], block: str, **fields: Any) -> None:
    """Set the given (not None) fields of ``spec[block]``, creating the block if needed."""
    given = {k: v for k, v in fields.items() if v is not None}
    if given:
        spec.setdefault(block, {}).update(given)


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(args.spec) if args.spec else {}
    if not isinstance(spec, dict):
        raise CliError("--spec must be a JSON object")
    scaling = {v: getattr(args, k) for k, v in SCALING_FLAGS.items()
               if getattr(args, k) is not None}
    if scaling:
        spec.setdefault("scaling", {}).update(scaling)
    if args.handler:
        spec["handler"] = args.handler
    if args.timeout is not None:
        spec["timeoutSeconds"] = args.timeout
    fill(spec, "resources", memoryMiB=args.memory, cpus=args.cpus)
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--env takes KEY=VALUE, got {item!r}")
        spec.setdefault("env", {})[key] = value
    return spec


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="spec as JSON (flags below override it)")
    p.add_argument("--handler", help="'run' or 'module.function' (zip)")
    p.add_argument("--timeout", type=float, help="timeoutSeconds")
    p.add_argument("--memory", type=int, help="memory limit in MiB")
    p.add_argument("--cpus", type=float, help="CPU limit")
    p.add_argument("--env", action="append", metavar="KEY=VALUE")
    for flag, field in SCALING_FLAGS.items():
        if flag == "metric":
            p.add_argument("--metric", choices=list(objects.SCALING_METRICS),
                           help="scaling.metric")
            continue
        p.add_argument("--" + flag.replace("_", "-"),
                       type=int if flag in _INT_FLAGS else float, help=f"scaling.{field}")


# -- commands --------------------------------------------------------------------

def out_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_deploy(client: Client, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    source = read_source(args.file) if args.file else None
    if source is None and client.find(args.name) is None:
        raise CliError("--file is required to deploy a new function")
    quiet = args.output == "json"
    fn = client.deploy(args.name, source, spec or None, wait=False)
    if not args.no_wait:
        t0 = time.monotonic()
        dots: list[int] = []

        def progress(_: dict[str, Any]) -> None:
            if not quiet:
                print(("building " if not dots else "") + ".", end="", file=sys.stderr,
                      flush=True)
                dots.append(1)
        fn = client.wait_built(args.name, fn["metadata"]["generation"], 600.0,
                               on_poll=progress)
        if dots:
            print(file=sys.stderr)
        if not quiet:
            st = fn["status"]
            if st["phase"] == objects.FAILED:
                raise CliError(f"build of {args.name} failed: {st.get('message')}")
            print(f"{args.name} is Ready in {time.monotonic() - t0:.2f} s: {st.get('image')}")
    if quiet:
        out_json(fn)
    return 0


def _age(ts: str) -> str:
    try:
        t = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (ValueError, TypeError):
        return "?"
    s = int(time.time() - t)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    items = client.functions()
    if args.output == "json":
        out_json({"items": items})
        return 0
    rows = [("NAME", "PHASE", "READY", "DESIRED", "AGE")]
    for fn in items:
        st = fn.get("status", {})
        rows.append((fn["metadata"]["name"], st.get("phase", "?"), str(st.get("readyReplicas", 0)),
                     str(st.get("desiredReplicas", 0)), _age(fn["metadata"]["creationTimestamp"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    fn = client.get(args.name)
    if args.output == "json":
        out_json(fn)
        return 0
    st, spec = fn.get("status", {}), fn["spec"]
    auto = st.get("autoscaler", {})
    sc = spec.get("scaling", {})
    lines = [
        ("Name", fn["metadata"]["name"]),
        ("Phase", st.get("phase")),
        ("Message", st.get("message") or "-"),
        ("Image", st.get("image") or "-"),
        ("Generation", f"{fn['metadata']['generation']} (observed {st.get('observedGeneration')})"),
        ("Handler", spec.get("handler")),
        ("Source", f"{spec['source']['filename']} ({spec['source']['size']} bytes)"),
        ("Replicas", f"desired {st.get('desiredReplicas', 0)}, ready {st.get('readyReplicas', 0)}"
                     f", total {st.get('replicas', 0)}"),
        ("Requests/s" if auto.get("metric") == "rps" else "Concurrency",
         f"stable {auto.get('stableConcurrency', 0):.2f}, "
                        f"panic {auto.get('panicConcurrency', 0):.2f}"),
        ("Panic mode", "yes" if auto.get("panic") else "no"),
        ("Burst", f"excess burst capacity {auto.get('excessBurstCapacity', 0)} "
                  f"(targetBurstCapacity {sc.get('targetBurstCapacity', '-')}; the activator "
                  "is always in the path)"),
        ("Autoscaler", auto.get("reason", "-")),
        ("Capped", (st.get("capped") or {}).get("message") or "no"),
        ("Scaling", ", ".join(f"{k}={v}" for k, v in sorted(sc.items()))),
    ]
    for k, v in lines:
        print(f"{k + ':':<13}{v}")
    pods = client.pods(args.name)
    if pods:
        print("\n" + ui_commands.render_pods(pods, time.time()))
    return 0


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    """Write functions as Knative Services (see allinone.export.knative)."""
    from allinone.export import knative, registry

    if bool(args.name) == bool(args.all):
        raise CliError("give one function NAME, or --all")
    if args.all:
        # Every function that has an image; one still building (or failed) has nothing
        # a cluster could run, so it is named and left out rather than failing the rest.
        fns = []
        for fn in client.functions():
            if fn.get("status", {}).get("image"):
                fns.append(fn)
            else:
                print(f"skipped {fn['metadata']['name']}: no built image (phase "
                      f"{fn.get('status', {}).get('phase', '-')})", file=sys.stderr)
        if not fns:
            raise CliError("no function has a built image yet; wait until one is Ready")
    else:
        fns = [client.get(args.name)]
    images: dict[str, str] = {}
    try:
        knative.render(fns)  # refuse before copying anything
    except knative.ExportError as exc:
        raise CliError(str(exc)) from exc
    if args.push_to:
        for fn in fns:
            name, image = fn["metadata"]["name"], fn.get("status", {}).get("image")
            if not image:
                raise CliError(f"function {name!r} has no built image yet; wait until it is "
                               "Ready")
            try:
                images[name] = registry.copy_image(image, args.push_to, name)
            except registry.RegistryError as exc:
                raise CliError(str(exc)) from exc
            print(f"pushed {images[name]}", file=sys.stderr)
    try:
        text = knative.render(fns, images)
    except knative.ExportError as exc:
        raise CliError(str(exc)) from exc
    if args.output_file and args.output_file != "-":
        Path(args.output_file).write_text(text)
        print(f"wrote {len(fns)} Service(s) to {args.output_file}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete(args.name)
    print(f"{args.name} deleted")
    return 0


def cmd_invoke(client: Client, args: argparse.Namespace) -> int:
    data = args.data if args.data is not None else "{}"
    print(ok(client.invoke(args.name, data=data.encode())).text)
    return 0


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    sys.stdout.write(client.logs(args.name))
    return 0


# -- triggers ----------------------------------------------------------------------

def trigger_spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(args.spec) if args.spec else {}
    if not isinstance(spec, dict):
        raise CliError("--spec must be a JSON object")
    if args.function:
        spec["target"] = {"function": args.function}
    elif args.workflow:
        spec["target"] = {"workflow": args.workflow}
    if args.schedule:
        spec["schedule"] = args.schedule
        for flag, field in (("timezone", "timezone"), ("concurrency_policy", "concurrencyPolicy"),
                            ("starting_deadline", "startingDeadlineSeconds")):
            if getattr(args, flag) is not None:
                spec[field] = getattr(args, flag)
    if args.watch:
        watch = spec.setdefault("watch", {})
        watch["path"] = str(Path(args.watch).expanduser().resolve())
        if args.pattern:
            watch["patterns"] = args.pattern
        if args.event:
            watch["events"] = args.event
        if args.recursive:
            watch["recursive"] = True
        if args.max_content_bytes is not None:
            watch["maxContentBytes"] = args.max_content_bytes
    if args.sink:
        spec["sink"] = {"directory": str(Path(args.sink).expanduser().resolve())}
    fill(spec, "retry", maxAttempts=args.max_attempts, backoffSeconds=args.backoff)
    return spec


def cmd_trigger(client: Client, args: argparse.Namespace) -> int:
    sub = args.tcommand
    if sub == "create":
        spec = trigger_spec_from_args(args)
        data = (client.update_trigger if args.update else client.create_trigger)(args.name, spec)
        if args.output == "json":
            out_json(data)
        else:
            print(f"trigger {args.name} {'updated' if args.update else 'created'}")
        return 0
    if sub == "list":
        items = client.triggers()
        if args.output == "json":
            out_json({"items": items})
            return 0
        rows = [("NAME", "SOURCE", "TARGET", "FIRES", "FAILURES", "MISSED", "LAST")]
        for t in items:
            spec, st = t["spec"], t.get("status", {})
            source = spec.get("schedule") or f"watch {spec.get('watch', {}).get('path')}"
            kind, target = next(iter(spec["target"].items()))
            rows.append((t["metadata"]["name"], source, f"{kind}/{target}",
                         str(st.get("fires", 0)), str(st.get("failures", 0)),
                         str(st.get("missed", 0)), st.get("lastStatus") or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return 0
    if sub == "get":
        out_json(client.trigger(args.name))
        return 0
    if sub == "delete":
        client.delete_trigger(args.name)
        print(f"trigger {args.name} deleted")
        return 0
    events = client.trigger_events(args.name, args.limit)
    if args.output == "json":
        out_json({"items": events})
        return 0
    for e in events:
        inp = ", ".join(f"{k}={v}" for k, v in e["input"].items())
        lat = f"{e['latencySeconds'] * 1000:.0f} ms" if e.get("latencySeconds") else "-"
        print(f"{e['time']}  {e['status']:<9}  {lat:>8}  {inp}"
              + (f"  error: {e['error']}" if e.get("error") else ""))
    return 0


def add_trigger_parser(sub: Any) -> None:
    tr = sub.add_parser("trigger", help="schedules and file watches that call a function or "
                        "a workflow").add_subparsers(dest="tcommand", required=True)
    p = tr.add_parser("create", help="create a trigger (or --update it)")
    p.add_argument("name")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--function", help="call this function with each event")
    target.add_argument("--workflow", help="start this workflow with each event")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--schedule", help="cron expression ('*/5 * * * *') or '@every 10s'")
    source.add_argument("--watch", metavar="DIR", help="watch this folder (on the server)")
    p.add_argument("--timezone", help="IANA zone of the schedule (default UTC)")
    p.add_argument("--concurrency-policy", choices=["Allow", "Forbid", "Replace"])
    p.add_argument("--starting-deadline", type=float, metavar="SECONDS",
                   help="skip a missed time older than this")
    p.add_argument("--pattern", action="append", help="file-name pattern, e.g. '*.png' "
                   "(repeatable; default '*')")
    p.add_argument("--event", action="append", choices=["created", "modified", "deleted"],
                   help="events to deliver (repeatable; default created and modified)")
    p.add_argument("--recursive", action="store_true", help="watch sub-folders too")
    p.add_argument("--max-content-bytes", type=int, help="send files up to this size")
    p.add_argument("--sink", metavar="DIR", help="write results (and result files) here")
    p.add_argument("--max-attempts", type=int, help="delivery attempts (default 3)")
    p.add_argument("--backoff", type=float, metavar="SECONDS", help="first retry delay")
    p.add_argument("--spec", help="the spec as JSON (flags override it)")
    p.add_argument("--update", action="store_true", help="replace the spec of an existing one")
    output_flag(p)
    p = tr.add_parser("list", help="list triggers")
    output_flag(p)
    p = tr.add_parser("get", help="show one trigger as JSON")
    p.add_argument("name")
    p = tr.add_parser("delete", help="delete a trigger; it stops firing")
    p.add_argument("name")
    p = tr.add_parser("events", help="the last deliveries of a trigger")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    output_flag(p)


def cmd_setup(args: argparse.Namespace) -> int:
    from allinone.install import run_setup

    return run_setup(args.base_image)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from allinone.app import serve
    from allinone.services.preflight import PreflightError

    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(host=args.host, port=args.port, state_dir=Path(args.state_dir).expanduser(),
                        etcd_port=args.etcd_port, registry_port=args.registry_port,
                        etcd_url=args.etcd, registry=args.registry,
                        autoscaler_tick_seconds=args.tick, base_image=args.base_image,
                        keep_paused_seconds=args.keep_paused,
                        standby="off" if args.no_standby else args.standby,
                        drain_seconds=args.drain_seconds,
                        pod_memory_budget_mib=args.pod_memory_budget,
                        max_pods_per_function=args.max_pods_per_function,
                        require_token=args.require_token,
                        usage_period_seconds=args.usage_period,
                        queue_limit=args.queue_limit)
    try:
        serve(settings)
    except PreflightError as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:  # an embedded service failed to start
        raise CliError(str(exc)) from None
    return 0


def cmd_loadtest(args: argparse.Namespace, rest: list[str]) -> int:
    from loadtests.__main__ import main as loadtest_main

    code: int = loadtest_main(rest)
    return code


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more seconds")
    return value


def output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")


def command(sub: Any, cmd: str, help: str, *, named: bool = True,
            output: bool = False) -> argparse.ArgumentParser:
    """A subcommand, with the object's ``name`` and ``-o text|json`` when asked."""
    p: argparse.ArgumentParser = sub.add_parser(cmd, help=help)
    if named:
        p.add_argument("name")
    if output:
        output_flag(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allinone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("ALLINONE_SERVER", DEFAULT_SERVER),
                        help="API address (default $ALLINONE_SERVER or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("ALLINONE_TOKEN"),
                        help="the management API's bearer token (default $ALLINONE_TOKEN, "
                             "else the state directory's token file for a loopback server)")
    sub = parser.add_subparsers(dest="command", required=True)

    base_image = os.environ.get("ALLINONE_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    p = sub.add_parser("setup", help="install what is missing, start Docker, make the base image")
    p.add_argument("--base-image", default=base_image)

    p = sub.add_parser("serve", help="run the platform (embedded etcd and registry by default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    p.add_argument("--etcd-port", type=int, default=2379)
    p.add_argument("--registry-port", type=int, default=5000)
    p.add_argument("--etcd", metavar="URL", help="use this running etcd instead of starting one")
    p.add_argument("--registry", metavar="HOST:PORT", help="use this running registry")
    p.add_argument("--tick", type=float, default=2.0, help="autoscaler tick in seconds")
    p.add_argument("--keep-paused", type=float, default=0.0, metavar="SECONDS",
                   help="keep a scaled-down pod paused this long, so the next scale-up "
                        "resumes it (~20 ms) instead of starting a container (~110 ms); "
                        "0 (default) removes it at once")
    p.add_argument("--standby", choices=STANDBY_MODES, default=Settings.standby,
                   help="what each function at zero keeps waiting: a container started "
                        "and frozen once healthy, so a cold start resumes it (~20 ms; "
                        "costs its memory), one created but not started (a cold start "
                        "then starts it), or none (default: %(default)s)")
    p.add_argument("--no-standby", action="store_true", help="the same as --standby off")
    p.add_argument("--drain-seconds", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, let in-flight invocations finish for at most this long")
    p.add_argument("--pod-memory-budget", type=_positive_int, metavar="MIB",
                   help="the most memory (sum of memoryMiB) all pods together may take "
                        f"(default {int(DEFAULT_BUDGET_SHARE * 100)} %% of this host's memory)")
    p.add_argument("--max-pods-per-function", type=_positive_int, metavar="N",
                   default=DEFAULT_MAX_PODS_PER_FUNCTION,
                   help="the most pods one function may run; a larger maxScale is refused "
                        "(default %(default)s)")
    p.add_argument("--require-token", action="store_true",
                   help="require the bearer token (STATE_DIR/token) on /api/ even on a "
                        "loopback --host (always required on any other host)")
    p.add_argument("--usage-period", type=_seconds, default=USAGE_PERIOD_SECONDS,
                   metavar="SECONDS", help="sample every pod's CPU and memory this often "
                   "(default %(default)s); 0 turns the sampler off")
    p.add_argument("--queue-limit", type=_positive_int, metavar="N",
                   default=Settings.queue_limit,
                   help="requests one function may have waiting for a pod; the one over "
                        "gets 503 Overloaded at once (default %(default)s)")
    p.add_argument("--base-image", default=base_image)
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    fn = sub.add_parser("function", help="deploy, list, get, delete functions").add_subparsers(
        dest="fcommand", required=True)
    p = fn.add_parser("deploy", help="create a function, or update it when it exists")
    p.add_argument("name")
    p.add_argument("--file", "-f", help=".py file, .zip, or a directory (zipped)")
    p.add_argument("--no-wait", action="store_true", help="return before the build finishes")
    output_flag(p)
    add_spec_flags(p)
    command(fn, "list", "list functions", named=False, output=True)
    command(fn, "get", "show one function", output=True)
    command(fn, "delete", "delete a function, its pods and image")
    p = fn.add_parser("export", help="write functions as Knative Services (YAML)")
    p.add_argument("name", nargs="?", help="the function (or --all)")
    p.add_argument("--all", action="store_true", help="every function, one multi-document YAML")
    p.add_argument("--format", choices=["knative"], default="knative")
    p.add_argument("-o", "--output-file", metavar="FILE", help="write here (default stdout)")
    p.add_argument("--push-to", metavar="HOST[:PORT]/PREFIX",
                   help="first copy each image to this registry (digest kept) and use it")

    p = sub.add_parser("invoke", help="call a function over its HTTP trigger")
    p.add_argument("name")
    p.add_argument("-d", "--data", help="JSON object passed as keyword arguments")

    p = sub.add_parser("logs", help="what the function printed, from its pods")
    p.add_argument("name")

    add_trigger_parser(sub)
    ui_commands.add_parsers(sub)
    from allinone import cli_workflows

    cli_workflows.add_parser(sub)

    sub.add_parser("loadtest", help="run the locust scenarios (see `allinone loadtest --help`)",
                   add_help=False)
    sub.add_parser("simulate", help="replay a trace in virtual time through the real KPA "
                   "(see `allinone simulate --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The CLI; a reader that goes away (``allinone ... | head``) ends it quietly.

    Python raises BrokenPipeError on the write after the reader closed the pipe (it
    ignores SIGPIPE). For every command that means "stop": stdout is pointed at
    /dev/null so the flush at exit cannot raise again, and the exit status is the one
    a tool killed by SIGPIPE has (128 + 13), as shells expect of ``cmd | head``.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if "loadtest" in argv[:3]:
        # Everything after `loadtest` belongs to the runner; a global --server before it
        # is passed on so `allinone --server URL loadtest` uses that server.
        i = argv.index("loadtest")
        args, _ = parser.parse_known_args(argv[:i + 1])
        rest = argv[i + 1:]
        if "--server" in argv[:i] and "--server" not in rest:
            rest = ["--server", args.server, *rest]
        try:
            return cmd_loadtest(args, rest)
        except KeyboardInterrupt:
            return 130
    if argv[:1] == ["simulate"]:
        from allinone.simulator.cli import main as simulate

        return simulate(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            return cmd_setup(args)
        if args.command == "serve":
            return cmd_serve(args)
        client = Client(args.server, token=token_for(args.server, args.token,
                                                     DEFAULT_STATE_DIR))
        if args.command == "function":
            return {"deploy": cmd_deploy, "list": cmd_list, "get": cmd_get,
                    "delete": cmd_delete, "export": cmd_export}[args.fcommand](client, args)
        if args.command == "invoke":
            return cmd_invoke(client, args)
        if args.command == "logs":
            return cmd_logs(client, args)
        if args.command == "trigger":
            return cmd_trigger(client, args)
        if args.command in ("status", "ui"):
            return {"status": ui_commands.cmd_status, "ui": ui_commands.cmd_ui}[args.command](
                client, args)
        if args.command == "workflow":
            from allinone import cli_workflows

            return cli_workflows.run(client, args)
    except (CliError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
