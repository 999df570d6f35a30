"""The reporter: matched local invocations and ``emit`` events, batched for the engine.

A call this worker runs in process (local dispatch) never reaches the engine, so
its observers would never see it; the worker reports it instead. Reports of
auto-delivered functions and the events an owner hands its observers
(``Observer.emit``) wait in one buffer and leave as ``invocationsobserved``
frames: at once when ``batch_items`` wait, else ``linger`` seconds (Trio's clock)
after the first. Every ``stats_interval`` seconds, the counts of local
invocations and of dropped reports leave as ``localinvocationstats``.

Bounds: the buffer holds at most ``max_items`` items and ``max_bytes`` bytes,
counting the report frames still waiting in the connection's outbox; what does
not fit is dropped and counted (``BUFFER_FULL``, or ``TOO_LARGE`` for one item
over the bound or over a frame). Nothing here ever blocks or fails a call.

Items stay buffered while the worker is offline, and go once the engine has
confirmed their function on the new connection (``functionregistered``); those
of a function the engine refused or that was unregistered are counted
``INACTIVE``. Pushes may come from a plain handler's thread, so the buffer is
guarded by a lock; frames are only sent from the Trio thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

import trio
import trio.lowlevel

from ._observe_json import ABSENT, dumps, encode_value

__all__ = ["FunctionStatus", "ReportHost", "ReportInit", "Reporter", "ReporterLimits"]

log = logging.getLogger("iii_trio.observe")

#: The parts an item may carry, in the order they are written.
PARTS: Final = ("input", "output", "error", "caller", "metadata")

FunctionStatus = Literal["ready", "wait", "gone"]


@dataclass(frozen=True)
class ReporterLimits:
    """The reporter's bounds and timers (the official SDK's values by default)."""

    batch_items: int = 256
    linger: float = 0.005
    max_items: int = 10_000
    max_bytes: int = 8 * 1024 * 1024
    max_frame_bytes: int = 16 * 1024 * 1024
    stats_interval: float = 10.0


class ReportHost(Protocol):
    """What the reporter needs from the worker."""

    def online(self) -> bool:
        """Registered on a live connection to an engine with ``observe.v1``."""
        ...

    def status(self, function_id: str) -> FunctionStatus:
        """``ready``: confirmed on this connection; ``wait``: not yet; ``gone``: never will be."""
        ...

    def send(self, frame: str) -> Callable[[], bool] | None:
        """Queue ``frame`` without waiting; ``None`` if it cannot go now. The result
        says, when asked later, whether the frame is still waiting to be written."""
        ...


@dataclass
class ReportInit:
    """One observed invocation or emitted event, before it is encoded."""

    function_id: str
    invocation_id: str
    matched: list[str]
    status: Literal["success", "error"]
    #: The parts an item may carry; one goes only when a matched observer captures it.
    values: dict[str, Any]
    started_at_ms: float
    duration_ms: float
    observe_depth: int = 0
    namespace: str | None = None
    traceparent: str | None = None
    baggage: str | None = None


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return dumps(value)


class _Item:
    __slots__ = ("captured", "context", "event", "init", "json", "parts", "size")

    def __init__(self, init: ReportInit, event: Any = ABSENT, context: object = None) -> None:
        self.init = init
        self.parts: dict[str, str] = {}
        self.captured: set[str] = set()
        self.json = ""
        self.size = 0
        #: ``emit``: the event and the invocation it came from, to merge one event sent to many.
        self.event = event
        self.context = context

    def capture(self, captures: Iterable[str]) -> None:
        for part in captures:
            if part in self.captured:
                continue
            self.captured.add(part)
            if part in PARTS and part in self.init.values:
                self.parts[part] = encode_value(self.init.values[part])

    def render(self) -> None:
        i = self.init
        out = [f'{{"function_id":{dumps(i.function_id)}']
        if i.namespace is not None:
            out.append(f',"namespace":{dumps(i.namespace)}')
        out.append(f',"invocation_id":{dumps(i.invocation_id)},"matched":{dumps(i.matched)}')
        out.append(f',"status":{dumps(i.status)}')
        for part in PARTS:
            if (encoded := self.parts.get(part)) is not None:
                out.append(f',"{part}":{encoded}')
        out.append(f',"started_at_ms":{int(i.started_at_ms)}')
        out.append(f',"duration_ms":{_number(i.duration_ms)}')
        out.append(f',"observe_depth":{i.observe_depth}')
        if i.traceparent is not None:
            out.append(f',"traceparent":{dumps(i.traceparent)}')
        if i.baggage is not None:
            out.append(f',"baggage":{dumps(i.baggage)}')
        out.append("}")
        self.json = "".join(out)
        self.size = len(self.json.encode("utf-8", "surrogatepass"))


_HEAD: Final = '{"type":"invocationsobserved","items":['
_TAIL: Final = "]}"
_OVERHEAD: Final = len(_HEAD) + len(_TAIL)


@dataclass
class _Stats:
    count: int = 0
    errors: int = 0
    duration_ms_sum: float = 0.0


@dataclass
class _Counters:
    stats: dict[str, _Stats] = field(default_factory=dict)
    drops: dict[str, dict[str, int]] = field(default_factory=dict)


class Reporter:
    """The bounded report buffer and its two timers (``run``)."""

    def __init__(self, host: ReportHost, limits: ReporterLimits | None = None) -> None:
        self._host = host
        self.limits = limits or ReporterLimits()
        self._lock = threading.Lock()
        self._items: list[_Item] = []
        self._bytes = 0
        #: Report frames queued on the connection, still unwritten while their probe says so.
        self._unsent: list[tuple[Callable[[], bool], int]] = []
        self._counters = _Counters()
        self._window_start: float | None = None
        self._unencodable: set[str] = set()
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def size(self) -> int:
        """Items waiting (for tests and diagnostics)."""
        return len(self._items)

    def with_limits(self, **changes: Any) -> None:
        """Replace some limits (tests)."""
        self.limits = replace(self.limits, **changes)

    # -- timers ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Flush on the linger timer and send the stats on theirs, until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        self._window_start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stats_loop)
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if len(self._items) < self.limits.batch_items:
                    await trio.sleep(self.limits.linger)
                self.flush()

    async def _stats_loop(self) -> None:
        while True:
            await trio.sleep(self.limits.stats_interval)
            self.send_stats()

    def _poke(self) -> None:
        """Wake the flusher; from a plain handler's thread through the Trio token."""
        if trio.lowlevel.in_trio_run():
            self._wake.set()
        elif self._token is not None:
            # The run is over (worker shut down): nothing will flush, nothing to wake.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._poke)

    # -- items -------------------------------------------------------------------------------

    def push(self, init: ReportInit, captures: Iterable[str]) -> bool:
        """A matched local invocation of an auto-delivered function."""
        item = _Item(init)
        return self._build(item, captures) and self._enqueue(item)

    def push_emit(
        self,
        init: ReportInit,
        observer_id: str,
        event: Any,
        context: object,
        captures: Iterable[str],
    ) -> bool:
        """An ``emit`` event. The same event object emitted to several observers from
        the same invocation before a flush is one item listing them all."""
        with self._lock:
            for item in self._items:
                if (
                    item.event is event
                    and item.context is context
                    and item.init.function_id == init.function_id
                    and observer_id not in item.init.matched
                ):
                    return self._merge_locked(item, observer_id, captures)
        init.matched = [observer_id]
        item = _Item(init, event, context)
        return self._build(item, captures) and self._enqueue(item)

    def _merge_locked(self, item: _Item, observer_id: str, captures: Iterable[str]) -> bool:
        saved = (
            list(item.init.matched),
            dict(item.parts),
            set(item.captured),
            item.json,
            item.size,
        )
        item.init.matched.append(observer_id)
        item.capture(captures)
        item.render()
        reason = self._too_large(item.size)
        if reason is None and self._bytes - saved[4] + item.size > self._room_bytes():
            reason = "BUFFER_FULL"
        if reason is None:
            self._bytes += item.size - saved[4]
            return True
        item.init.matched, item.parts, item.captured, item.json, item.size = saved
        self._count_drop(item.init.function_id, reason)
        return False

    def _build(self, item: _Item, captures: Iterable[str]) -> bool:
        try:
            item.capture(captures)
            item.render()
        except (TypeError, ValueError, RecursionError) as error:
            if item.init.function_id not in self._unencodable:
                self._unencodable.add(item.init.function_id)
                log.error(
                    "an observed invocation of %s is not JSON; not reported: %s",
                    item.init.function_id,
                    error,
                )
            return False
        return True

    def _too_large(self, size: int) -> str | None:
        limits = self.limits
        return (
            "TOO_LARGE"
            if size > limits.max_bytes or size + _OVERHEAD > limits.max_frame_bytes
            else None
        )

    def _room_bytes(self) -> int:
        """The byte bound less what report frames still wait to be written."""
        self._unsent = [(waiting, size) for waiting, size in self._unsent if waiting()]
        return self.limits.max_bytes - sum(size for _, size in self._unsent)

    def _enqueue(self, item: _Item) -> bool:
        function_id = item.init.function_id
        with self._lock:
            reason = self._too_large(item.size)
            if reason is None and (
                len(self._items) >= self.limits.max_items
                or self._bytes + item.size > self._room_bytes()
            ):
                reason = "BUFFER_FULL"
            if reason is not None:
                self._count_drop(function_id, reason)
                return False
            self._items.append(item)
            self._bytes += item.size
        self._poke()
        return True

    # -- counters ----------------------------------------------------------------------------

    def _count_drop(self, function_id: str, reason: str, count: int = 1) -> None:
        by_reason = self._counters.drops.setdefault(function_id, {})
        by_reason[reason] = by_reason.get(reason, 0) + count

    def record_local(self, function_id: str, ok: bool, duration_ms: float) -> None:
        """Count one local invocation (for ``localinvocationstats``)."""
        with self._lock:
            stats = self._counters.stats.setdefault(function_id, _Stats())
            stats.count += 1
            stats.errors += 0 if ok else 1
            stats.duration_ms_sum += duration_ms

    # -- sending (Trio thread) ---------------------------------------------------------------

    def flush(self) -> None:
        """Send what may go: items whose function is confirmed on this connection, in
        frames under the frame limit. The rest waits; a gone function's are dropped."""
        if not self._items or not self._host.online():
            return
        with self._lock:
            ready: list[_Item] = []
            held: list[_Item] = []
            for item in self._items:
                status = self._host.status(item.init.function_id)
                if status == "ready":
                    ready.append(item)
                elif status == "wait":
                    held.append(item)
                else:
                    self._count_drop(item.init.function_id, "INACTIVE")
            self._items = held
            self._bytes = sum(item.size for item in held)
        unsent: list[_Item] = []
        batch: list[_Item] = []
        size = _OVERHEAD
        for item in ready:
            if batch and size + 1 + item.size > self.limits.max_frame_bytes:
                self._send_batch(batch, unsent)
                batch, size = [], _OVERHEAD
            size += item.size + (1 if batch else 0)
            batch.append(item)
        if batch:
            self._send_batch(batch, unsent)
        if unsent:
            self._requeue(unsent)

    def _send_batch(self, batch: list[_Item], unsent: list[_Item]) -> None:
        frame = f"{_HEAD}{','.join(item.json for item in batch)}{_TAIL}"
        waiting = None if unsent else self._host.send(frame)
        if waiting is None:
            # The connection took nothing (gone, or its outbox full): keep them, in order.
            unsent.extend(batch)
        else:
            self._unsent.append((waiting, len(frame.encode("utf-8", "surrogatepass"))))

    def _requeue(self, unsent: list[_Item]) -> None:
        with self._lock:
            # Back in front, in order; what no longer fits is dropped from the newest end.
            items = unsent + self._items
            total = sum(item.size for item in items)
            while items and (len(items) > self.limits.max_items or total > self.limits.max_bytes):
                newest = items.pop()
                total -= newest.size
                self._count_drop(newest.init.function_id, "BUFFER_FULL")
            self._items, self._bytes = items, total

    def send_stats(self, now: float | None = None) -> bool:
        """Send ``localinvocationstats`` when any count is not zero; keep counting offline.

        ``now`` is Trio's clock (given by tests that run outside Trio)."""
        now = trio.current_time() if now is None else now
        with self._lock:
            start = self._window_start if self._window_start is not None else now
            if not self._counters.stats and not self._counters.drops:
                self._window_start = now
                return False
            if not self._host.online():
                return False
            counters, self._counters = self._counters, _Counters()
            self._window_start = now
        frame = _stats_frame((now - start) * 1000, counters)
        if self._host.send(frame) is not None:
            return True
        self._restore(counters, start)
        return False

    def _restore(self, counters: _Counters, start: float) -> None:
        with self._lock:
            for function_id, stats in counters.stats.items():
                mine = self._counters.stats.setdefault(function_id, _Stats())
                mine.count += stats.count
                mine.errors += stats.errors
                mine.duration_ms_sum += stats.duration_ms_sum
            for function_id, by_reason in counters.drops.items():
                for reason, count in by_reason.items():
                    self._count_drop(function_id, reason, count)
            self._window_start = start

    def discard(self, function_id: str) -> None:
        """Drop the items of a function that will never be confirmed (``INACTIVE``)."""
        with self._lock:
            kept = [item for item in self._items if item.init.function_id != function_id]
            dropped = len(self._items) - len(kept)
            if dropped:
                self._items = kept
                self._bytes = sum(item.size for item in kept)
                self._count_drop(function_id, "INACTIVE", dropped)

    def clear(self) -> None:
        """Forget every item (the engine does not support observe)."""
        with self._lock:
            self._items, self._bytes = [], 0


def _stats_frame(window_ms: float, counters: _Counters) -> str:
    # Key order as the official SDK writes it: ``type`` last.
    message = {
        "window_ms": max(0, round(window_ms)),
        "functions": [
            {
                "function_id": function_id,
                "count": stats.count,
                "errors": stats.errors,
                "duration_ms_sum": stats.duration_ms_sum,
            }
            for function_id, stats in counters.stats.items()
        ],
        "dropped_reports": [
            {"function_id": function_id, "reason": reason, "count": count}
            for function_id, by_reason in counters.drops.items()
            for reason, count in by_reason.items()
        ],
        "type": "localinvocationstats",
    }
    return dumps(message)


def wall_ms() -> float:
    """Milliseconds since the epoch (``started_at_ms`` is wall time on the wire)."""
    return time.time() * 1000
