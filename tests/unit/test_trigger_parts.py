"""Trigger cores: debouncing, change classification, bounded reads, sink names, spec."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from allinone.clock import ManualClock
from allinone.objects import ValidationError
from allinone.triggers import files as fs
from allinone.triggers.debounce import Debouncer
from allinone.triggers.invoker import Answer, EngineWorkflows, MemoryInvoker, Targets
from allinone.triggers.journal import replay
from allinone.triggers.sink import SinkError, safe_name, write_result
from allinone.triggers.spec import normalize, retry_delay, retryable

# -- debouncing ------------------------------------------------------------------------


def test_a_burst_of_notifications_is_one_event() -> None:
    clock, d = ManualClock(), Debouncer(quiet=0.2, max_wait=5.0)
    for _ in range(10):  # created, modified x8, closed within 90 ms
        d.touch("a.png", clock.now())
        clock.advance(0.01)
    assert d.due(clock.now()) == []
    assert d.next_due() == pytest.approx(clock.now() - 0.01 + 0.2)
    clock.advance(0.2)
    assert d.due(clock.now()) == ["a.png"]
    assert d.due(clock.now() + 10) == [] and d.next_due() is None


def test_paths_are_debounced_independently_and_in_order() -> None:
    clock, d = ManualClock(), Debouncer(quiet=0.25)
    d.touch("b", clock.now())
    clock.advance(0.125)
    d.touch("a", clock.now())
    clock.advance(0.125)
    assert d.due(clock.now()) == ["b"]
    clock.advance(0.125)
    assert d.due(clock.now()) == ["a"]


def test_a_file_written_forever_is_still_examined_every_max_wait() -> None:
    clock, d = ManualClock(), Debouncer(quiet=0.2, max_wait=1.0)
    seen = []
    for _ in range(30):  # a touch every 0.1 s for 3 s
        d.touch("log", clock.now())
        clock.advance(0.1)
        seen += d.due(clock.now())
    assert len(seen) == 3


# -- classification and catch-up --------------------------------------------------------

A, B = fs.FileStat(10, 1), fs.FileStat(11, 2)


@pytest.mark.parametrize("seen,now,kind", [
    (None, A, "created"), (A, A, None), (A, B, "modified"), (A, None, "deleted"),
    (None, None, None),  # created and removed within one burst: nothing to say
])
def test_classify(seen: fs.FileStat | None, now: fs.FileStat | None, kind: str | None) -> None:
    assert fs.classify(seen, now) == kind


def test_catch_up_diff_finds_what_changed_while_stopped() -> None:
    seen = {"kept.png": A, "changed.png": A, "gone.png": A}
    current = {"kept.png": A, "changed.png": B, "new.png": B}
    assert fs.diff(seen, current) == [
        ("changed.png", "modified", B), ("gone.png", "deleted", A), ("new.png", "created", B)]


def test_replay_overlays_the_newest_record_of_each_path() -> None:
    """A crash between the record and the seen checkpoint loses nothing, repeats nothing."""
    def rec(path: str, size: int, exists: bool = True) -> dict[str, object]:
        return {"spec": {"file": {"path": path, "size": size, "mtimeNs": 5, "exists": exists}}}
    checkpoint: dict[str, fs.FileStat | None] = {"a": A, "b": A}
    records = [rec("a", 1), rec("c", 3), rec("a", 2), rec("b", 0, exists=False),
               {"spec": {"event": {"scheduledTime": "x"}}}]
    assert replay(checkpoint, records) == {"a": fs.FileStat(2, 5), "c": fs.FileStat(3, 5)}


def test_scan_matches_patterns_skips_links_and_respects_recursion(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.txt").write_bytes(b"y")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"zz")
    (tmp_path / "link.png").symlink_to("/etc/hostname")
    assert set(fs.scan(tmp_path, ["*.png"], recursive=False)) == {"a.png"}
    assert set(fs.scan(tmp_path, ["*.png"], recursive=True)) == {"a.png", "sub/c.png"}
    assert fs.scan(tmp_path, ["*.png"], True)["sub/c.png"].size == 2


def test_read_content_is_bounded_and_never_follows_links(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"hello")
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "secret").symlink_to("/etc/hostname")
    assert fs.read_content(tmp_path, "small", 100) == (base64.b64encode(b"hello").decode(), None)
    content, why = fs.read_content(tmp_path, "big", 100)
    assert content is None and why is not None and "over maxContentBytes (100)" in why
    content, why = fs.read_content(tmp_path, "secret", 100)
    assert content is None and why is not None and "symbolic link" in why
    assert fs.read_content(tmp_path, "missing", 100)[0] is None
    assert fs.stat_file(tmp_path, "secret") is None


# -- sink ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,safe", [
    ("thumb.png", "thumb.png"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("/abs/path.png", "_abs_path.png"),
    ("..", None),
    ("...", None),
    (".hidden", "hidden"),
    ("a\x00b\nc", "a_b_c"),
    ("dir\\evil.png", "dir_evil.png"),
    ("ünï cödé.png", "_n__c_d_.png"),
    ("x" * 500, "x" * 200),
    ("", None),
    ("///", None),
])
def test_safe_name(raw: str, safe: str | None) -> None:
    if safe is None:
        with pytest.raises(SinkError):
            safe_name(raw)
    else:
        out = safe_name(raw)
        assert out == safe and "/" not in out and not out.startswith(".")


def test_write_result_with_files(tmp_path: Path) -> None:
    b64 = base64.b64encode(b"PNGDATA").decode()
    result = {"label": "dark", "files": {"../cat.thumb.png": b64}}
    written = write_result(tmp_path, "cat.png", result)
    assert written == ["_cat.thumb.png", "cat.png.json"]
    assert (tmp_path / "_cat.thumb.png").read_bytes() == b"PNGDATA"
    doc = json.loads((tmp_path / "cat.png.json").read_text())
    assert doc == {"label": "dark",
                   "files": {"../cat.thumb.png": {"file": "_cat.thumb.png", "size": 7}}}
    assert sorted(os.listdir(tmp_path)) == ["_cat.thumb.png", "cat.png.json"]  # no temp left


def test_write_result_replaces_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    target = tmp_path / "outside"
    target.write_text("keep")
    sink = tmp_path / "sink"
    sink.mkdir()
    (sink / "r.json").symlink_to(target)
    write_result(sink, "r", {"ok": True})
    assert target.read_text() == "keep"
    assert not (sink / "r.json").is_symlink()


@pytest.mark.parametrize("result,message", [
    ({"files": "nope"}, "must be an object"),
    ({"files": {"a": 5}}, "base64 string"),
    ({"files": {"a": "!!!"}}, "not valid base64"),
    ({"files": {f"f{i}": "" for i in range(65)}}, "at most 64"),
    ({"files": {"a/b": "", "a_b": ""}}, "same name"),
    ({"files": {"r.json": ""}}, "overwrite the result JSON"),
])
def test_hostile_results_are_refused_before_anything_is_written(
        tmp_path: Path, result: dict[str, object], message: str) -> None:
    with pytest.raises(SinkError, match=message):
        write_result(tmp_path, "r", result)
    assert os.listdir(tmp_path) == []


# -- spec ------------------------------------------------------------------------------


def test_defaults_are_filled(tmp_path: Path) -> None:
    spec = normalize({"target": {"function": "f"}, "watch": {"path": str(tmp_path)}})
    assert spec == {"target": {"function": "f"},
                    "watch": {"path": str(tmp_path), "patterns": ["*"],
                              "events": ["created", "modified"], "recursive": False,
                              "maxContentBytes": 1048576},
                    "retry": {"maxAttempts": 3, "backoffSeconds": 1.0}}
    spec = normalize({"target": {"workflow": "w"}, "schedule": "*/5  * * * *"})
    assert spec["schedule"] == "*/5 * * * *" and spec["timezone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Allow" and spec["startingDeadlineSeconds"] is None


@pytest.mark.parametrize("spec,field", [
    ({"target": {"lambda": "f"}, "schedule": "@every 1s"}, "spec.target"),
    ({"target": {"function": "F!"}, "schedule": "@every 1s"}, "spec.target.function"),
    ({"target": {"function": "f", "workflow": "w"}, "schedule": "@every 1s"}, "spec.target"),
    ({"target": {"function": "f"}}, "exactly one source"),
    ({"target": {"function": "f"}, "schedule": "* * *"}, "spec.schedule"),
    ({"target": {"function": "f"}, "schedule": "* * * * *", "timezone": "X/Y"}, "spec.timezone"),
    ({"target": {"function": "f"}, "schedule": "@every 1s", "concurrencyPolicy": "Never"},
     "spec.concurrencyPolicy"),
    ({"target": {"function": "f"}, "schedule": "@every 1s", "startingDeadlineSeconds": -1},
     "spec.startingDeadlineSeconds"),
    ({"target": {"function": "f"}, "watch": {"path": "/nonexistent/inbox"}}, "spec.watch.path"),
    ({"target": {"function": "f"}, "watch": {"path": "relative"}}, "spec.watch.path"),
    ({"target": {"function": "f"}, "watch": {"path": "/etc"}}, "spec.watch.path"),
    ({"target": {"function": "f"}, "watch": {"path": "/proc/self"}}, "spec.watch.path"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP", "events": ["touched"]}},
     "spec.watch.events"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP", "patterns": ["a/b"]}},
     "spec.watch.patterns"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP", "maxContentBytes": 1 << 30}},
     "spec.watch.maxContentBytes"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP", "color": 1}}, "spec.watch"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP"}, "sink": {"directory": "/no/dir"}},
     "spec.sink.directory"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP"}, "sink": {"directory": "TMP"}},
     "spec.sink.directory"),
    ({"target": {"function": "f"}, "watch": {"path": "TMP"}, "timezone": "UTC"},
     "spec.timezone"),
    ({"target": {"function": "f"}, "schedule": "@every 1s", "retry": {"maxAttempts": 0}},
     "spec.retry.maxAttempts"),
    ({"target": {"function": "f"}, "schedule": "@every 1s", "extra": 1}, "unknown field"),
])
def test_bad_specs_name_the_field(tmp_path: Path, spec: dict[str, object], field: str) -> None:
    raw = json.dumps(spec).replace('"TMP"', json.dumps(str(tmp_path)))
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        normalize(json.loads(raw))


def test_the_server_state_dir_cannot_be_watched(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="system or server folder"):
        normalize({"target": {"function": "f"}, "watch": {"path": str(tmp_path / "x")}},
                  forbidden=[tmp_path], is_dir=lambda p: True)


@pytest.mark.parametrize("attempt,delay", [(1, 2.0), (2, 4.0), (3, 8.0), (4, None)])
def test_retry_backoff_is_exponential_and_bounded(attempt: int, delay: float | None) -> None:
    assert retry_delay({"maxAttempts": 4, "backoffSeconds": 2}, attempt) == delay
    assert retry_delay({"maxAttempts": 20, "backoffSeconds": 100}, 10) == 300.0


@pytest.mark.parametrize("status,again", [
    (500, True), (503, True), (504, True), (501, True), (404, True), (429, True),
    (400, False), (422, False), (413, False),
])
def test_which_answers_are_retried(status: int, again: bool) -> None:
    assert retryable(status) is again


class FakeEngine:
    def __init__(self, view: dict[str, object] | None) -> None:
        self.view = view
        self.started: list[tuple[str, object]] = []

    async def start_execution(self, workflow: str, execution_input: object, *,
                              wait: bool) -> dict[str, object]:
        assert wait
        self.started.append((workflow, execution_input))
        if self.view is None:
            raise LookupError(workflow)
        return self.view


@pytest.mark.parametrize("view,status,body", [
    ({"executionId": "e1", "status": "SUCCEEDED", "output": {"labels": ["dark"]}}, 200,
     {"labels": ["dark"]}),
    ({"executionId": "e2", "status": "FAILED", "error": "ImageTooLarge", "cause": "too big"},
     422, {"error": {"code": "ImageTooLarge",
                     "message": "execution e2 of 'pipe' ended FAILED: too big"}}),
    ({"executionId": "e3", "status": "TIMED_OUT", "error": "States.Timeout"}, 422,
     {"error": {"code": "States.Timeout", "message": "execution e3 of 'pipe' ended TIMED_OUT"}}),
    (None, 404, {"error": {"code": "NotFound", "message": "no workflow named 'pipe'; deploy "
                           "it with `allinone workflow deploy`"}}),
])
async def test_workflow_targets_start_one_execution_per_event(
        view: dict[str, object] | None, status: int, body: object) -> None:
    async def no_function(name: str, kwargs: dict[str, object]) -> Answer:
        raise AssertionError("a workflow target called a function")
    engine = FakeEngine(view)
    targets = Targets(MemoryInvoker(no_function), EngineWorkflows(engine))
    answer = await targets.call({"workflow": "pipe"}, {"name": "a.png"})
    assert (answer.status, json.loads(answer.body)) == (status, body)
    assert engine.started == [("pipe", {"name": "a.png"})]
