"""The dashboard in a real browser (Chromium): it shows what the API says, live.

Each test deploys through the API as a user would with the CLI, then reads the page.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
from importlib import resources
from typing import Any

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def cell(page: Any, fn: str, col: str) -> str:
    text: str = page.locator(f'tr[data-fn="{fn}"] td[data-col="{col}"]').inner_text()
    return text.strip()


def test_functions_table_shows_the_function_with_its_numbers(server: ServerProcess,
                                                             page: Any) -> None:
    assert server.deploy("add", FIXTURES / "add.py").status_code == 201
    page.goto(server.url + "/ui")
    page.wait_for_selector('tr[data-fn="add"]')
    # latency and rate cover the last 10 s: call while the page is watching
    for i in range(3):
        resp = server.invoke("add", {"x": i, "y": 1})
        assert resp.status_code == 200 and resp.json() == i + 1
    fn = server.get("add")
    assert cell(page, "add", "Phase") == "Ready"
    assert fn["status"]["image"].split("/", 1)[1].split("@")[0] in cell(page, "add", "Image")
    # a point is recorded every 2 s: wait for one that counts the three calls
    def point() -> dict[str, Any]:
        out: dict[str, Any] = server.http.get(server.url + "/api/v1/stats").json()[
            "functions"].get("add", {})
        return out
    wait_for(lambda: point().get("requests") == 3, 10, "the three calls counted")
    assert point()["coldStarts"] == 1
    wait_for(lambda: cell(page, "add", "Cold starts") == "1", 10, "one cold start shown")
    wait_for(lambda: cell(page, "add", "Ready") == str(server.get("add")["status"]
                                                       ["readyReplicas"]), 10, "ready pods")
    wait_for(lambda: cell(page, "add", "Desired") == str(server.get("add")["status"]
                                                         ["desiredReplicas"]), 10, "desired")

    def p50_shown() -> bool:
        # p50 covers the last 10 s, which the waits above may have outlasted: keep calling
        # while the page is watched, as a user watching a live function would see it.
        assert server.invoke("add", {"x": 1, "y": 1}).status_code == 200
        return cell(page, "add", "p50").endswith(" ms")
    wait_for(p50_shown, 20, "the p50 latency shown", interval=0.5)


def test_invoke_form_answers(server: ServerProcess, page: Any) -> None:
    if server.http.get(server.url + "/api/v1/functions/add").status_code == 404:
        assert server.deploy("add", FIXTURES / "add.py").status_code == 201
    page.goto(server.url + "/ui#/f/add")
    page.wait_for_selector("#invoke-form")
    page.fill("#invoke-body", json.dumps({"x": 20, "y": 22}))
    page.click("#invoke-form button")
    page.wait_for_selector('#invoke-result[data-status]')
    result = page.inner_text("#invoke-result")
    assert result.startswith("HTTP 200") and result.strip().endswith("42"), result
    page.fill("#invoke-body", json.dumps({"x": 1}))  # a missing argument: a 400 with the reason
    page.click("#invoke-form button")
    wait_for(lambda: page.get_attribute("#invoke-result", "data-status") == "400", 10,
             "the 400 of a bad call")
    assert "y" in page.inner_text("#invoke-result")


def pod_cells(page: Any, col: str) -> list[str]:
    """The column ``col`` of the function page's pods table, one cell per pod."""
    cells: list[str] = page.locator(f'#pods tr[data-pod] td[data-col="{col}"]').all_inner_texts()
    return [c.strip() for c in cells]


