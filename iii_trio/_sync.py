"""The worker API for code that is not async: scripts, REPLs, synchronous test suites.

::

    from iii_trio import sync as iii

    with iii.register_worker(url, options=iii_trio.InitOptions(worker_name="calc")) as worker:

        @worker.function("math::add")
        def add(data: AddInput) -> AddOutput:
            return AddOutput(c=data.a + data.b)

        worker.ready(timeout=10)
        print(worker.trigger("math::add", {"a": 1, "b": 2}))

Why a portal rather than a second implementation: the Trio worker is the only one
there is, so the facade cannot drift from it. ``register_worker`` starts an anyio
blocking portal (``backend="trio"``) on a thread of its own, enters
``iii_trio.register_worker`` there, and hands back a ``SyncWorker`` whose every
method crosses into that thread, runs there and blocks until it is done. Leaving
the ``with`` block shuts the worker down as the async block does (running handlers
get ``drain_timeout_ms``), then stops the event loop and joins its thread.

The trade-offs:

* One thread runs the event loop, and with it the connection, every ``async def``
  handler, trigger-type provider and ``on_connection_state`` listener. Plain ``def``
  handlers run in Trio's worker threads, exactly as in the async API (Trio keeps an
  idle one cached for some seconds after it is used, for the next call, so such a
  thread may outlive the block).
* Calls from any thread are funnelled through the portal into that one loop: each
  costs a round trip between threads, and the loop admits them one at a time. A
  blocking call such as ``trigger`` then runs there as a task of its own, so calls
  made from several threads overlap on the wire.
* Nothing that runs on the loop thread may block on it: the blocking methods raise
  ``RuntimeError`` when called from there. An ``async def`` handler calls other
  functions through ``worker.async_worker`` (the ``iii_trio.Worker``) with ``await``;
  the plain methods (``register_*``, ``state``) work from any thread.
* The body of the ``with`` block cannot be cancelled from the loop. If the worker
  fails for good (``RegistrationRejected`` for its name, ``ReconnectFailed``), waiting
  calls raise that error (later ones ``WorkerClosed``) and leaving the block raises
  it, as the async block does. Interrupting a blocking call (Ctrl-C) cancels its
  task on the loop before the ``KeyboardInterrupt`` goes on.
* What the async API hands out as async iterators or ``async with`` blocks
  (``transitions()``, the watches, channels, observers) are plain iterators and
  ``with`` blocks here (``_sync_events``, ``_sync_features``): every read can time
  out, and a loop over one ends when what it follows ends instead of blocking.

Errors come out as the async API raises them (``InvocationError``,
``InvocationTimeout``, ...), and an exception raised in the block comes out as itself.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import JsonValue

from ._exceptions import WorkerClosed
from ._handlers import Handler
from ._http_invocation import HttpInvocation
from ._lifecycle import WorkerState
from ._observe_types import ObserveHooks
from ._options import InitOptions
from ._registry import Registration, TriggerTypeProvider
from ._sync_events import SyncEvents, SyncTransitions
from ._sync_features import Receiver, SyncFeatures
from ._transport import Transport
from ._worker import USE_DEFAULT, ConnectionState, EnqueueReceipt, UseDefault, Worker
from ._worker import register_worker as _register_worker

__all__ = ["SyncWorker", "register_worker"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
F = TypeVar("F", bound=Handler)


class SyncWorker(SyncFeatures):
    """A blocking handle on a ``Worker`` running in a portal thread; get one from
    ``iii_trio.sync.register_worker``. Its methods mirror ``iii_trio.Worker``'s."""

    def __init__(self, worker: Worker, portal: BlockingPortal, loop_thread: int) -> None:
        self._worker = worker
        self._portal = portal
        self._loop_thread = loop_thread
        self._closed = False

    # -- crossing into the loop ------------------------------------------------------------

    def _submit(self, function: Callable[[], Awaitable[T]]) -> Future[T] | None:
        """Start ``function`` on the loop; ``None`` once the loop is gone."""
        if self._closed:
            return None
        try:
            # What ``portal.call`` does, keeping the future so that a wait can cancel it.
            return self._portal.start_task_soon(function)
        except RuntimeError:
            if self._closed:  # the portal stopped between the check and the call
                return None
            raise

    def _refuse_loop_thread(self, what: str) -> None:
        """A blocking call from the loop's own thread would wait for itself forever."""
        if not self._closed and threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                f"a blocking iii_trio.sync call ({what}) was made on the worker's own event "
                "loop thread; await worker.async_worker there instead"
            )

    def _wait(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run an async call of the worker on the loop and block until it returns."""
        self._refuse_loop_thread(getattr(function, "__name__", "a call"))
        future = self._submit(function)
        if future is None:
            raise WorkerClosed("the worker has shut down")
        try:
            return future.result()
        except BaseException:
            future.cancel()  # only takes effect if interrupted: cancels the task on the loop
            raise

    def _do(self, function: Callable[[], T]) -> T:
        """Run a plain method of the worker where it may touch the worker.

        That is the loop thread while the loop runs, and any thread once it has
        stopped (nothing else touches the worker then).
        """
        if threading.get_ident() != self._loop_thread:

            async def run() -> T:
                return function()

            future = self._submit(run)
            if future is not None:
                return future.result()
        return function()

    @contextmanager
    def _enter(self, manager: AbstractAsyncContextManager[T], what: str) -> Iterator[T]:
        """Enter an async context manager of the worker on the loop for a ``with`` block."""
        self._refuse_loop_thread(what)
        if self._closed:
            raise WorkerClosed("the worker has shut down")
        with self._portal.wrap_async_context_manager(manager) as value:
            yield value

    @contextmanager
    def _events(self, watch: AbstractAsyncContextManager[Receiver[T]]) -> Iterator[SyncEvents[T]]:
        """Enter an async watch on the loop for a ``with`` block; its events are read
        by blocking calls."""
        with self._enter(watch, "a watch") as events:
            yield SyncEvents(self, events.receive)

    # -- state -------------------------------------------------------------------------------

    @property
    def async_worker(self) -> Worker:
        """The ``iii_trio.Worker`` behind this facade, for ``async def`` handlers.

        Only code on the portal thread (handlers, providers, listeners) may use it.
        """
        return self._worker

    @property
    def url(self) -> str:
        return self._worker.url

    @property
    def name(self) -> str:
        return self._worker.name

    @property
    def namespace(self) -> str | None:
        return self._worker.namespace

    @property
    def state(self) -> WorkerState:
        """Where the worker is in ``WORKER_LIFECYCLE``."""
        return self._do(lambda: self._worker.state)

    @property
    def connection_state(self) -> ConnectionState:
        return self._do(lambda: self._worker.connection_state)

    @property
    def worker_id(self) -> str | None:
        """The engine's id for this worker's current (or last) connection."""
        return self._do(lambda: self._worker.worker_id)

    def transitions(self, *, buffer: int = 1024) -> SyncTransitions:
        """Every lifecycle transition from now on: ``for t in worker.transitions()``.

        The loop ends after the worker reaches a terminal state (leaving its block, or
        a failure); ``receive(timeout)`` waits for one at most ``timeout`` seconds. A
        reader more than ``buffer`` behind gets ``trio.TooSlowError``.
        """
        self._refuse_loop_thread("transitions()")
        return SyncTransitions(self, buffer)

    def on_connection_state(
        self, listener: Callable[[ConnectionState], None]
    ) -> Callable[[], None]:
        """Call ``listener(state)`` on each change of ``connection_state``; returns an
        unsubscribe. The listener runs on the portal thread and must not block."""
        unsubscribe = self._do(lambda: self._worker.on_connection_state(listener))
        return lambda: self._do(unsubscribe)

    def ready(self, timeout: float | None = None) -> None:
        """Block until the worker is connected and registered.

        Raises ``ReadyTimeout`` (also a ``trio.TooSlowError``) after ``timeout``
        seconds, naming the URL, the time waited and the last connection error
        (``None`` waits as long as it takes); the failure if the worker fails;
        ``WorkerClosed`` once it is shut down.
        """
        self._wait(lambda: self._worker.ready(timeout))

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C); raises the worker's failure if it fails."""
        self._wait(self._worker.serve_forever)

    # -- registration --------------------------------------------------------------------------

    def function(
        self,
        function_id: str,
        *,
        description: str | None = None,
        metadata: JsonValue = None,
        observe: ObserveHooks | dict[str, Any] | None = None,
        local_dispatch: bool = True,
    ) -> Callable[[F], F]:
        """Decorator form of ``register_function``; returns the handler unchanged."""

        def decorate(handler: F) -> F:
            self.register_function(
                function_id,
                handler,
                description=description,
                metadata=metadata,
                observe=observe,
                local_dispatch=local_dispatch,
            )
            return handler

        return decorate

    def register_function(
        self,
        function_id: str,
        handler: Handler | None = None,
        *,
        description: str | None = None,
        metadata: JsonValue = None,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
        http: HttpInvocation | None = None,
        observe: ObserveHooks | dict[str, Any] | None = None,
        local_dispatch: bool = True,
    ) -> Registration:
        """Serve ``function_id`` with ``handler``: ``async def`` ones run on the portal
        thread, plain ones in worker threads; or, with ``http=HttpInvocation(url=...)``
        and no handler, have the engine call that URL. ``observe`` (its hooks run on the
        portal thread, plain ones in worker threads) and ``local_dispatch`` are
        ``Worker.register_function``'s."""
        registration = self._do(
            lambda: self._worker.register_function(
                function_id,
                handler,
                description=description,
                metadata=metadata,
                request_format=request_format,
                response_format=response_format,
                http=http,
                observe=observe,
                local_dispatch=local_dispatch,
            )
        )
        return self._bind(registration)

    def register_trigger_type(
        self,
        trigger_type_id: str,
        provider: TriggerTypeProvider,
        *,
        description: str = "",
        trigger_request_format: JsonValue = None,
        call_request_format: JsonValue = None,
    ) -> Registration:
        """Provide a trigger type; ``provider``'s hooks run on the portal thread.
        See ``Worker.register_trigger_type``."""
        registration = self._do(
            lambda: self._worker.register_trigger_type(
                trigger_type_id,
                provider,
                description=description,
                trigger_request_format=trigger_request_format,
                call_request_format=call_request_format,
            )
        )
        return self._bind(registration)

    def register_trigger(
        self,
        trigger_type: str,
        function_id: str,
        config: JsonValue = None,
        *,
        id: str | None = None,
        metadata: JsonValue = None,
        namespace: str | None = None,
        trigger_namespace: str | None = None,
    ) -> Registration:
        """Bind ``function_id`` to a trigger type. See ``Worker.register_trigger``."""
        registration = self._do(
            lambda: self._worker.register_trigger(
                trigger_type,
                function_id,
                config,
                id=id,
                metadata=metadata,
                namespace=namespace,
                trigger_namespace=trigger_namespace,
            )
        )
        return self._bind(registration)

    def _bind(self, registration: Registration) -> Registration:
        """The same handle, whose ``unregister()`` runs on the loop from any thread."""
        return Registration(
            registration.kind, registration.id, lambda: self._do(registration.unregister)
        )

    # -- calls ---------------------------------------------------------------------------------

    @overload
    def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> T: ...

    @overload
    def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> JsonValue: ...

    def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> Any:
        """Call ``function_id``, block until it answers and return its result.

        ``timeout`` is in seconds (default ``invocation_timeout_ms``; ``None`` waits
        forever). Raises as ``Worker.trigger`` does: ``InvocationError`` and its
        subclasses (``InvocationTimeout`` is also a ``trio.TooSlowError``),
        ``ConnectionLost``, ``WorkerClosed``.
        """

        async def call() -> Any:
            return await self._worker.trigger(
                function_id,
                data,
                result_type=result_type,
                timeout=timeout,
                namespace=namespace,
                metadata=metadata,
                traceparent=traceparent,
                baggage=baggage,
            )

        return self._wait(call)

    def trigger_void(
        self,
        function_id: str,
        data: Any = None,
        *,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Fire and forget: returns once the call is queued; nobody answers it."""

        async def call() -> None:
            await self._worker.trigger_void(
                function_id,
                data,
                namespace=namespace,
                metadata=metadata,
                traceparent=traceparent,
                baggage=baggage,
            )

        self._wait(call)

    def enqueue(
        self,
        function_id: str,
        data: Any = None,
        *,
        queue: str,
        timeout: float | UseDefault | None = USE_DEFAULT,
        namespace: str | None = None,
        metadata: JsonValue = None,
    ) -> EnqueueReceipt:
        """Hand the call to the engine's durable queue ``queue``; returns its receipt."""

        async def call() -> EnqueueReceipt:
            return await self._worker.enqueue(
                function_id,
                data,
                queue=queue,
                timeout=timeout,
                namespace=namespace,
                metadata=metadata,
            )

        return self._wait(call)

    # -- discovery -----------------------------------------------------------------------------

    def list_workers(self) -> list[dict[str, JsonValue]]:
        """``engine::workers::list``: the connected workers that announced themselves."""
        return self._wait(self._worker.list_workers)

    def list_functions(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::functions::list``: every registered function."""
        return self._wait(lambda: self._worker.list_functions(include_internal=include_internal))

    def list_trigger_types(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::triggers::list``: the trigger types on offer."""
        return self._wait(
            lambda: self._worker.list_trigger_types(include_internal=include_internal)
        )

    def list_triggers(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::registered-triggers::list``: the bindings (trigger instances)."""
        return self._wait(lambda: self._worker.list_triggers(include_internal=include_internal))


@contextmanager
def register_worker(
    url: str | None = None,
    options: InitOptions | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
) -> Iterator[SyncWorker]:
    """Run a worker on a portal thread for the duration of the block.

    The arguments are ``iii_trio.register_worker``'s. Leaving the block shuts the
    worker down (handlers get ``drain_timeout_ms``), then joins the portal thread.
    """
    with start_blocking_portal(backend="trio") as portal:
        facade: SyncWorker | None = None
        try:
            running = _register_worker(url, options, transport=transport, rng=rng)
            with portal.wrap_async_context_manager(running) as worker:
                facade = SyncWorker(worker, portal, portal.call(threading.get_ident))
                yield facade
        finally:
            # The worker has stopped; from now on its plain state is read in place.
            if facade is not None:
                facade._closed = True
