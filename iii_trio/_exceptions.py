"""Every exception iii_trio raises, in one tree.

::

    IIIError                      base class; catch this to catch anything of ours
    ├── ProtocolError             (also a ValueError) a frame that cannot be decoded or
    │   │                         encoded; the message says what was wrong with it
    │   ├── UnknownMessageType    a well-formed JSON object whose ``type`` this protocol
    │   │                         does not define; readers log it and keep going
    │   └── FrameTooLarge         a frame over the size limit, refused before parsing
    ├── ConnectionClosed          the other end closed the connection (or it broke);
    │   │                         carries the WebSocket close ``code`` and ``reason``
    │   ├── ConnectionLost        a ``trigger()`` was waiting for an answer on a
    │   │                         connection that ended; the call may or may not have
    │   │                         run, and a reconnect will not bring its answer
    │   └── ConnectFailed         an attempt to connect failed before the WebSocket was
    │                             open; ``url`` and ``cause`` (``connection refused``,
    │                             ``name not resolved``, ``HTTP 404 at /path``, ...)
    ├── InvalidUrl                (also a ValueError) the engine URL is not ``ws://`` or
    │                             ``wss://`` with a host (and a valid port); raised by
    │                             ``register_worker`` before anything connects
    ├── IllegalTransition         (also a RuntimeError) a lifecycle event that the
    │                             current state does not allow; names state and event
    ├── InvocationError           a called function failed; ``code``, ``message`` and
    │   │                         ``stacktrace`` are the error the engine relayed
    │   ├── FunctionNotFound      ``function_not_found``: nobody serves that id there
    │   ├── InvocationStopped     ``invocation_stopped``: the worker running it left
    │   └── InvocationTimeout     (also a ``trio.TooSlowError``) code ``TIMEOUT``: no
    │                             answer within the call's timeout
    ├── RegistrationRejected      the engine refused a registration (``registrationrejected``);
    │                             for ``WORKER_NAMESPACE_CONFLICT`` the worker has failed
    ├── ReadyTimeout              (also a ``trio.TooSlowError``) ``ready(timeout=...)``
    │                             ran out; names the URL, the time waited and the last
    │                             connection error (``last_error``)
    ├── ReconnectFailed           ``reconnection_config.max_retries`` attempts failed; the
    │                             worker has failed (``__cause__`` is the last error)
    ├── SendBufferFull            the bounded offline buffer is full; the frame was
    │                             refused, not queued, and nothing older was dropped
    └── WorkerClosed              the worker has shut down (or failed): nothing can be
                                  sent through it any more

A peer that sends bad frames is expected (a version skew, a buggy client), so the
protocol errors carry enough to log and skip. An ``IllegalTransition`` is always a
bug in the code driving the state machine, never a peer's fault.

Only the errors a worker cannot recover from leave ``async with register_worker()``:
``RegistrationRejected`` for a worker-name conflict and ``ReconnectFailed``. They come
out as themselves, never inside an exception group. ``InvalidUrl`` comes out of
entering the block, before anything runs in the background.
"""

from __future__ import annotations

from typing import Final

import trio

__all__ = [
    "ABNORMAL_CLOSURE",
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionLost",
    "FrameTooLarge",
    "FunctionNotFound",
    "IIIError",
    "IllegalTransition",
    "InvalidUrl",
    "InvocationError",
    "InvocationStopped",
    "InvocationTimeout",
    "ProtocolError",
    "ReadyTimeout",
    "ReconnectFailed",
    "RegistrationRejected",
    "SendBufferFull",
    "UnknownMessageType",
    "WorkerClosed",
]


class IIIError(Exception):
    """Base class of every exception raised by iii_trio."""


class ProtocolError(IIIError, ValueError):
    """A frame could not be decoded, or a message could not be encoded."""


class UnknownMessageType(ProtocolError):
    """A JSON object whose ``type`` is not a message this protocol defines.

    Newer engines and SDKs add message types (e.g. the ``observe`` family), so a
    reader that gets this should log it and read the next frame.
    """

    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


class FrameTooLarge(ProtocolError):
    """A frame larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


#: Close code of a link that ended without a closing handshake.
ABNORMAL_CLOSURE: Final = 1006


class ConnectionClosed(IIIError):
    """The connection is closed; ``code`` is the WebSocket close code (``ABNORMAL_CLOSURE``,
    1006, if it broke)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class ConnectionLost(ConnectionClosed):
    """A call was waiting on a connection that ended; its answer can never arrive."""

    def __init__(self, code: int, reason: str = "", *, function_id: str = "") -> None:
        super().__init__(code, reason)
        self.function_id = function_id
        what = f"call to {function_id}" if function_id else "call"
        self.args = (f"{what} lost with its connection ({code}{': ' + reason if reason else ''})",)


