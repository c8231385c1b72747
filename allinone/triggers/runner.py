"""Trigger runners: the thin loops around the pure cores, one asyncio task per trigger.

:class:`TriggerManager` follows ``/allinone/triggers/`` with an informer and keeps one
runner per trigger: started when it appears, restarted when its spec changes (a new
``generation``) or it is re-created (a new ``uid``), stopped and its records removed
when it is deleted. A runner that crashes is logged, its error shown in the trigger's
``status.lastError``, and restarted after a back-off: one bad trigger never stops the
others.

- :class:`ScheduleRunner` steps :func:`~allinone.triggers.schedule.step` at each
  scheduled time, and whenever a run ends (for ``Forbid``'s held time).
- :class:`WatchRunner` feeds watchdog (inotify) notifications through the
  :class:`~allinone.triggers.debounce.Debouncer`, classifies each quiet path against the
  seen-set, and at start delivers what changed while the server was down
  (a scan against the replayed seen-set). A full rescan every ``RESCAN_SECONDS`` is the
  safety net for notifications the kernel drops (queue overflow).

Delivery (:meth:`_Runner.deliver`): the record is written ``Pending`` first, then the
target is called through :class:`~allinone.triggers.invoker.Targets` with retries
per ``spec.retry``, then the result goes to the sink, then the outcome is recorded on
the record, on the trigger's status and in /metrics. ``Pending`` records found at start
are delivered again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.clock import Clock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store import NotFound, Obj, Store, StoreError
from allinone.triggers import files as fs
from allinone.triggers import sink as sinks
from allinone.triggers.debounce import Debouncer
from allinone.triggers.invoker import Targets
from allinone.triggers.journal import (
    FAILED,
    MISSED,
    PENDING,
    REPLACED,
    SUCCEEDED,
    Journal,
    replay,
    update_with_retry,
)
from allinone.triggers.schedule import Policy, ScheduleState, parse_schedule, step
from allinone.triggers.spec import (
    EVENTS_PREFIX,
    SEEN_PREFIX,
    TRIGGERS_PREFIX,
    retry_delay,
    retryable,
    trigger_key,
)

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8          # concurrent deliveries of one watch trigger
RESCAN_SECONDS = 30.0
MAX_ERROR = 500            # characters of an error kept in records and status


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR] + "..."


def _error_of(status: int, body: bytes) -> str:
    try:
        err = json.loads(body)["error"]
        return _short(f"HTTP {status} {err.get('code', '')}: {err.get('message', '')}")
    except (ValueError, KeyError, TypeError):
        return _short(f"HTTP {status}: {body[:200].decode(errors='replace')}")


class _Runner:
    def __init__(self, mgr: TriggerManager, trigger: Obj) -> None:
        self.mgr = mgr
        self.trigger = trigger
        self.name: str = trigger["metadata"]["name"]
        self.uid: str = trigger["metadata"]["uid"]
        self.generation: int = trigger["metadata"].get("generation", 1)
        self.spec: Obj = trigger["spec"]
        self.active: dict[asyncio.Task[None], Obj] = {}
        self.changed = asyncio.Event()     # a delivery ended, or files were touched
        self.ready = asyncio.Event()       # started: caught up with what happened while down
        self.task: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._supervise(),
                                                           name=f"trigger-{self.name}")

    async def stop(self) -> None:
        tasks = [t for t in (self.task, *self.active) if t is not None]
        for t in tasks:
            # Again until done: code outside ours (a library awaiting a lock) may absorb
            # one cancellation.
            while not t.done():
                t.cancel()
                await asyncio.wait({t}, timeout=1.0)
        self.close()

    def close(self) -> None:
        """Release what the runner holds outside asyncio (watches)."""

    async def _supervise(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("trigger %s failed; restarting in %.0f s", self.name, backoff)
                with contextlib.suppress(Exception):
                    await self.set_status(lastError=_short(f"the trigger's runner failed: {exc}"))
                self.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def run(self) -> None:
        raise NotImplementedError

    async def pause(self, seconds: float) -> None:
        """Until ``changed`` is set or ``seconds`` pass. ``asyncio.timeout``, not
        ``wait_for``: in 3.11 ``wait_for`` can swallow a cancellation that arrives as the
        event is set, and a stopped runner would then go on."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self.changed.wait()

    # -- status ------------------------------------------------------------------------

    async def set_status(self, incr: dict[str, int] | None = None, **values: Any) -> None:
        def change(o: Obj) -> None:
            if o["metadata"]["uid"] != self.uid:
                raise NotFound(self.name)
            st = o.setdefault("status", {})
            for k, n in (incr or {}).items():
                st[k] = int(st.get(k, 0)) + n
            st.update(values)
        try:
            await update_with_retry(self.mgr.store, trigger_key(self.name), change)
        except NotFound:
            pass  # deleted: the manager stops this runner

    # -- delivery ------------------------------------------------------------------------

    def event_input(self, rec: Obj) -> dict[str, Any]:
        return dict(rec["spec"]["event"])

    def sink_name(self, rec: Obj) -> str:
        ev = rec["spec"]["event"]
        when = ev.get("scheduledTime", rec["metadata"]["name"])
        return str(ev.get("name") or f"{self.name}-{when}")

    def spawn(self, rec: Obj) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self.deliver(rec))
        self.active[task] = rec

        def done(t: asyncio.Task[None]) -> None:
            self.active.pop(t, None)
            self.changed.set()
        task.add_done_callback(done)
        return task

    async def deliver(self, rec: Obj) -> None:
        mgr = self.mgr
        clock = mgr.clock
        fired = clock.wall()
        attempt, phase, error, http_status = 0, FAILED, "", 0
        latency = 0.0
        written: list[str] = []
        try:
            while True:
                attempt += 1
                event = await asyncio.to_thread(self.event_input, rec)
                t0 = time.perf_counter()
                answer = await mgr.targets.call(self.spec["target"], event)
                latency = time.perf_counter() - t0
                http_status = answer.status
                if answer.status == 200:
                    phase, error = SUCCEEDED, ""
                    if self.spec.get("sink"):
                        try:
                            result = json.loads(answer.body)
                            written = await asyncio.to_thread(
                                sinks.write_result, Path(self.spec["sink"]["directory"]),
                                self.sink_name(rec), result)
                        except (ValueError, sinks.SinkError) as exc:
                            # The function ran: running it again would not fix its output.
                            phase, error = FAILED, _short(f"sink: {exc}")
                    break
                error = _error_of(answer.status, answer.body)
                if not retryable(answer.status):
                    break
                delay = retry_delay(self.spec.get("retry", {}), attempt)
                if delay is None:
                    break
                await clock.sleep(delay)
        except asyncio.CancelledError:
            # Replaced (concurrencyPolicy) or the trigger is stopping: a stop leaves the
            # record Pending so that the next start delivers it again.
            if rec.get("_replaced"):
                await asyncio.shield(self._finish(rec, REPLACED, attempt, http_status, latency,
                                                  "replaced by a newer scheduled run", [],
                                                  fired))
            raise
        except Exception as exc:
            log.exception("delivery of %s/%s failed", self.name, rec["metadata"]["name"])
            phase, error = FAILED, _short(f"delivery failed: {exc}")
        await self._finish(rec, phase, attempt, http_status, latency, error, written, fired)

    async def _finish(self, rec: Obj, phase: str, attempts: int, http_status: int,
                      latency: float, error: str, written: list[str], fired: float) -> None:
        mgr = self.mgr
        total = mgr.clock.wall() - fired
        mgr.metrics.trigger_latency.labels(self.name).observe(total)
        if phase != SUCCEEDED:
            mgr.metrics.trigger_failures.labels(self.name).inc()
        await mgr.journal.finish(
            rec, phase=phase, attempts=attempts, httpStatus=http_status,
            latencySeconds=round(latency, 6), error=error,
            startTime=objects.rfc3339(fired), finishTime=objects.rfc3339(mgr.clock.wall()),
            **({"sink": written} if written else {}))
        await self.set_status(incr={"failures": 1} if phase != SUCCEEDED else None,
                              lastStatus=phase, lastError=error)
        self.mgr.recorded(self.name)

    async def fire(self, event: dict[str, Any], file: dict[str, Any] | None = None,
                   incr: dict[str, int] | None = None, status: dict[str, Any] | None = None
                   ) -> asyncio.Task[None]:
        """Journal an event, count it (with other status changes) and start its delivery."""
        now = self.mgr.clock.wall()
        rec = await self.mgr.journal.create(self.trigger, now, event, file)
        self.mgr.metrics.trigger_fires.labels(self.name).inc()
        await self.set_status(incr={"fires": 1, **(incr or {})},
                              lastFireTime=objects.rfc3339(now), **(status or {}))
        return self.spawn(rec)

    async def redeliver(self, records: list[Obj]) -> None:
        for rec in records:
            if rec["status"].get("phase") == PENDING:
                log.info("trigger %s: delivering %s again (the server stopped during it)",
                         self.name, rec["metadata"]["name"])
                self.spawn(rec)


