"""The owner side of observe: one registered function's observers, hooks and deliveries.

The engine tells the worker that hosts a function who observes it
(``functionregistered`` with the whole set, then ``observeradded`` /
``observerremoved``, each with a revision). The worker runs the function's
``on_observer_added`` hook, puts the observer in the active set and acks it
(``observerack``), in that order, so the first event after the observer turns
``active`` is already evaluated. Hooks of one function run one at a time in
revision order (a queue drained by one task); those of different functions run
side by side.

The active set (``FunctionObservers.active``) is an immutable snapshot, made again
when read after a change; ``Observer.emit`` from a plain handler's thread reads only
the observer's own flag.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol

import trio

from ._observe_observer import (
    HookRun,
    Observer,
    ObserverInfo,
    compile_filters,
    hook_error,
    invoke_hook,
    same_json,
)
from ._observe_reporter import Reporter
from ._observe_types import ObserveHook, ObserveHooks

__all__ = ["FunctionObservers", "Observer", "ObserverInfo", "OwnerHost"]

log = logging.getLogger("iii_trio.observe")

#: A hook still running after this long is ``OWNER_TIMEOUT`` (the official SDK's value).
HOOK_TIMEOUT: Final = 30.0
#: Engine messages waiting for one function's hooks; more is an engine gone wrong.
MAX_QUEUED: Final = 10_000
#: The observers one function holds, in bytes (``ObserverInfo.size``): twice what the
#: engine itself lets one function have, so only an engine gone wrong meets it; past
#: it a new observer is refused (``OBSERVE_REJECTED``) instead of growing the worker.
MAX_HELD_BYTES: Final = 16 * 1024 * 1024
#: The observers waiting in one function's queue, in bytes (a whole replayed set counts).
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
#: A replayed set yields to the rest of the worker after this many observers.
_CHECKPOINT_EVERY: Final = 1_000


class OwnerHost(Protocol):
    """What the owner side needs from the worker."""

    reporter: Reporter
    hook_timeout: float

    def identity(self) -> dict[str, str]:
        """This worker as the engine knows it: ``{worker_id?, worker_name}``."""
        ...

    def send_ack(
        self,
        function_id: str,
        namespace: str | None,
        observer_id: str,
        revision: int,
        error: dict[str, str] | None,
    ) -> None:
        """Send an ``observerack`` if connected; a replayed set re-acks otherwise."""
        ...

    def spawn(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` in the worker's observe nursery; ``False`` if it will not run."""
        ...

    async def call_target(
        self,
        target: str,
        observer_id: str,
        payload: Any,
        timeout: float | None,  # noqa: ASYNC109 - the call's own, as trigger's
    ) -> Any:
        """``Observer.call``: invoke ``target`` through the engine as an owner delivery."""
        ...