class ConnectFailed(ConnectionClosed):
    """A connection attempt failed before the WebSocket was open (close code 1006).

    ``cause`` says why in a few words a user can act on: ``connection refused`` (no
    engine listens there), ``name not resolved``, ``HTTP 404 at /path`` (wrong path),
    a timeout, a TLS error.
    """

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(ABNORMAL_CLOSURE, f"cannot connect to {url!r}: {cause}")
        self.url = url
        self.cause = cause
        self.args = (self.reason,)


class InvalidUrl(IIIError, ValueError):
    """The engine URL cannot be used: ``problem`` says what is wrong with ``url``."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(
            f"invalid engine URL {url!r}: {problem}; expected ws://host[:port][/path] or "
            "wss://host[:port][/path], e.g. ws://127.0.0.1:49134"
        )
        self.url = url
        self.problem = problem


class IllegalTransition(IIIError, RuntimeError):
    """A lifecycle event was applied in a state whose table has no edge for it."""

    def __init__(self, machine: str, state: str, event: str, detail: str = "") -> None:
        text = f"{machine}: event {event} is not allowed in state {state!r}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.machine = machine
        self.state = state
        self.event = event


class InvocationError(IIIError):
    """The called function (or the engine, on its behalf) answered with an error."""

    def __init__(
        self, code: str, message: str, stacktrace: str | None = None, *, function_id: str = ""
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stacktrace = stacktrace
        self.function_id = function_id


class FunctionNotFound(InvocationError):
    """``function_not_found``: no worker serves the id in the addressed namespace."""


class InvocationStopped(InvocationError):
    """``invocation_stopped``: the worker running the call disconnected mid-call.

    Treat it as a cancellation: retrying fails until a worker serves the id again.
    """


class InvocationTimeout(InvocationError, trio.TooSlowError):
    """No answer within the call's timeout (code ``TIMEOUT``); the call was given up."""


class RegistrationRejected(IIIError):
    """The engine refused a function id or this worker's name (``registrationrejected``)."""

    def __init__(
        self,
        code: str,
        namespace: str,
        *,
        worker_name: str | None = None,
        function_id: str | None = None,
        owner_worker_id: str = "",
    ) -> None:
        what = f"function {function_id!r}" if function_id else f"worker name {worker_name!r}"
        owner = f" (owned by {owner_worker_id})" if owner_worker_id else ""
        super().__init__(f"{code}: {what} in namespace {namespace!r} refused{owner}")
        self.code = code
        self.namespace = namespace
        self.worker_name = worker_name
        self.function_id = function_id
        self.owner_worker_id = owner_worker_id


class ReadyTimeout(IIIError, trio.TooSlowError):
    """``ready(timeout=...)`` ran out before the worker was connected and registered.

    Also a ``trio.TooSlowError``, what ``trio.fail_after`` raises, so code written
    for that keeps working. (Not a ``TimeoutError``: that is an ``OSError``, which
    retry loops, ours included, take for a network failure.)
    """

    def __init__(
        self,
        url: str,
        waited: float,
        *,
        state: str,
        failed_attempts: int = 0,
        last_error: BaseException | None = None,
    ) -> None:
        if last_error is None:
            last = "no connection attempt has failed yet"
        else:
            cause = last_error.cause if isinstance(last_error, ConnectFailed) else str(last_error)
            tries = "attempt" if failed_attempts == 1 else "attempts"
            last = f"{failed_attempts} failed connection {tries}, the last: {cause}"
        if state == "registering":
            # Connected, and nothing came back: a WebSocket server that is not an iii
            # worker port (the stream port, another service) looks exactly like this.
            last += (
                "; connected, but the engine has not registered the worker: is this the "
                "engine's worker port?"
            )
        super().__init__(f"not ready after {waited:g} s at {url!r} (state {state}); {last}")
        self.url = url
        self.waited = waited
        self.state = state
        self.failed_attempts = failed_attempts
        self.last_error = last_error


class ReconnectFailed(IIIError):
    """Every connection attempt allowed by ``max_retries`` failed."""

    def __init__(
        self, attempts: int, url: str = "", last_error: BaseException | None = None
    ) -> None:
        where = f" to {url!r}" if url else ""
        cause = last_error.cause if isinstance(last_error, ConnectFailed) else last_error
        last = f"; the last: {cause}" if cause else ""
        tries = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"gave up after {attempts} failed connection {tries}{where}{last}")
        self.attempts = attempts
        self.url = url
        self.last_error = last_error


class SendBufferFull(IIIError):
    """The worker is offline and its bounded send buffer is full; the frame was refused."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"offline send buffer is full ({capacity} frames); nothing was sent")
        self.capacity = capacity


class WorkerClosed(IIIError):
    """The worker has shut down or failed; ``__cause__`` says why when it failed."""
