"""The etcd store: the one module of allinone that talks to etcd (through ``aetcd``).

It implements :class:`allinone.store.base.Store` with etcd's own primitives, so the
guarantees come from etcd and not from this process:

- Values are JSON (see :func:`~allinone.store.memory.encode_object`, shared with the
  in-memory twin); ``resourceVersion`` is never stored, it is the key's mod revision
  and is filled in on every read.
- ``create`` is a transaction on ``version(key) == 0``; ``update`` on
  ``version(key) > 0 and mod_revision(key) == resourceVersion``; ``delete`` on the key
  existing (and, when asked, on its mod revision). The ``version > 0`` guard matters:
  a missing key has mod revision 0, so without it an update sent with
  ``resourceVersion "0"`` would silently create the key. Each write transaction reads
  the key back in the same transaction: on success that gives the new mod revision, on
  failure it tells NotFound from Conflict without a second, racy round trip.
- ``watch(prefix, r)`` asks etcd for events from ``r + 1`` with ``prev_kv`` (so a
  DELETE carries the last object). When the stream breaks, because etcd restarted or
  the connection dropped, the watch re-subscribes from the revision after the last one
  it delivered, retrying with a short capped backoff, so consumers see every change
  exactly once across an outage. If etcd compacted that revision meanwhile, or etcd
  came back with an older revision (its data was reset), the watch raises
  :class:`StoreError`: the consumer must list again.
- Connection failures and deadlines surface as :class:`Unavailable`, so callers can
  tell "etcd is down" from a bad request. Every unary call has a deadline
  (``call_timeout``), so a hung etcd cannot hang a caller.
- ``close`` ends every watch cleanly (their iterators stop) and later calls raise
  :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.utils

from allinone.store.base import (
    AlreadyExists,
    Conflict,
    NotFound,
    Obj,
    StoreError,
    Unavailable,
    WatchEvent,
)
from allinone.store.memory import (
    decode_listed,
    decode_object,
    encode_object,
    parse_resource_version,
)

__all__ = ["EtcdStore"]

log = logging.getLogger(__name__)

# gRPC channel options. gRPC's default reconnect backoff grows to two minutes, which
# would leave us disconnected long after a restarted etcd is back; cap it at a second.
# Keepalive pings on open calls detect an etcd that hangs without closing the socket
# (etcd accepts pings every 5 s or slower while a stream is open).
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    # A list of many objects can exceed gRPC's default 4 MiB receive limit.
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
}

# Re-subscribing a broken watch: 50 ms, doubling, at most 1 s between attempts.
_WATCH_BACKOFF_FIRST = 0.05
_WATCH_BACKOFF_MAX = 1.0

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    TimeoutError,
    ConnectionError,
)


# Errors a retry cannot fix: the watch request itself is wrong or not allowed.
_FATAL_WATCH_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.InvalidArgumentError,
    aetcd.exceptions.UnauthenticatedError,
    aetcd.PreconditionFailedError,
)


def _parse_url(url: str) -> tuple[str, int]:
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"etcd URL {url!r}: only http:// endpoints are supported")
    if not parts.hostname:
        raise ValueError(f"etcd URL {url!r} has no host; use e.g. http://127.0.0.1:2379")
    return parts.hostname, parts.port or 2379


def _key_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key starting with ``prefix``."""
    if not prefix:
        # "\0" to "\0" is etcd's spelling of "all keys".
        return b"\0", b"\0"
    start = prefix.encode()
    return start, aetcd.utils.prefix_range_end(start)


