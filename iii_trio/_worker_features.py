"""The feature clients a ``Worker`` offers beside its core API (mixed into ``Worker``).

Each is a one-line doorway to a module of its own (state and stream clients,
services...), so ``Worker`` itself stays the connection, registration and call API.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, cast

from pydantic import JsonValue

from ._channels import (
    Channel,
    ChannelReader,
    ChannelWriter,
    attach_reader,
    attach_writer,
    open_channel,
)
from ._channels_hydrate import channel_wrapper
from ._channels_ref import StreamChannelRef
from ._inbound import Inbound
from ._logging import Logger
from ._observe import ObserveRuntime
from ._observe_handle import ObserverHandle
from ._observe_observer import Observer
from ._observe_types import ObserveSource, TargetRef
from ._protocol._messages import RegisterService
from ._registrations import Registrations
from ._registry import Registration
from ._service import register_service
from ._state_client import StateClient
from ._stream_client import StreamClient
from ._telemetry import Telemetry

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["WorkerFeatures"]


class WorkerFeatures:
    """The 0.25 feature clients of a worker; ``Worker.__init__`` sets the parts used here."""

    _registrations: Registrations
    _inbound: Inbound
    _telemetry: Telemetry
    _observe: ObserveRuntime
    #: Services declared, by id: re-declared on every connection.
    _services: dict[str, RegisterService]

    def _install_features(self) -> None:
        """Plug the feature clients into the worker's parts (from ``Worker.__init__``)."""
        self._services = {}
        self._registrations.replay_extras.append(lambda: list(self._services.values()))
        # Innermost wrapper: a handler gets channel ends for the refs in its input.
        self._inbound.wrappers.append(channel_wrapper(cast("Worker", self)))

    @property
    def logger(self) -> Logger:
        """A structured logger bound to this worker (``logger.info("msg", {"k": v})``):
        every record carries the invocation's trace id, span id, function id and
        invocation id, and goes to the engine too when ``otel`` log export is on."""
        return self._telemetry.logger

    @functools.cached_property
    def state_store(self) -> StateClient:
        """Typed calls to the engine's ``state::*`` built-ins (get/set/update/delete/list,
        ``watch``); see docs/guides/state-and-streams.md. (``worker.state`` stays the
        lifecycle state.)"""
        return StateClient(cast("Worker", self))

    @functools.cached_property
    def streams(self) -> StreamClient:
        """Typed calls to the engine's ``stream::*`` built-ins, ``watch``, and ``serve``
        for a stream this worker stores; see docs/guides/state-and-streams.md."""
        return StreamClient(cast("Worker", self))

    def register_service(
        self,
        id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        parent_service_id: str | None = None,
    ) -> Registration:
        """Declare a service: a named group of functions in the engine's dashboard
        (bookkeeping only; ``name`` defaults to ``id``). Re-declared on every connection;
        ``unregister()`` stops that (the engine has no message to withdraw one)."""
        return register_service(
            self._services,
            self._registrations.send_control,
            id,
            name=name,
            description=description,
            parent_service_id=parent_service_id,
        )

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
    ) -> AbstractAsyncContextManager[ObserverHandle]:
        """Observe a function for the block (``async with worker.observe(...) as handle``).

        Every event of ``source`` (an invocation of an auto-delivered function, or what
        its owner hands over) that passes ``source["filters"]`` invokes ``target``, a
        registered function. ``await handle.ready()`` waits until the engine made the
        observer ``active``; leaving the block disposes it. The observer is replayed,
        same id, on every reconnect. Against an engine without ``observe.v1`` it turns
        ``error`` with code ``UNSUPPORTED`` (``ready()`` raises ``ObserveRejection``).
        See docs/guides/observe.md.
        """
        return self._observe.observe(
            source,
            target,
            id=id,
            max_fires=max_fires,
            expires_in_ms=expires_in_ms,
            max_in_flight=max_in_flight,
            metadata=metadata,
        )

    def observers(self, function_id: str) -> list[Observer]:
        """The active observers of a function this worker registered, as its owner sees
        them (owner delivery: ``observer.emit(event)`` / ``await observer.call(payload)``)."""
        return self._observe.observers(function_id)

    def open_channel(self, buffer_size: int | None = None) -> AbstractAsyncContextManager[Channel]:
        """A new data channel for the block: ``async with worker.open_channel() as
        (writer, reader):``. Each end connects when first used, so the ref of an end not
        used here (``channel.reader_ref``) can go to another worker in a payload; leaving
        the block ends the writer's stream. See docs/guides/channels-and-http.md."""
        return open_channel(cast("Worker", self), buffer_size)

    def channel_reader(
        self, ref: StreamChannelRef | Mapping[str, str]
    ) -> AbstractAsyncContextManager[ChannelReader]:
        """The reading end ``ref`` names, for the block."""
        return attach_reader(cast("Worker", self), ref)

    def channel_writer(
        self, ref: StreamChannelRef | Mapping[str, str]
    ) -> AbstractAsyncContextManager[ChannelWriter]:
        """The writing end ``ref`` names, for the block; leaving it ends the stream."""
        return attach_writer(cast("Worker", self), ref)