def function_get(server: ServerProcess, name: str) -> str:
    """``allinone function get NAME``'s output, the CLI run as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "allinone.cli", "--server", server.url,
                          "function", "get", name], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


# The curves are uPlot charts; the page keeps each instance in window.allinoneCharts by
# the chart's id. A series is found by its legend label; u.data[0] is the time axis.
_SERIES_JS = """([id, label]) => {
  const u = (window.allinoneCharts || {})[id];
  if (!u) return null;
  const i = u.series.findIndex((s, j) => j > 0 && s.label === label);
  return i < 0 ? null : {t: u.data[0], values: u.data[i]};
}"""


def curve(page: Any, chart: str, label: str) -> dict[str, list[Any]]:
    """The times and values of the series ``label`` of the uPlot chart ``chart``."""
    found: dict[str, list[Any]] | None = page.evaluate(_SERIES_JS, [chart, label])
    assert found is not None, f"no series {label!r} in the chart #{chart}"
    return found


def series(page: Any, chart: str, label: str) -> list[Any]:
    return curve(page, chart, label)["values"]


def chart_labels(page: Any, chart: str) -> list[str]:
    labels: list[str] = page.evaluate(
        "id => window.allinoneCharts[id].series.slice(1).map(s => s.label)", chart)
    return labels


def test_replica_curve_moves_under_load(server: ServerProcess, page: Any) -> None:
    spec = {"scaling": {"target": 1, "containerConcurrency": 1, "maxScale": 4,
                        "stableWindowSeconds": 6}}
    assert server.deploy("slow", FIXTURES / "sleep.py", spec=spec).status_code == 201
    page.goto(server.url + "/ui#/f/slow")
    page.wait_for_function("() => (window.allinoneCharts || {})['chart-replicas']")
    page.wait_for_selector("#chart-replicas canvas")
    assert max([v for v in series(page, "chart-replicas", "ready") if v is not None] or [0]) == 0
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            server.invoke("slow", {"ms": 300}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(load)
        try:
            wait_for(lambda: max([v or 0 for v in series(page, "chart-replicas", "ready")]
                                 or [0]) >= 2, 90, "the ready curve to reach 2 pods", 1.0)
            wait_for(lambda: max([v or 0 for v in series(page, "chart-rps", "req/s")]
                                 or [0]) > 0, 20, "the request rate curve to move", 1.0)
            # containerConcurrency 1 and four callers: a pod is busy most of the time,
            # and the page shows its one request in flight (the activator's count).
            wait_for(lambda: "1" in pod_cells(page, "In-flight"), 20, "a request in flight")
            table = function_get(server, "slow")
        finally:
            stop.set()
    assert set(pod_cells(page, "In-flight")) <= {"0", "1"}  # never above the limit
    assert set(pod_cells(page, "Restarts")) == {"0"}  # nothing crashed
    # `allinone function get`'s per-pod table, as a user sees it
    head, *rows = [line.split() for line in table.split("\n\n")[-1].splitlines()]
    assert head == ["POD", "PHASE", "AGE", "IN-FLIGHT", "CPU", "%", "MEMORY", "RESTARTS"]
    assert rows and all(r[0].startswith("slow-") and r[3] in ("0", "1") and r[-1] == "0"
                        for r in rows), table
    page.wait_for_selector('#pods tr[data-pod]')
    assert page.locator("#pods tr[data-pod]").count() >= 1
    # per-pod usage (psutil on the container's processes) in the API and on the page
    usage = wait_for(lambda: [p["status"]["usage"] for p in server.pods("slow")
                              if "usage" in p.get("status", {})], 10, "pods' status.usage")
    assert all(u["memoryBytes"] > 0 and u["cpuSeconds"] >= 0 for u in usage)
    wait_for(lambda: "MiB" in page.inner_text("#pods"), 10, "pod memory on the page")
    metrics = server.http.get(server.url + "/metrics").text
    assert 'allinone_pod_memory_bytes{function="slow"' in metrics


def test_status_bar_and_triggers_page(server: ServerProcess, page: Any) -> None:
    body = {"name": "tick", "spec": {"target": {"function": "add"}, "schedule": "@every 1h"}}
    resp = server.http.post(server.url + "/api/v1/triggers", json=body)
    assert resp.status_code in (201, 409), resp.text
    page.goto(server.url + "/ui#/triggers")
    page.wait_for_selector('tr[data-trigger="tick"]')
    row = page.inner_text('tr[data-trigger="tick"]')
    assert "schedule @every 1h" in row and "function/add" in row
    page.wait_for_selector("#health span.up")
    assert "etcd up" in page.inner_text("#health")


def test_workflows_page_draws_the_graph_and_the_last_path(server: ServerProcess,
                                                          page: Any) -> None:
    if server.http.get(server.url + "/api/v1/functions/add").status_code == 404:
        assert server.deploy("add", FIXTURES / "add.py").status_code == 201
    definition = {"StartAt": "Sum", "States": {
        "Sum": {"Type": "Task", "Resource": "add", "ResultPath": "$.sum", "Next": "Big?"},
        "Big?": {"Type": "Choice", "Choices": [
            {"Variable": "$.sum", "NumericGreaterThan": 10, "Next": "Big"}],
            "Default": "Small"},
        "Big": {"Type": "Succeed"}, "Small": {"Type": "Succeed"}}}
    resp = server.http.post(server.url + "/api/v1/workflows",
                            json={"name": "sizes", "definition": definition})
    assert resp.status_code in (201, 409), resp.text
    run = server.http.post(server.url + "/workflow/sizes", json={"x": 20, "y": 1}, timeout=60)
    assert run.status_code == 200 and run.json()["status"] == "SUCCEEDED", run.text
    page.goto(server.url + "/ui#/workflows")
    page.wait_for_selector('section[data-workflow="sizes"] rect[data-state="Small"]',
                           state="attached")
    fill = {s: page.get_attribute(f'section[data-workflow="sizes"] rect[data-state="{s}"]',
                                  "fill") for s in ("Sum", "Big?", "Big", "Small")}
    visited = "#d7e6ff"
    assert fill == {"Sum": visited, "Big?": visited, "Big": visited, "Small": "#fff"}
    assert "SUCCEEDED" in page.inner_text('section[data-workflow="sizes"]')


def test_charts_are_the_vendored_uplot_and_nothing_leaves_the_server(
        server: ServerProcess, page: Any) -> None:
    """Every request of every view goes to the server's own origin (no CDN), the
    vendored chart library is served from the package with its content type, and the
    function page's charts draw the stats API's numbers."""
    if server.http.get(server.url + "/api/v1/functions/add").status_code == 404:
        assert server.deploy("add", FIXTURES / "add.py").status_code == 201
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    assets = {}
    page.on("response", lambda resp: assets.__setitem__(resp.url, resp.headers))
    for view, heading in (("#/", "Functions"), ("#/workflows", "Workflows"),
                          ("#/triggers", "Triggers"), ("#/f/add", "Functions / add")):
        page.goto(server.url + "/ui" + view)
        page.wait_for_function("h => (document.querySelector('#view h2') || {}).innerText"
                               "?.startsWith(h)", arg=heading)
    page.wait_for_function("() => (window.allinoneCharts || {})['chart-latency']")
    foreign = [u for u in requested if not u.startswith(server.url + "/")
               and not u.startswith("data:")]
    assert foreign == [], f"the page asked another origin: {foreign}"
    js = server.url + "/ui/static/vendor/uplot/uPlot.iife.min.js"
    css = server.url + "/ui/static/vendor/uplot/uPlot.min.css"
    assert js in requested and css in requested
    assert assets[js]["content-type"].startswith("text/javascript")
    assert assets[css]["content-type"].startswith("text/css")
    shipped = resources.files("allinone.ui") / "static" / "vendor" / "uplot"
    resp = server.http.get(js)
    assert resp.status_code == 200
    assert resp.content == (shipped / "uPlot.iife.min.js").read_bytes()
    # uPlot's documented statics are there (the page's global is the vendored library)
    assert page.evaluate("['rangeNum', 'fmtDate', 'sync'].every(f => typeof uPlot[f] === "
                         "'function') && typeof uPlot.paths.spline === 'function'")
    for bad in ("vendor/uplot/README.md", "vendor%2F..%2Fapp.js", "vendor/uplot",
                "..%2F__init__.py"):
        assert server.http.get(server.url + "/ui/static/" + bad).status_code == 404, bad
    # the same curves as before, each on a canvas
    assert chart_labels(page, "chart-replicas") == ["desired", "ready"]
    assert chart_labels(page, "chart-concurrency") == ["stable", "panic"]
    assert chart_labels(page, "chart-latency") == ["p50", "p95"]
    assert chart_labels(page, "chart-rps") == ["req/s"]
    for chart in ("chart-replicas", "chart-concurrency", "chart-latency", "chart-rps"):
        assert page.locator(f"#{chart} canvas").count() == 1
    # the chart holds the stats API's points (those still in both: the page polls)
    api = {p["t"]: p for p in server.http.get(
        server.url + "/api/v1/stats/functions/add").json()["points"]}
    ready = curve(page, "chart-replicas", "ready")
    common = [(t, v) for t, v in zip(ready["t"], ready["values"], strict=True) if t in api]
    assert common and all(api[t]["ready"] == v for t, v in common), (common, api)
