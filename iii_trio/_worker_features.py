"""The feature clients a ``Worker`` offers beside its core API (mixed into ``Worker``).

Each is a one-line doorway to a module of its own (state and stream clients,
services...), so ``Worker`` itself stays the connection, registration and call API.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

from ._protocol._messages import RegisterService
from ._registrations import Registrations
from ._registry import Registration
from ._service import register_service
from ._state_client import StateClient
from ._stream_client import StreamClient

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["WorkerFeatures"]


class WorkerFeatures:
    """The 0.25 feature clients of a worker; ``Worker.__init__`` sets the parts used here."""

    _registrations: Registrations
    #: Services declared, by id: re-declared on every connection.
    _services: dict[str, RegisterService]

    def _install_features(self) -> None:
        """Plug the feature clients into the worker's parts (from ``Worker.__init__``)."""
        self._services = {}
        self._registrations.replay_extras.append(lambda: list(self._services.values()))

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
