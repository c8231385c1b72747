"""Image pipeline load: the imagepipe workflow on the test images at rising load.

    locust -f loadtests/imagepipe_load.py --headless --host http://127.0.0.1:8080 [--short]

Deploys the four Pillow functions of ``fixtures/imagepipe`` as ``lt-img-inspect``,
``lt-img-thumbnail``, ``lt-img-histogram``, ``lt-img-classify`` (``minScale`` 1,
``maxScale`` 4, ``target`` 1: one request in flight per pod, so the pods follow the
load) and ``imagepipe.json`` as ``lt-imagepipe`` with its Resources renamed to them.
Each user runs the workflow synchronously (``POST /workflow/lt-imagepipe``) on one of
the test images (made by ``make_images.py``, as a file trigger's event: ``name``,
``size``, ``contentBase64``), back to back: 4 Task invocations per execution, two of
them in parallel, all through the activator.

Load rises in steps of ``--pipe-steps`` users (default 1, 2, 4, 8; short 1, 4), each
held 10 s (short 6 s). A second sampler reads all four functions' ready and desired
replicas every 0.5 s; the chart's replica panel draws one line per function
(``figures.replicas_by_function``). The base sampler follows ``lt-img-thumbnail``.

Criteria: every execution answered ``SUCCEEDED`` with the image's labels and a
thumbnail, at least one ran, and some function had more than one ready pod (the
pipeline scaled). Not in the short run: the first build of the four functions fetches
Pillow wheels, ~1 minute alone.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import events
from locust.clients import HttpSession

from allinone.cli import read_source
from loadtests.common import (
    FIXTURES,
    SAMPLE_INTERVAL,
    Scenario,
    ScenarioError,
    ScenarioShape,
    ScenarioUser,
)
from loadtests.report import Criterion, fmt_ms, no_failures, summarize

PIPE = FIXTURES / "imagepipe"
STAGES = ("inspect", "thumbnail", "histogram", "classify")
WORKFLOW = "lt-imagepipe"
PREFIX = "lt-img-"
log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--pipe-steps", default="",
                        help="comma-separated user counts, one step each (default 1,2,4,8; "
                             "short 1,4)")


def load_images(out: Path) -> dict[str, bytes]:
    """The test images, made by the fixture's own script (``--large`` not included)."""
    spec = importlib.util.spec_from_file_location("make_images", PIPE / "make_images.py")
    if spec is None or spec.loader is None:
        raise ScenarioError(f"cannot load {PIPE / 'make_images.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {p.name: p.read_bytes() for p in module.make(out)}


def definition() -> dict[str, Any]:
    """imagepipe.json with each Task's Resource ``img-X`` renamed ``lt-img-X``."""
    text = (PIPE / "imagepipe.json").read_text()
    for stage in STAGES:
        text = text.replace(f'"Resource": "img-{stage}"', f'"Resource": "{PREFIX}{stage}"')
    out: dict[str, Any] = json.loads(text)
    return out


class ImagepipeLoad(Scenario):
    name = "imagepipe_load"
    fixture = PIPE / "functions" / "thumbnail"
    spec = {"scaling": {"minScale": 1, "maxScale": 4, "target": 1,
                        "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 2}}

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}  # name -> the event's JSON body
        self.by_function: dict[str, list[list[float]]] = {}
        self._pipe_sampler: gevent.Greenlet | None = None

    def parameters(self, short: bool) -> dict[str, Any]:
        raw = str(getattr(self.opts, "pipe_steps", "") or "")
        try:
            steps = [int(x) for x in raw.split(",") if x.strip()] if raw else []
        except ValueError:
            raise ScenarioError(f"--pipe-steps {raw!r}: give user counts like 1,2,4") from None
        return {"steps": steps or ([1, 4] if short else [1, 2, 4, 8]),
                "hold_s": 6.0 if short else 10.0, "workflow": WORKFLOW}

    @property
    def path(self) -> str:
        return f"/workflow/{WORKFLOW}"

    def _deploy(self) -> None:
        """The four functions from their folders (zipped, as the CLI does)."""
        api, rep = self.api, self.report
        assert api is not None
        if getattr(self.opts, "function", ""):
            raise ScenarioError("--function does not apply: this scenario deploys four")
        t = time.monotonic()
        for stage in STAGES:
            name = PREFIX + stage
            filename, data = read_source(str(PIPE / "functions" / stage))
            form = {"spec": json.dumps(self.spec)}
            files = {"source": (filename, data)}
            if api.function(name) is None:
                resp = api.http.post(api.base + "/api/v1/functions",
                                     data={"name": name, **form}, files=files, timeout=60)
            else:
                resp = api.http.put(api.base + f"/api/v1/functions/{name}", data=form,
                                    files=files, timeout=60)
            if resp.status_code not in (200, 201):
                raise ScenarioError(f"deploying {name}: HTTP {resp.status_code} "
                                    f"{resp.text[:300]}")
        for stage in STAGES:
            self.fn = api.wait_ready(PREFIX + stage, timeout=400)
        self.function = PREFIX + "thumbnail"
        self.fn = api.wait_ready(self.function)
        rep.deployed = True
        rep.function = self.function
        rep.scaling = dict(self.fn["spec"].get("scaling", {}))
        rep.figures["deploy_to_ready_s"] = round(time.monotonic() - t, 3)
        rep.params["fixture"] = "imagepipe (4 functions)"

    def prepare(self) -> None:
        api = self.api
        assert api is not None
        body = {"name": WORKFLOW, "definition": definition()}
        resp = api.http.post(api.base + "/api/v1/workflows", json=body, timeout=api.timeout)
        if resp.status_code == 409:
            resp = api.http.put(api.base + f"/api/v1/workflows/{WORKFLOW}",
                                json={"definition": body["definition"]}, timeout=api.timeout)
        if resp.status_code not in (200, 201):
            raise ScenarioError(f"could not deploy the workflow: HTTP {resp.status_code} "
                                f"{resp.text[:300]}")
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in load_images(Path(tmp)).items():
                self.images[name] = json.dumps({
                    "name": name, "size": len(data),
                    "contentBase64": base64.b64encode(data).decode()})
        self.report.params["images"] = sorted(self.images)
        # Warm each function once so the first step measures the pipeline, not 4 cold starts.
        name = next(iter(self.images))
        resp = api.http.post(api.base + self.path, data=self.images[name], timeout=120,
                             headers={"Content-Type": "application/json"})
        if resp.status_code != 200 or resp.json().get("status") != "SUCCEEDED":
            raise ScenarioError(f"the warm-up execution failed: HTTP {resp.status_code} "
                                f"{resp.text[:300]}")

    def _sample_functions(self) -> None:
        assert self.api is not None and self.t0 is not None
        next_t = time.time()
        while True:
            t = time.time()
            for stage in STAGES:
                try:
                    fn = self.api.function(PREFIX + stage) or {}
                except (requests.RequestException, ScenarioError, ValueError):
                    self.sample_errors += 1
                    continue
                st = fn.get("status", {})
                self.by_function.setdefault(PREFIX + stage, []).append(
                    [round(t - self.t0, 3), st.get("readyReplicas", 0),
                     st.get("desiredReplicas", 0)])
            next_t += SAMPLE_INTERVAL
            gevent.sleep(max(0.0, next_t - time.time()))

    def run(self) -> None:
        p = self.p
        self._pipe_sampler = gevent.spawn(self._sample_functions)
        try:
            self.sending = True
            for users in p["steps"]:
                self.set_users(users)
                self.event(f"{users} user{'s' if users > 1 else ''}")
                gevent.sleep(p["hold_s"])
            self.sending = False
            self.event("load stops")
            deadline = time.monotonic() + 60
            while self.in_flight and time.monotonic() < deadline:
                gevent.sleep(0.1)
        finally:
            self._pipe_sampler.kill()

    def invoke_image(self, client: HttpSession) -> None:
        name = random.choice(sorted(self.images))
        self.in_flight += 1
        try:
            self._run_one(client, name)
        finally:
            self.in_flight -= 1

    def _run_one(self, client: HttpSession, image: str) -> None:
        with client.post(self.path, data=self.images[image], name="execution",
                         catch_response=True, headers={"Content-Type": "application/json"},
                         timeout=self.request_timeout) as resp:
            try:
                out = resp.json() if resp.status_code == 200 else None
            except ValueError:
                out = None
            if out is None:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            result = out.get("output") or {}
            if out.get("status") != "SUCCEEDED":
                resp.failure(f"{image}: execution {out.get('status')}: {out.get('error')}: "
                             f"{out.get('cause')}")
            elif len(result.get("labels", [])) != 2 or not result.get("files"):
                resp.failure(f"{image}: no labels or thumbnail in {json.dumps(result)[:200]}")

    def evaluate(self) -> list[Criterion]:
        rep = self.report
        lat = summarize([float(r[1]) for r in rep.records])
        peaks = {fn: max((int(s[1]) for s in rows), default=0)
                 for fn, rows in self.by_function.items()}
        rep.figures.update({
            "executions": len(rep.records),
            "execution_latency_ms": lat,
            "peak_ready_by_function": peaks,
            "replicas_by_function": self.by_function,
        })
        rep.figures["headline"] = (
            f"{len(rep.records)} pipeline executions at {p_steps(self.p)} users: p50 "
            f"{fmt_ms(lat['p50'])} ms, p95 {fmt_ms(lat['p95'])} ms; peak ready pods "
            + ", ".join(f"{fn.removeprefix(PREFIX)} {n}" for fn, n in peaks.items()))
        ran = Criterion("executions ran", bool(rep.records), len(rep.records), 1,
                        f"{len(rep.records)} executions ran (at least 1 wanted)")
        top = max(peaks.values(), default=0)
        scaled = Criterion("the pipeline scaled", top > 1, top, 2,
                           f"peak ready pods of a function: {top} (more than 1 wanted)")
        return [ran, no_failures(rep.records, "executions"), scaled]

    def _on_quitting(self, environment: Any, **kw: Any) -> None:
        """The base class writes the report and deletes ``lt-img-thumbnail``; the other
        three functions and the workflow go too (unless ``--keep``)."""
        done = self._quit
        super()._on_quitting(environment, **kw)
        if done or not self.report.deployed or getattr(self.opts, "keep", False):
            return
        assert self.api is not None
        try:
            for stage in STAGES:
                if PREFIX + stage != self.function:
                    self.api.delete(PREFIX + stage)
            self.api.http.delete(self.api.base + f"/api/v1/workflows/{WORKFLOW}",
                                 timeout=self.api.timeout)
        except (ScenarioError, requests.RequestException) as exc:
            log.warning("[%s] could not clean up: %s", self.name, exc)


def p_steps(p: dict[str, Any]) -> str:
    return "/".join(str(u) for u in p["steps"])


SCENARIO = ImagepipeLoad()


class Shape(ScenarioShape):
    scenario = SCENARIO


class ImagepipeUser(ScenarioUser):
    scenario = SCENARIO

    def work(self) -> None:
        SCENARIO.invoke_image(self.client)