class EtcdStore:
    """A :class:`~allinone.store.base.Store` over one etcd endpoint.

    Build it with ``await EtcdStore.connect(url)``, which also checks that etcd answers,
    or with ``EtcdStore(url)``, which connects lazily on the first call.
    """

    def __init__(self, url: str, *, call_timeout: float = 10.0) -> None:
        self.url = url
        host, port = _parse_url(url)
        self._client = aetcd.Client(
            host=host, port=port, timeout=call_timeout, options=dict(_CHANNEL_OPTIONS))
        self._tx = self._client.transactions
        self._closed = False
        # Set by close(); wakes watches that are backing off before a re-subscribe.
        self._closed_event = asyncio.Event()

    @classmethod
    async def connect(cls, url: str, *, call_timeout: float = 10.0) -> EtcdStore:
        """A store whose etcd has answered a request; raises :class:`Unavailable`."""
        store = cls(url, call_timeout=call_timeout)
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    # -- plumbing -------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate aetcd/gRPC failures into the store's errors."""
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            yield
        except _CONNECTION_ERRORS as e:
            raise Unavailable(
                f"etcd at {self.url} is unavailable ({doing}): {e or type(e).__name__}; "
                "check that etcd is running"
            ) from e
        except aetcd.ClientError as e:
            raise StoreError(f"etcd at {self.url} failed ({doing}): {e}") from e

    async def revision(self) -> int:
        """The current etcd revision (a cheap read of one key that need not exist)."""
        with self._errors("reading the revision"):
            # An empty range starting at "\0" costs etcd nothing and carries the header.
            result = await self._client.get_range(b"\0", b"\0\0")
        return int(result.header.revision)

    # -- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> Obj:
        with self._errors(f"reading {key}"):
            kv = await self._client.get(key.encode())
        if kv is None:
            raise NotFound(f"{key} not found")
        return decode_object(kv.value, kv.mod_revision)

    async def list(self, prefix: str) -> tuple[list[Obj], int]:
        start, end = _key_range(prefix)
        with self._errors(f"listing {prefix}"):
            result = await self._client.get_range(start, end, sort_order="ascend",
                                                  sort_target="key")
        # The raw kvs avoid wrapping every pair; one Range is one consistent snapshot.
        items = [decode_listed(kv.value, kv.mod_revision, bytes(kv.key).decode())
                 for kv in result.kvs]
        return items, int(result.header.revision)

    # -- writes -----------------------------------------------------------------------

    async def create(self, key: str, obj: Obj) -> Obj:
        value = encode_object(obj)
        k = key.encode()
        with self._errors(f"creating {key}"):
            ok, responses = await self._client.transaction(
                compare=[self._tx.version(k) == 0],
                success=[self._tx.put(k, value.encode()), self._tx.get(k)],
                failure=[],
            )
        if not ok:
            raise AlreadyExists(f"{key} already exists")
        return decode_object(value, _read_back_revision(responses[1], key))

    async def update(self, key: str, obj: Obj) -> Obj:
        value = encode_object(obj)
        expected = parse_resource_version(obj)
        k = key.encode()
        with self._errors(f"updating {key}"):
            ok, responses = await self._client.transaction(
                compare=[self._tx.version(k) > 0, self._tx.mod(k) == expected],
                success=[self._tx.put(k, value.encode()), self._tx.get(k)],
                failure=[self._tx.get(k)],
            )
        if not ok:
            _raise_failed_precondition(key, expected, responses[0])
        return decode_object(value, _read_back_revision(responses[1], key))

    async def delete(self, key: str, resource_version: str | None = None) -> None:
        k = key.encode()
        compare = [self._tx.version(k) > 0]
        expected: int | None = None
        if resource_version is not None:
            expected = parse_resource_version(resource_version)
            compare.append(self._tx.mod(k) == expected)
        with self._errors(f"deleting {key}"):
            ok, responses = await self._client.transaction(
                compare=compare,
                success=[self._tx.delete(k)],
                failure=[self._tx.get(k)],
            )
        if not ok:
            _raise_failed_precondition(key, expected, responses[0])

    # -- watch ------------------------------------------------------------------------

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        start, end = _key_range(prefix)
        last = from_revision  # the last revision delivered (or the one we start after)
        failures = 0
        while not self._closed:
            if failures:
                await self._check_not_reset(prefix, last)
            try:
                watch = await self._client.watch(
                    start, range_end=end, start_revision=last + 1, prev_kv=True)
            except aetcd.RevisionCompactedError as e:
                raise self._compacted(prefix, last, e) from e
            except _FATAL_WATCH_ERRORS as e:
                raise StoreError(f"etcd at {self.url} refused the watch on {prefix!r}: {e}") from e
            except Exception as e:  # connection lost, timeout: etcd may be restarting
                if self._closed:
                    return
                failures += 1
                await self._backoff(prefix, last, failures, e)
                continue
            failures = 0
            broken: BaseException | None = None
            try:
                events = aiter(watch)
                while True:
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                    except aetcd.RevisionCompactedError as e:
                        raise self._compacted(prefix, last, e) from e
                    except _FATAL_WATCH_ERRORS as e:
                        raise StoreError(
                            f"etcd at {self.url} ended the watch on {prefix!r}: {e}") from e
                    except Exception as e:
                        # Only aetcd's stream can fail here; a bad value (below) or the
                        # consumer's own errors never reach this handler.
                        broken = e
                        break
                    converted = _convert(event)
                    last = converted.revision
                    yield converted
            finally:
                # Tell etcd to stop sending (a no-op once the client is closed). Bounded:
                # aetcd queues the cancel request, and on a dead stream nobody drains it.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watch.cancel(), 1.0)
            # aetcd ends the iterator without an error only when the client is closed,
            # i.e. when this store is; anything else is a break to recover from.
            if self._closed:
                return
            failures += 1
            await self._backoff(prefix, last, failures, broken)

    async def _check_not_reset(self, prefix: str, last: int) -> None:
        """Before re-subscribing: a restarted etcd must be at or past what we delivered.

        Otherwise its data was reset, and "changes after ``last``" would skip (or wait
        forever for) changes the consumer never saw.
        """
        try:
            current = await self.revision()
        except Unavailable:
            return  # still down; the watch attempt that follows fails and backs off
        if current < last:
            raise StoreError(
                f"etcd at {self.url} is at revision {current}, behind revision {last} "
                f"already delivered on {prefix!r}: its data was reset; list again"
            )

    def _compacted(self, prefix: str, last: int, e: aetcd.RevisionCompactedError) -> StoreError:
        return StoreError(
            f"cannot watch {prefix!r} from revision {last + 1}: etcd compacted its history "
            f"up to revision {e.compacted_revision}; list again and watch from the list's "
            "revision"
        )

    async def _backoff(self, prefix: str, last: int, failures: int,
                       error: BaseException | None) -> None:
        delay = min(_WATCH_BACKOFF_MAX, _WATCH_BACKOFF_FIRST * 2 ** (failures - 1))
        # One warning when an outage starts, then one every ~30 attempts, not a flood.
        if failures == 1 or failures % 30 == 0:
            log.warning("watch on %r is down after revision %d (%s); re-subscribing "
                        "(attempt %d)", prefix, last, error or "stream ended", failures)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed_event.wait(), delay)

    async def compact(self, revision: int) -> None:
        """Ask etcd to drop its history before ``revision`` (watches from earlier fail)."""
        with self._errors(f"compacting to revision {revision}"):
            await self._client.compact(revision, physical=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        # Closing the client shuts aetcd's watcher down, which ends every watch
        # iterator without an error; our watch loops then see _closed and return.
        with contextlib.suppress(Exception):
            await self._client.close()


def _read_back_revision(range_response: Any, key: str) -> int:
    """The mod revision from the Get that followed our Put in the same transaction."""
    if not range_response:
        raise StoreError(f"etcd did not read back {key} after writing it")
    _value, kv = range_response[0]
    return int(kv.mod_revision)


def _raise_failed_precondition(key: str, expected: int | None, range_response: Any) -> None:
    if not range_response:
        raise NotFound(f"{key} not found")
    _value, kv = range_response[0]
    raise Conflict(
        f"{key} was modified: you sent resourceVersion {expected}, it is now "
        f"{kv.mod_revision}; re-read it and retry"
    )


def _convert(event: Any) -> WatchEvent:
    key = bytes(event.kv.key).decode()
    # For a DELETE, etcd sets the kv's mod revision to the deletion revision.
    revision = int(event.kv.mod_revision)
    if event.kind == "PUT":
        return WatchEvent("PUT", key, decode_listed(event.kv.value, revision, key), revision)
    prev = event.prev_kv
    obj = decode_listed(prev.value, revision, key) if prev is not None else None
    return WatchEvent("DELETE", key, obj, revision)


if TYPE_CHECKING:
    from allinone.store.base import Store

    def _conforms(store: EtcdStore) -> Store:
        """mypy checks here that EtcdStore satisfies the Store protocol."""
        return store