class FunctionObservers:
    """One registered function's observers as the engine pushed them."""

    def __init__(
        self, function_id: str, hooks: ObserveHooks | None, local_dispatch: bool, host: OwnerHost
    ) -> None:
        self.function_id = function_id
        self.hooks = hooks
        self.host = host
        self.delivery: Literal["auto", "owner"] = (
            "owner" if hooks is not None and hooks.delivery == "owner" else "auto"
        )
        self._local_dispatch_option = local_dispatch
        #: The connection whose ``functionregistered`` confirmed it (reports may go on it).
        self.confirmed_on: object = None
        #: The connection on which the engine refused it (its reports are dropped there).
        self.refused_on: object = None
        #: In-process calls allowed: the engine's ``local_dispatch`` and this worker's option.
        self.local_dispatch = False
        self.namespace: str | None = None
        self.revision = -1
        self._known: dict[str, Observer] = {}
        #: The active observers in order; ``active`` is a snapshot of them, made again
        #: only when read after a change, so a set or a flood of thousands is taken in
        #: linear time.
        self._active_map: dict[str, Observer] = {}
        self._snapshot: tuple[Observer, ...] = ()
        self._dirty = False
        self._queue: deque[Callable[[], Awaitable[None]]] = deque()
        #: Bytes of the observers held (``_known``) and of those waiting in the queue.
        self._held_bytes = 0
        self._queued_bytes = 0
        #: Engine messages dropped since the queue overflowed (logged once, then counted).
        self._drops = 0
        self._draining = False
        self._confirmed = trio.Event()
        self._disposed = False
        #: Bumped when the function is released: a hook that returns after it is undone.
        self._releases = 0

    @property
    def active(self) -> tuple[Observer, ...]:
        """The active observers, in the order they turned active (an immutable snapshot:
        what a local call is evaluated against, whatever changes meanwhile)."""
        if self._dirty:
            self._dirty = False
            self._snapshot = tuple(self._active_map.values())
        return self._snapshot

    @property
    def needs_observe(self) -> bool:
        """Hooks or owner delivery: what an engine without ``observe.v1`` cannot serve."""
        hooks = self.hooks
        return self.delivery == "owner" or (
            hooks is not None
            and (hooks.on_observer_added is not None or hooks.on_observer_removed is not None)
        )

    def observers(self) -> list[Observer]:
        """The active observers."""
        return list(self.active)

    async def wait_confirmed(self) -> None:
        """Wait until the engine confirmed the function (``functionregistered``) and its
        replayed observers were acked (tests)."""
        await self._confirmed.wait()

    # -- engine messages ---------------------------------------------------------------------

    def on_function_registered(
        self,
        connection: object,
        namespace: str,
        revision: int,
        local_dispatch: bool,
        observers: list[ObserverInfo],
    ) -> None:
        """``functionregistered``: always taken; the set replaces what is held (a diff)."""
        if self._disposed:
            return
        self.refused_on = None
        self.local_dispatch = local_dispatch and self._local_dispatch_option
        self.namespace = namespace
        self.revision = revision
        releases = self._releases
        size = sum(info.size for info in observers)
        if not self._reserve(size):
            return

        async def apply() -> None:
            try:
                self._queued_bytes -= size
                await self._apply_set(observers, revision, namespace, releases)
            finally:
                # Held reports go once the engine holds the acks of the replayed set.
                self.confirmed_on = connection
                self._confirmed.set()
                self.host.reporter.flush()

        self._enqueue(apply)

    def on_observer_added(self, namespace: str, revision: int, info: ObserverInfo) -> None:
        """``observeradded``; one with a revision already seen is stale and ignored."""
        if self._disposed or revision <= self.revision:
            return
        self.revision = revision
        releases = self._releases
        if not self._reserve(info.size):
            self._ack(info.id, revision, namespace, self._too_many())
            return

        async def add() -> None:
            self._queued_bytes -= info.size
            await self._add(info, revision, namespace, releases, fresh=True)

        self._enqueue(add)

    def on_observer_removed(self, revision: int, observer_id: str) -> None:
        """``observerremoved``; stale revisions are ignored."""
        if self._disposed or revision <= self.revision:
            return
        self.revision = revision
        self._enqueue(lambda: self._remove(observer_id))

    def on_refused(self, connection: object) -> None:
        """``FUNCTION_NAMESPACE_CONFLICT``: no local dispatch, no observers, reports dropped."""
        self.confirmed_on = None
        self.local_dispatch = False
        self.refused_on = connection
        self.host.reporter.discard(self.function_id)
        self._drop_all()

    def dispose(self) -> None:
        """The function was unregistered: local dispatch stops now; every observer is removed."""
        self._disposed = True
        self.confirmed_on = None
        self.local_dispatch = False
        self.host.reporter.discard(self.function_id)
        self._drop_all()

    def _drop_all(self) -> None:
        self._releases += 1
        for obs in self._active_map.values():
            obs._active = False
        self._active_map.clear()
        self._dirty = True

        async def remove_all() -> None:
            for observer_id in list(self._known):
                await self._remove(observer_id)

        self._enqueue(remove_all)

    def _reserve(self, size: int) -> bool:
        """Count ``size`` bytes of observers into the queue, unless over its bound."""
        if self._queued_bytes + size > MAX_QUEUED_BYTES or len(self._queue) >= MAX_QUEUED:
            self._dropped()
            return False
        self._queued_bytes += size
        return True

    def _dropped(self) -> None:
        # One line when the queue overflows and one when it has drained, not one per
        # message: a flooding engine must not flood the log too.
        self._drops += 1
        if self._drops == 1:
            log.error(
                "observe: %s has %d engine messages (%d bytes) waiting; dropping more",
                self.function_id,
                len(self._queue),
                self._queued_bytes,
            )

    def _too_many(self) -> dict[str, str]:
        return {
            "code": "OBSERVE_REJECTED",
            "message": f"the owner of {self.function_id} holds its most observers "
            f"({MAX_HELD_BYTES} bytes)",
        }

    def _enqueue(self, job: Callable[[], Awaitable[None]]) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._dropped()
            return
        self._queue.append(job)
        if not self._draining:
            self._draining = True
            self.host.spawn(self._drain)

    async def _drain(self) -> None:
        try:
            while self._queue:
                job = self._queue.popleft()
                try:
                    await job()
                except Exception:
                    log.exception("observe: handling an observer of %s failed", self.function_id)
        finally:
            self._draining = False
            if self._drops and not self._queue:
                log.error("observe: %s: %d engine messages dropped", self.function_id, self._drops)
                self._drops = 0

    # -- the active set ----------------------------------------------------------------------

    def _activate(self, obs: Observer) -> bool:
        if obs._rejection is not None:
            return False
        if not obs._active:
            obs._active = True
            self._active_map[obs.id] = obs
            self._dirty = True
        return True

    def _deactivate(self, obs: Observer) -> None:
        if obs._active:
            obs._active = False
            if self._active_map.get(obs.id) is obs:
                del self._active_map[obs.id]
            self._dirty = True

    def _ack(
        self,
        observer_id: str,
        revision: int,
        namespace: str | None,
        error: dict[str, str] | None = None,
    ) -> None:
        self.host.send_ack(self.function_id, namespace, observer_id, revision, error)

    def _released_since(self, releases: int) -> bool:
        return self._disposed or self._releases != releases

    async def _apply_set(
        self, observers: list[ObserverInfo], revision: int, namespace: str, releases: int
    ) -> None:
        if self._released_since(releases):
            return
        incoming = {info.id for info in observers}
        for observer_id in list(self._known):
            if observer_id not in incoming:
                await self._remove(observer_id)
        for index, info in enumerate(observers):
            if index % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # a set of thousands: let the worker run
            if self._released_since(releases):
                return
            held = self._known.get(info.id)
            if (
                held is not None
                and same_json(held.args, info.args)
                and same_json(held.legacy, info.legacy)
            ):
                self._keep(held, info, revision, namespace)
                continue
            if held is not None:
                await self._remove(info.id)  # changed args: another observer
            await self._add(info, revision, namespace, releases, fresh=False)

    def _keep(self, obs: Observer, info: ObserverInfo, revision: int, namespace: str) -> None:
        """A held observer the engine still has: the hook ran already; ack it again."""
        obs._revision = revision
        if obs._rejection is not None:
            self._ack(info.id, revision, namespace, obs._rejection)
            return
        compiled = obs._filter
        if not same_json(obs.filters, info.filters):
            try:
                compiled = compile_filters(info.filters)
            except ValueError as error:
                self._deactivate(obs)
                self._ack(
                    info.id, revision, namespace, {"code": "INVALID_FILTER", "message": str(error)}
                )
                return
        if self._known.get(obs.id) is obs:
            self._held_bytes += info.size - obs._size
        obs._size = info.size
        obs._update(info, compiled)
        self._ack(info.id, revision, namespace, None if self._activate(obs) else obs._rejection)

    async def _add(
        self, info: ObserverInfo, revision: int, namespace: str, releases: int, *, fresh: bool
    ) -> None:
        """The hook, then the active set, then the ack."""
        if self._released_since(releases):
            return
        held = self._known.get(info.id)
        if held is not None:
            if not (fresh and held._rejection is not None):
                self._keep(held, info, revision, namespace)
                return
            await self._remove(info.id)  # a fresh add after a late rejection starts anew
            if self._released_since(releases):
                return
        if self._held_bytes + info.size > MAX_HELD_BYTES:
            self._ack(info.id, revision, namespace, self._too_many())
            return
        try:
            compiled = compile_filters(info.filters)
        except ValueError as error:
            self._ack(
                info.id, revision, namespace, {"code": "INVALID_FILTER", "message": str(error)}
            )
            return
        obs = Observer(self, info, compiled, revision)
        on_added = self.hooks.on_observer_added if self.hooks is not None else None
        if on_added is not None:
            obs._adding = True
            refused = await self._run_hook(on_added, obs, undo=True)
            obs._adding = False
            if refused is not None:
                self._ack(info.id, revision, namespace, {"code": refused[0], "message": refused[1]})
                return
        if self._released_since(releases):
            if on_added is not None:
                await self._call_removed(obs)  # released while the hook ran: undo it, no ack
            return
        self._known[obs.id] = obs
        self._held_bytes += obs._size
        self._ack(info.id, revision, namespace, None if self._activate(obs) else obs._rejection)

    async def _remove(self, observer_id: str) -> None:
        obs = self._known.pop(observer_id, None)
        if obs is not None:
            self._held_bytes -= obs._size
            self._deactivate(obs)
            await self._call_removed(obs)

    async def _call_removed(self, obs: Observer) -> None:
        on_removed = self.hooks.on_observer_removed if self.hooks is not None else None
        if on_removed is None:
            return
        refused = await self._run_hook(on_removed, obs, undo=False)
        if refused is not None:
            log.error(
                "observe: on_observer_removed of %s failed for %s: %s",
                self.function_id,
                obs.id,
                refused[1],
            )

    async def _run_hook(
        self, hook: ObserveHook, obs: Observer, *, undo: bool
    ) -> tuple[str, str] | None:
        """Run a hook in a task of its own for at most ``hook_timeout``: ``None`` if it
        returned, else ``(code, message)``. At the timeout an async hook is cancelled;
        a plain one's thread cannot be, so it runs on, and should it then succeed, its
        add is undone (``on_observer_removed``) since the observer was refused."""
        run = HookRun()

        async def call() -> None:
            with run.scope:
                try:
                    await invoke_hook(hook, obs)
                    run.finished = True
                except Exception as error:
                    run.error = error
            run.done.set()
            if run.late is not None and run.finished:
                run.late()

        self.host.spawn(call)
        with trio.move_on_after(self.host.hook_timeout):
            await run.done.wait()
        if not run.done.is_set():
            run.scope.cancel()
            if undo:
                run.late = lambda: self._enqueue(lambda: self._call_removed(obs))
            millis = int(self.host.hook_timeout * 1000)
            return (
                "OWNER_TIMEOUT",
                f"observe hook of {self.function_id} still running after {millis}ms",
            )
        if not run.finished and run.error is None:
            return "OBSERVE_REJECTED", "the observe hook was cancelled"
        return hook_error(self.function_id, run.error)

    # -- owner delivery (see _observe_delivery) --------------------------------------------

    def is_active(self, obs: Observer) -> bool:
        """Whether ``obs`` is in the active set (``emit`` / ``call`` reach it)."""
        return obs._active and self._known.get(obs.id) is obs

    def reject(self, obs: Observer, code: str, message: str) -> None:
        """``Observer.reject``."""
        obs._rejection = {"code": code, "message": message}
        if obs._adding or self._known.get(obs.id) is not obs:
            return  # an add in progress acks with it once its hook returns
        self._deactivate(obs)
        self._ack(obs.id, obs._revision, self.namespace, obs._rejection)