class ScheduleRunner(_Runner):
    async def run(self) -> None:
        spec, clock = self.spec, self.mgr.clock
        schedule = parse_schedule(spec["schedule"], spec.get("timezone"))
        policy = Policy(spec.get("concurrencyPolicy", "Allow"),
                        spec.get("startingDeadlineSeconds"))
        st = self.trigger.get("status", {})
        records = await self.mgr.journal.list(self.name, self.uid)
        # The newest scheduled time journaled counts even if the status write after it
        # was lost: the record is written first.
        last = objects.parse_rfc3339(st.get("lastScheduleTime")
                                     or self.trigger["metadata"]["creationTimestamp"])
        for rec in records:
            t = rec["spec"]["event"].get("scheduledTime")
            if t:
                last = max(last, objects.parse_rfc3339(t))
        pending = st.get("pendingScheduleTime")
        state = ScheduleState(last, objects.parse_rfc3339(pending) if pending else None)
        await self.redeliver(records)
        self.ready.set()
        while True:
            now = clock.wall()
            s = step(schedule, policy, state, now, running=bool(self.active))
            if s.replace:
                for task, rec in list(self.active.items()):
                    rec["_replaced"] = True
                    task.cancel()
            if s.missed:
                self.mgr.metrics.trigger_missed.labels(self.name).inc(s.missed)
                await self.mgr.journal.create(
                    self.trigger, now, {"trigger": self.name, "missed": s.missed,
                                        "latestScheduledTime": objects.rfc3339(s.state.last)},
                    phase=MISSED, status={"error": f"{s.missed} scheduled time(s) skipped"})
                self.mgr.recorded(self.name)
            pend = s.state.pending
            new_st = {"lastScheduleTime": objects.rfc3339(s.state.last),
                      "pendingScheduleTime": objects.rfc3339(pend) if pend else None,
                      "nextFireTime": objects.rfc3339(s.wake)}
            incr = {"missed": s.missed} if s.missed else None
            if s.fire is not None:
                await self.fire({"trigger": self.name, "scheduledTime": objects.rfc3339(s.fire),
                                 "firedTime": objects.rfc3339(now)}, incr=incr, status=new_st)
            elif any(st.get(k) != v for k, v in new_st.items()) or s.missed:
                await self.set_status(incr=incr, **new_st)
            st = new_st
            state = s.state
            self.changed.clear()
            await self.pause(s.wake - clock.wall())


