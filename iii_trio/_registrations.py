"""Registration and replay: what a worker registers, and what it sends on each connect.

Every registration is kept in the ``Registry`` and sent on the live connection if
there is one; each new connection replays them all (``handshake``), then the frames
that features add (``replay_extras``), the offline calls, and the worker's
``engine::workers::register`` announcement. When the engine greets the connection
(``workerregistered``) the ``registered_hooks`` run (features negotiation).
"""

from __future__ import annotations

import functools
import os
import platform
import tomllib
from collections.abc import Callable, Iterable
from typing import Any, Final
from uuid import UUID

import trio
from pydantic import JsonValue

from ._calls import home_namespace
from ._handlers import Handler, adapt_handler, to_json
from ._http_invocation import HttpInvocation, http_invoked_handler
from ._live import Live
from ._options import InitOptions
from ._outbox import Outgoing
from ._protocol._codec import encode
from ._protocol._constants import (
    FEATURE_LARGE_MESSAGES_V1,
    FEATURE_LOCAL_DISPATCH_V1,
    FEATURE_OBSERVE_V1,
)
from ._protocol._messages import (
    InvokeFunction,
    Message,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterFunction,
    UnregisterTrigger,
    WorkerRegistered,
)
from ._protocol._observe_types import ObserveDescriptor
from ._protocol._types import VoidAction
from ._registry import (
    FunctionRegistration,
    Registration,
    Registry,
    TriggerRegistration,
    TriggerTypeProvider,
    TriggerTypeRegistration,
)
from ._version import __version__

__all__ = ["RegisteredHook", "Registrations", "ReplayExtra", "project_name"]

#: The order the official SDK 0.25 declares its features in (the rest follow as added).
_FEATURE_ORDER: Final = (FEATURE_OBSERVE_V1, FEATURE_LOCAL_DISPATCH_V1, FEATURE_LARGE_MESSAGES_V1)

#: ``hook(live, message)``: the engine registered the worker on ``live``. Runs in the
#: connection's reader before the next frame is read, so it must not block.
RegisteredHook = Callable[[Live, WorkerRegistered], None]
#: Frames to send on every new connection after the registrations (features' own).
ReplayExtra = Callable[[], Iterable[Message]]


