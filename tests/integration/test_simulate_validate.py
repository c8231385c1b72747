"""The simulator against the real platform: calibrate, then --validate a 2-minute trace.

The agreement bounds are the issue's: cold starts and peak pods within 10 %, p50 latency
within 20 %, on the trace's totals. They are not loosened when the machine is slow: the
model is calibrated on this machine first, so a miss is a finding about the simulator
(or about how far this machine's start times drift within minutes: the output also
gives the replay's own pod start times and what the simulation says with them).

The trace's two functions test different things. ``val-a`` (2 rps, 100 ms, in two
40 s bursts from zero) is mostly warm: its cold starts test the scaling decisions at
zero and its median tests that warm requests find warm pods (are not queued behind the
starts beside them) and cost what calibrate measured. ``val-b`` (10 at once at zero,
three times) is all cold: its latencies test the start model. The total's median must
not sit on the knee between the two modes: with 20 s bursts (110 requests, ~49 cold)
it was the 55th request, where a few slow warm requests on a loaded machine moved it
from the warm mode (~140 ms) to the cold one (355 ms) and the figure measured nothing.
With 40 s bursts it is the 95th of 190 with 34-43 cold: inside the warm mode. The cold
mode is still compared, per function (``val-b``) and by the p95 the table prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone.cli import main as allinone
from allinone.simulator.trace import Trace
from allinone.testing import ServerProcess, wait_for

# Not in the integration run that CI makes (tox -e integration deselects `validation`):
# it takes minutes, and its agreement is a measured finding about the simulator, not yet
# a promise (BENCHMARKS.md: p50 within 2 %; cold starts 2-21 % off, as the node's start
# time during the replay strays from the one calibrated a minute before). Run it with
# `tox -e validation`.
pytestmark = [pytest.mark.integration, pytest.mark.validation]

# Created standbys: calibrate measures container starts (a frozen standby's resume is
# the model's unpause_ms), and the simulation models the server's --standby.
SPEC = {"scaling": {"containerConcurrency": 1, "maxScale": 4, "stableWindowSeconds": 6,
                    "scaleToZeroGracePeriodSeconds": 2}, "standby": "created"}


@pytest.fixture(scope="module")
def server2s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The production tick (2 s), which the simulation uses too.
    with ServerProcess(Path(tmp_path_factory.mktemp("allinone-sim")), tick=2.0,
                       extra_args=("--standby", "created")) as srv:
        yield srv


def two_minute_trace() -> Trace:
    rows: list[tuple[str, float, float]] = []
    for start in (0.0, 60.0):  # val-a: 2 rps for 40 s, then 20 s of silence, twice
        rows += [("val-a", start + 0.5 * k, 0.1) for k in range(80)]
    for at in (5.0, 50.0, 95.0):  # val-b: 10 at once at zero, three times
        rows += [("val-b", at, 0.3)] * 10
    return Trace.from_rows(rows)


def test_validate_agrees_with_the_real_platform(server2s: ServerProcess, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    token = server2s.token()
    model = tmp_path / "model.json"
    assert allinone(["simulate", "calibrate", "--server", server2s.url, "--token", token,
                     "--trials", "3", "-o", str(model)]) == 0
    calibrated = json.loads(model.read_text())
    assert calibrated["measured"]["trials"] == 3
    trace = tmp_path / "trace.csv"
    two_minute_trace().write_csv(trace)
    out = tmp_path / "validation"
    code = allinone(["simulate", "--validate", str(trace), "--spec", json.dumps(SPEC),
                     "--runtime-model", str(model), "--server", server2s.url,
                     "--token", token, "-o", str(out)])
    printed = capsys.readouterr().out
    print(printed)  # the table, for the issue note (-s)
    assert code == 0
    data = json.loads((out / "validation.json").read_text())
    total = next(r for r in data["rows"] if r["function"] == "total")
    assert total["real"]["failed"] == 0
    err = total["relative_error"]
    assert err["cold_starts"] <= 0.10, total
    assert err["peak_pods"] <= 0.10, total
    assert err["p50"] <= 0.20, total
    wait_for(lambda: server2s.containers() == [], 60, "the validation's pods to go")