class WatchRunner(_Runner):
    def __init__(self, mgr: TriggerManager, trigger: Obj) -> None:
        super().__init__(mgr, trigger)
        w = self.spec["watch"]
        self.root = Path(w["path"])
        self.patterns: list[str] = w["patterns"]
        self.events: list[str] = w["events"]
        self.recursive: bool = w["recursive"]
        self.limit: int = w["maxContentBytes"]
        self.debouncer = Debouncer(mgr.debounce_quiet, mgr.debounce_max_wait)
        self.seen: dict[str, fs.FileStat] = {}
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.rescan_requested = False
        self._watch: Any = None

    def close(self) -> None:
        if self._watch is not None:
            self.mgr.unwatch(self._watch)
            self._watch = None

    def event_input(self, rec: Obj) -> dict[str, Any]:
        """The event as the target gets it: the file's content read now, bounded."""
        ev = dict(rec["spec"]["event"])
        if ev["event"] != fs.DELETED:
            content, why = fs.read_content(self.root, rec["spec"]["file"]["path"], self.limit)
            if content is not None:
                ev["contentBase64"] = content
            else:
                ev["contentOmitted"] = why
        return ev

    def touched(self, path: str, is_dir: bool) -> None:
        """From the watchdog thread via call_soon_threadsafe."""
        if is_dir:
            # A folder moved in or out brings files without a notification of their own.
            self.rescan_requested = self.recursive or self.rescan_requested
        else:
            try:
                rel = Path(path).relative_to(self.root).as_posix()
            except ValueError:
                return
            if not fs.matches(Path(rel).name, self.patterns):
                return
            if not self.recursive and "/" in rel:
                return
            self.debouncer.touch(rel, self.mgr.clock.now())
        self.changed.set()

    async def emit(self, rel: str, kind: str, st: fs.FileStat | None) -> None:
        """Journal (when subscribed) and checkpoint one change, then deliver it."""
        if kind in self.events and st is not None:
            name = Path(rel).name
            event = {"trigger": self.name, "event": kind, "path": str(self.root / rel),
                     "name": name, "size": st.size,
                     "modified": objects.rfc3339(st.mtime_ns / 1e9)}
            file = {"path": rel, "size": st.size, "mtimeNs": st.mtime_ns,
                    "exists": kind != fs.DELETED}
            await self.slots.acquire()
            try:
                task = await self.fire(event, file)
            except BaseException:
                self.slots.release()
                raise
            task.add_done_callback(lambda _: self.slots.release())
        now_st = None if kind == fs.DELETED else st
        if now_st is None:
            self.seen.pop(rel, None)
        else:
            self.seen[rel] = now_st
        await self.mgr.journal.put_seen(self.trigger, rel, now_st)

    async def rescan(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            # Unmounted or removed: reporting every file as deleted (and as created again
            # when it is back) would be wrong; the supervisor restarts the runner, which
            # waits for the folder.
            raise RuntimeError(f"watch.path {self.root} is gone")
        current = await asyncio.to_thread(fs.scan, self.root, self.patterns, self.recursive)
        for rel, kind, st in fs.diff(self.seen, current):
            await self.emit(rel, kind, st)

    async def run(self) -> None:
        clock = self.mgr.clock
        while not await asyncio.to_thread(self.root.is_dir):
            await self.set_status(lastError=f"watch.path {self.root} is not a directory; "
                                            "waiting for it to appear")
            await asyncio.sleep(5.0)
        # Watch first, then scan: a file written in between is seen twice and classified
        # once against the seen-set, never missed.
        self._watch = await self.mgr.watch(self.root, self.recursive, self)
        records = await self.mgr.journal.list(self.name, self.uid)
        checkpoint = await self.mgr.journal.load_seen(self.name, self.uid)
        self.seen = replay(dict(checkpoint), records)
        for rel, st in self.seen.items():
            if checkpoint.get(rel) != st:  # the checkpoint write was lost: redo it
                await self.mgr.journal.put_seen(self.trigger, rel, st)
        for rel in set(checkpoint) - set(self.seen):
            await self.mgr.journal.put_seen(self.trigger, rel, None)
        await self.redeliver(records)
        await self.rescan()
        self.ready.set()
        next_rescan = clock.now() + RESCAN_SECONDS
        while True:
            if self.rescan_requested or clock.now() >= next_rescan:
                self.rescan_requested = False
                next_rescan = clock.now() + RESCAN_SECONDS
                await self.rescan()
            for rel in self.debouncer.due(clock.now()):
                cur = await asyncio.to_thread(fs.stat_file, self.root, rel)
                kind = fs.classify(self.seen.get(rel), cur)
                if kind is not None:
                    await self.emit(rel, kind, cur or self.seen.get(rel))
            due = self.debouncer.next_due()
            wake = min(due if due is not None else next_rescan, next_rescan)
            self.changed.clear()
            await self.pause(wake - clock.now())


class TriggerManager:
    def __init__(self, store: Store, clock: Clock, targets: Targets, metrics: Metrics,
                 debounce_quiet: float = 0.1, debounce_max_wait: float = 5.0) -> None:
        self.store = store
        self.clock = clock
        self.targets = targets
        self.metrics = metrics
        self.journal = Journal(store)
        self.debounce_quiet = debounce_quiet
        self.debounce_max_wait = debounce_max_wait
        self.informer = Informer(store, TRIGGERS_PREFIX)
        self.runners: dict[str, _Runner] = {}
        self._dirty = asyncio.Event()
        self._counts: dict[str, int] = {}
        self.informer.add_handler(lambda key, old, new: self._dirty.set())

    # -- file watching: a watchdog observer per watch trigger ---------------------------

    async def watch(self, root: Path, recursive: bool, runner: WatchRunner) -> Any:
        """Start watching; notifications reach ``runner.touched`` on the event loop."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p:
                        loop.call_soon_threadsafe(runner.touched, os.fsdecode(p),
                                                  event.is_directory)

        def start() -> Any:
            observer = Observer()
            observer.daemon = True
            observer.schedule(Handler(), str(root), recursive=recursive)
            observer.start()
            return observer
        return await asyncio.to_thread(start)

    def unwatch(self, observer: Any) -> None:
        with contextlib.suppress(Exception):
            observer.stop()  # its threads are daemons and end on their own

    # -- reconciling runners with the triggers in the store -------------------------------

    def recorded(self, name: str) -> None:
        """A record was finished: prune the history now and then, not on every write."""
        n = self._counts[name] = self._counts.get(name, 0) + 1
        if n % 20 == 0:
            asyncio.get_running_loop().create_task(self._prune(name))

    async def _prune(self, name: str) -> None:
        try:
            await self.journal.prune(name)
        except StoreError as exc:
            log.warning("pruning the history of trigger %s failed: %s", name, exc)

    async def _sync(self) -> None:
        wanted = {o["metadata"]["name"]: o for o in self.informer.items()}
        for name, runner in list(self.runners.items()):
            obj = wanted.get(name)
            if obj is None or obj["metadata"]["uid"] != runner.uid or \
                    obj["metadata"].get("generation", 1) != runner.generation:
                del self.runners[name]
                await runner.stop()
                if obj is None or obj["metadata"]["uid"] != runner.uid:
                    keep = obj["metadata"]["uid"] if obj is not None else None
                    await self.journal.delete_all(name, keep_uid=keep)
                    self.metrics.forget_trigger(name)
                    self._counts.pop(name, None)
        for name, obj in wanted.items():
            if name not in self.runners:
                cls = ScheduleRunner if "schedule" in obj["spec"] else WatchRunner
                try:
                    runner = cls(self, obj)
                except (KeyError, TypeError, ValueError) as exc:
                    # A malformed object (written by hand or an older version) must not
                    # stop the other triggers; it is retried when it changes.
                    log.error("trigger %s has an unusable spec (%r); skipped", name, exc)
                    continue
                self.runners[name] = runner
                runner.start()

    async def _collect_orphans(self) -> None:
        """Records and seen entries of triggers deleted while the server was down."""
        live = {o["metadata"]["name"]: o["metadata"]["uid"] for o in self.informer.items()}
        for prefix in (EVENTS_PREFIX, SEEN_PREFIX):
            items, _ = await self.store.list(prefix)
            for o in items:
                owner = str(o["spec"].get("trigger", ""))
                if live.get(owner) != o["spec"].get("triggerUid"):
                    with contextlib.suppress(NotFound):
                        await self.store.delete(f"{prefix}{owner}/{o['metadata']['name']}")

    async def run(self) -> None:
        informer = asyncio.get_running_loop().create_task(self.informer.run())
        try:
            await self.informer.synced.wait()
            try:
                await self._collect_orphans()
            except StoreError as exc:
                log.warning("collecting records of deleted triggers failed: %s", exc)
            while True:
                self._dirty.clear()
                try:
                    await self._sync()
                except StoreError as exc:
                    log.warning("trigger sync failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    self._dirty.set()
                await self._dirty.wait()
        finally:
            informer.cancel()
            for runner in list(self.runners.values()):
                await runner.stop()
            self.runners.clear()
