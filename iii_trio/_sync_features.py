"""The sync facade's wrappers of what the worker gained with 0.25: discovery watches,
state and streams, services, the engine's features.

A mixin of ``SyncWorker`` (kept apart so that ``_sync`` stays about the portal): each
method crosses into the loop through ``SyncWorker``'s ``_wait`` / ``_do`` / ``_events``
as the rest of the facade does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import JsonValue

from ._channels import attach_reader, attach_writer, open_channel
from ._channels_ref import StreamChannelRef
from ._logging import Logger
from ._observe_observer import Observer
from ._observe_types import ObserveSource, TargetRef
from ._registry import Registration
from ._sync_channels import SyncChannel, SyncChannelReader, SyncChannelWriter
from ._sync_events import SyncEvents
from ._sync_observe import SyncObserverHandle
from ._sync_state import SyncStateClient
from ._sync_streams import SyncStreamClient

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["SyncFeatures"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Receiver(Protocol[T_co]):
    """What a watch yields: something to ``await receive()`` events from."""

    async def receive(self) -> T_co:
        """The next event."""
        ...


class SyncFeatures:
    """Part of ``SyncWorker``: see there."""

    if TYPE_CHECKING:
        _worker: Worker

        def _wait(self, function: Callable[[], Awaitable[T]]) -> T: ...
        def _do(self, function: Callable[[], T]) -> T: ...
        def _bind(self, registration: Registration) -> Registration: ...
        def _events(
            self, watch: AbstractAsyncContextManager[Receiver[T]]
        ) -> AbstractContextManager[SyncEvents[T]]: ...
        def _enter(
            self, manager: AbstractAsyncContextManager[T], what: str
        ) -> AbstractContextManager[T]: ...

    @property
    def logger(self) -> Logger:
        """The worker's structured logger (``Worker.logger``). Safe from any thread: a
        record is made where it is logged and only queued for the engine."""
        return self._worker.logger

    @property
    def engine_features(self) -> frozenset[str]:
        """What the engine announced in ``workerregistered.features`` (empty before 0.25)."""
        return self._do(lambda: self._worker.engine_features)

    def register_service(
        self,
        id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        parent_service_id: str | None = None,
    ) -> Registration:
        """Declare a service, a named group of functions in the engine's dashboard
        (see ``Worker.register_service``); ``unregister()`` works from any thread."""
        registration = self._do(
            lambda: self._worker.register_service(
                id, name=name, description=description, parent_service_id=parent_service_id
            )
        )
        return self._bind(registration)

    # -- discovery watches --------------------------------------------------------------------

    def watch_workers(self, *, buffer: int = 100) -> AbstractContextManager[SyncEvents[JsonValue]]:
        """``engine::workers-available`` events while the block runs:
        ``with worker.watch_workers() as events: for event in events: ...``.

        The loop ends when the block does (or the worker shuts down); a slow reader
        holds up the engine's deliveries. See ``Worker.watch_workers``.
        """
        return self._events(self._worker.watch_workers(buffer=buffer))

    def watch_functions(
        self, *, buffer: int = 100
    ) -> AbstractContextManager[SyncEvents[JsonValue]]:
        """``engine::functions-available`` events while the block runs (as ``watch_workers``)."""
        return self._events(self._worker.watch_functions(buffer=buffer))

    # -- state and streams -----------------------------------------------------------------------

    @cached_property
    def state_store(self) -> SyncStateClient:
        """The engine's ``state::*`` built-ins, typed and blocking (see ``Worker.state_store``)."""
        return SyncStateClient(self, self._worker.state_store)

    @cached_property
    def streams(self) -> SyncStreamClient:
        """The engine's ``stream::*`` built-ins, typed and blocking (see ``Worker.streams``)."""
        return SyncStreamClient(self, self._worker.streams)

    # -- data channels ----------------------------------------------------------------------

    @contextmanager
    def open_channel(self, buffer_size: int | None = None) -> Iterator[SyncChannel]:
        """A new data channel for the block, with blocking ends (see ``Worker.open_channel``):
        ``with worker.open_channel() as (writer, reader)``. Leaving the block ends the
        writer's stream if it was used here."""
        with self._enter(open_channel(self._worker, buffer_size), "open_channel()") as channel:
            yield SyncChannel(
                SyncChannelWriter(self, channel.writer), SyncChannelReader(self, channel.reader)
            )

    @contextmanager
    def channel_reader(
        self, ref: StreamChannelRef | Mapping[str, str]
    ) -> Iterator[SyncChannelReader]:
        """The reading end ``ref`` names (from another worker's payload), for the block."""
        with self._enter(attach_reader(self._worker, ref), "channel_reader()") as reader:
            yield SyncChannelReader(self, reader)

    @contextmanager
    def channel_writer(
        self, ref: StreamChannelRef | Mapping[str, str]
    ) -> Iterator[SyncChannelWriter]:
        """The writing end ``ref`` names, for the block; leaving it ends the stream."""
        with self._enter(attach_writer(self._worker, ref), "channel_writer()") as writer:
            yield SyncChannelWriter(self, writer)

    # -- observe ----------------------------------------------------------------------------

    @contextmanager
    def observe(
        self,
        source: ObserveSource | dict[str, Any],
        target: str | TargetRef | dict[str, Any],
        *,
        id: str | None = None,
        max_fires: int | None = None,
        expires_in_ms: int | None = None,
        max_in_flight: int | None = None,
        metadata: JsonValue = None,
    ) -> Iterator[SyncObserverHandle]:
        """Observe a function for the block (see ``Worker.observe``): ``with
        worker.observe(source, target) as observer: observer.ready(timeout=10)``."""
        observing = self._worker.observe(
            source,
            target,
            id=id,
            max_fires=max_fires,
            expires_in_ms=expires_in_ms,
            max_in_flight=max_in_flight,
            metadata=metadata,
        )
        with self._enter(observing, "observe()") as handle:
            yield SyncObserverHandle(self, handle)

    def observers(self, function_id: str) -> list[Observer]:
        """The observers of ``function_id``, a function this worker owns with owner
        delivery (see ``Worker.observers``). Use them from the function's handlers (a
        plain handler's thread may ``emit``), as with the async API."""
        return self._do(lambda: self._worker.observers(function_id))