class Registrations:
    """The worker's registrations, and the frames that open each of its connections."""

    def __init__(
        self,
        name: str,
        namespace: str | None,
        options: InitOptions,
        threads: trio.CapacityLimiter,
        new_uuid: Callable[[], UUID],
        current: Callable[[], Live | None],
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.options = options
        self.registry = Registry()
        self._threads = threads
        self._new_uuid = new_uuid
        self._current = current
        #: Run when the engine greets a connection (``workerregistered``), in order.
        self.registered_hooks: list[RegisteredHook] = []
        #: Frames sent after the registrations on every connect, in order.
        self.replay_extras: list[ReplayExtra] = []
        #: Run when the engine refuses one function's id (``FUNCTION_NAMESPACE_CONFLICT``)
        #: on a connection, with that connection and the function's id.
        self.refused_hooks: list[Callable[[Live, str], None]] = []
        #: The 0.25 features this worker declares (each added by its feature's module
        #: once enabled), announced in ``engine::workers::register``.
        self.features: list[str] = []

    # -- registering ----------------------------------------------------------------------

    def function(
        self,
        function_id: str,
        handler: Handler | None,
        description: str | None,
        metadata: JsonValue,
        request_format: JsonValue,
        response_format: JsonValue,
        http: HttpInvocation | None = None,
        observe: ObserveDescriptor | None = None,
    ) -> Registration:
        if not function_id:
            raise ValueError("function_id must not be empty")
        functions = self.registry.functions
        if function_id in functions:
            raise ValueError(f"function {function_id!r} is already registered on this worker")
        if (handler is None) == (http is None):
            raise TypeError(
                "register_function takes a handler or http=HttpInvocation(...), not both"
            )
        if http is not None:
            # The engine calls the URL; the stand-in only answers an engine that cannot.
            adapted = adapt_handler(http_invoked_handler(function_id), self._threads)
            message = RegisterFunction(
                id=function_id,
                description=description,
                request_format=request_format,
                response_format=response_format,
                metadata=metadata,
                invocation=http.to_wire(),
                observe=observe,
            )
        else:
            assert handler is not None
            adapted = adapt_handler(handler, self._threads)
            message = RegisterFunction(
                id=function_id,
                description=description,
                request_format=(
                    request_format if request_format is not None else adapted.request_format
                ),
                response_format=(
                    response_format if response_format is not None else adapted.response_format
                ),
                metadata=metadata,
                observe=observe,
            )
        encode(message)  # refuse a non-JSON description or metadata now, not on connect
        registration = FunctionRegistration(message, adapted)
        functions[function_id] = registration
        self.send_control(message)

        def remove() -> None:
            if functions.get(function_id) is registration:
                del functions[function_id]
                self.send_control(UnregisterFunction(id=function_id))

        return Registration("function", function_id, remove)

    def trigger_type(
        self,
        trigger_type_id: str,
        provider: TriggerTypeProvider,
        description: str,
        trigger_request_format: JsonValue,
        call_request_format: JsonValue,
    ) -> Registration:
        if not trigger_type_id:
            raise ValueError("trigger_type_id must not be empty")
        trigger_types = self.registry.trigger_types
        if trigger_type_id in trigger_types:
            raise ValueError(f"trigger type {trigger_type_id!r} is already registered")
        message = RegisterTriggerType(
            id=trigger_type_id,
            description=description,
            trigger_request_format=trigger_request_format,
            call_request_format=call_request_format,
            namespace=self.namespace,
        )
        encode(message)
        registration = TriggerTypeRegistration(message, provider)
        trigger_types[trigger_type_id] = registration
        self.send_control(message)

        def remove() -> None:
            if trigger_types.get(trigger_type_id) is registration:
                del trigger_types[trigger_type_id]

        return Registration("trigger type", trigger_type_id, remove)

    def trigger(
        self,
        trigger_type: str,
        function_id: str,
        config: Any,
        id: str | None,
        metadata: JsonValue,
        namespace: str | None,
        trigger_namespace: str | None,
    ) -> Registration:
        trigger_id = id or str(self._new_uuid())
        triggers = self.registry.triggers
        if trigger_id in triggers:
            raise ValueError(f"trigger {trigger_id!r} is already registered")
        message = RegisterTrigger(
            id=trigger_id,
            trigger_type=trigger_type,
            function_id=function_id,
            config=to_json(config),
            metadata=metadata,
            namespace=home_namespace(namespace, self.namespace),
            trigger_namespace=trigger_namespace,
        )
        encode(message)
        registration = TriggerRegistration(message)
        triggers[trigger_id] = registration

        def remove() -> None:
            if triggers.get(trigger_id) is registration:
                del triggers[trigger_id]
                self.send_control(UnregisterTrigger(id=trigger_id, trigger_type=trigger_type))

        self.send_control(message)
        return Registration("trigger", trigger_id, remove)

    def send_control(self, message: Message) -> None:
        """Send a registration change on the live connection; offline, the replay covers it."""
        live = self._current()
        if live is not None and live.lost is None:
            live.outbox.put_nowait(Outgoing(encode(message)), control=True)

    # -- connecting -------------------------------------------------------------------------

    def handshake(self, worker_id: str | None, reattach_token: str | None) -> list[Message]:
        """What a new connection sends first: a reattach, the registrations, the extras."""
        first: list[Message] = []
        if worker_id is not None:
            first.append(Reattach(previous_worker_id=worker_id, reattach_token=reattach_token))
        first.extend(self.registry.replay())
        for extra in self.replay_extras:
            first.extend(extra())
        return first

    def announcement(self) -> InvokeFunction:
        """The ``engine::workers::register`` call that ends the handshake."""
        data: dict[str, JsonValue] = {
            "runtime": "python",
            "version": __version__,
            "name": self.name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "isolation": os.environ.get("III_ISOLATION") or None,
            "namespace": self.namespace,
            "telemetry": self._telemetry(),
        }
        if self.features:
            # Only when there are some: a worker with no 0.25 feature announces itself
            # byte for byte as before (an engine reads an absent list as an empty one).
            data["features"] = self.declared_features()
        if self.options.worker_description:
            data["description"] = self.options.worker_description
        return InvokeFunction(
            function_id="engine::workers::register", data=data, action=VoidAction()
        )

    def _telemetry(self) -> dict[str, JsonValue]:
        """The announcement's ``telemetry``: ``InitOptions.telemetry``, else detected."""
        given = self.options.telemetry
        return {
            "language": (given and given.language)
            or os.environ.get("LANG", "").split(".")[0]
            or None,
            "project_name": (given and given.project_name) or project_name(),
            "framework": (given and given.framework) or "iii-trio",
        }

    def declared_features(self) -> list[JsonValue]:
        """``features`` without repeats, in the official SDK's order, then as added."""
        unique = list(dict.fromkeys(self.features))
        known = [feature for feature in _FEATURE_ORDER if feature in unique]
        return known + [feature for feature in unique if feature not in _FEATURE_ORDER]

    def registered(self, live: Live, message: WorkerRegistered) -> None:
        """The engine greeted ``live``: run the hooks features added."""
        for hook in self.registered_hooks:
            hook(live, message)


def project_name() -> str | None:
    """The ``[project] name`` of a ``pyproject.toml`` in the working directory, as the
    official SDK reports it for telemetry.

    Parsed again only when the file is another one or has changed: every connection
    announces it, and a simulation that connects thousands of times spent a fifth of
    its CPU parsing the same file.
    """
    try:
        seen = os.stat("pyproject.toml")
        where = os.getcwd()
    except OSError:
        return None
    # ctime as well as mtime: a chmod that lets the file be read changes only ctime.
    return project_name_in(where, seen.st_ino, seen.st_mtime_ns, seen.st_ctime_ns, seen.st_size)


@functools.lru_cache(maxsize=4)
def project_name_in(
    directory: str, inode: int, mtime_ns: int, ctime_ns: int, size: int
) -> str | None:
    """``project_name`` for one version of the file (cached: see there)."""
    try:
        with open(os.path.join(directory, "pyproject.toml"), "rb") as file:
            name = tomllib.load(file).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None
