"""The example workflows in fixtures/workflows/ are valid and do what the README says,
run here over their own functions (imported from the fixture files) and a fake invoker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from allinone.clock import ManualClock
from allinone.workflows.interpreter import Interpreter
from allinone.workflows.invoker import FakeInvoker
from allinone.workflows.validate import validate

DIR = Path(__file__).resolve().parents[2] / "fixtures" / "workflows"


def functions() -> dict[str, Any]:
    out = {}
    for path in (DIR / "functions").glob("*.py"):
        spec = importlib.util.spec_from_file_location(f"wf_fixture_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out[path.stem] = mod.run
    return out


class Sink:
    async def event(self, event: dict[str, Any]) -> None:
        pass

    async def transition(self, state: str, data: Any, wait_until: float | None) -> None:
        pass


async def run(definition: dict[str, Any], data: Any) -> Any:
    validate(definition)
    interp = Interpreter(definition, FakeInvoker(functions()), ManualClock(), Sink(),
                         execution_id="e")
    return await interp.run(data)


async def test_chain_and_choice() -> None:
    d = json.loads((DIR / "chain-and-choice.json").read_text())
    assert (await run(d, {"n": 2})).output == {"size": "small", "n": 9}
    assert (await run(d, {"n": 7})).output == {"size": "big", "n": 64}
    out = await run(d, {"n": -1})
    assert (out.status, out.error) == ("FAILED", "NotPositive")


async def test_fan_out() -> None:
    d = json.loads((DIR / "fan-out.json").read_text())
    assert (await run(d, {"n": 1})).output == {"n": 2, "results": [3, 3, 3]}
    out = await run(d, {"n": -1})
    assert (out.status, out.error) == ("FAILED", "NotPositive")


async def test_orders() -> None:
    d = yaml.safe_load((DIR / "orders.yaml").read_text())
    order = {"order": "o-1", "flaky": 2,
             "lines": [{"sku": "apple", "qty": 2}, {"sku": "fig", "qty": 1}]}
    out = await run(d, order)
    assert out.output == {"order": "o-1", "lines": 2, "totals": [240, 250],
                          "message": "order o-1 reserved after 3 attempt(s)"}
    bad = {**order, "order": "o-2", "lines": [{"sku": "durian", "qty": 1}]}
    out = await run(d, bad)
    assert out.output == {"order": "o-2", "rejected": "KeyError", "why": "'durian'"}
