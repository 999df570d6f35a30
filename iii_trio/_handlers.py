"""Turning a user's handler (async or plain, typed or not) into one async call shape.

A handler takes the invocation's ``data``, and ``metadata`` too when it declares
a parameter of that name (second positional or keyword-only), as in the official
Python SDK. When its first parameter is annotated with a pydantic model, ``data``
is validated into it and the model's JSON schema is advertised as the function's
``request_format``; a model return annotation gives ``response_format``, and a
returned model is dumped to JSON.

The engine adds ``_caller_worker_id`` to an object payload a worker sends. A
handler with a model input gets the payload without it (unless the model declares
that key), so a model with ``extra="forbid"`` validates; an untyped handler gets
the payload as the engine sent it, as with the official SDK, which hands every
handler the raw payload. Either reads the caller from
``current_invocation().caller_worker_id``.

Plain ``def`` handlers and the virtual clock
--------------------------------------------
A plain handler runs in a thread, which Trio cannot see: while it works every task
waits, and a ``MockClock`` with an autojump threshold would jump, past the
caller's timeout if need be. So on such a clock the thread holds the autojump
while it works (``_ClockHold``): virtual time stands still until it returns, and
moves again while it waits on Trio through ``trio.from_thread.run`` (which runs
the coroutine in the invoking task, in a copy of the thread's context, where the
hold recognises it). A thread that waits for something only virtual time brings
(a ``threading.Event`` that a task sets after ``trio.sleep``) cannot be told from
one that computes; after ``CLOCK_HOLD_LIMIT_S`` real seconds the hold lets go of
it with a WARNING naming the function, and the clock jumps again. On a real clock
nothing of this runs.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import typing
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import trio
import trio.lowlevel
import trio.testing
from pydantic import BaseModel, JsonValue, ValidationError
from pydantic.fields import FieldInfo

from ._context import ENGINE_INJECTED_KEYS, current_invocation

__all__ = ["CLOCK_HOLD_LIMIT_S", "AdaptedHandler", "HandlerInputError", "adapt_handler", "to_json"]

log = logging.getLogger("iii_trio")

T = TypeVar("T")

#: Real seconds one run of a plain handler may keep a virtual clock still (see above).
CLOCK_HOLD_LIMIT_S = 30.0
#: Real seconds the whole run must have been idle before the hold looks again; the
#: clock's own ``autojump_threshold`` when that is longer.
_HOLD_POLL_S = 0.005

Handler = Callable[..., Any]


class HandlerInputError(Exception):
    """``data`` did not validate into the handler's model (answered ``deserialization_error``)."""


@dataclass(frozen=True)
class AdaptedHandler:
    run: Callable[[JsonValue, JsonValue], Awaitable[JsonValue]]
    request_format: JsonValue
    response_format: JsonValue
    is_async: bool


def to_json(value: Any) -> JsonValue:
    """A handler's or caller's value as JSON: pydantic models are dumped, the rest kept."""
    if isinstance(value, BaseModel):
        return typing.cast(JsonValue, value.model_dump(mode="json"))
    return typing.cast(JsonValue, value)


def _metadata_mode(signature: inspect.Signature | None) -> Literal["positional", "keyword", "none"]:
    parameter = signature.parameters.get("metadata") if signature else None
    if parameter is None or signature is None:
        return "none"
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
        return "keyword"
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2 and positional[1].name == "metadata":
        return "positional"
    return "none"


def _model(hint: object) -> type[BaseModel] | None:
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def _is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def adapt_handler(handler: Handler, limiter: trio.CapacityLimiter) -> AdaptedHandler:
    """Wrap ``handler``; plain functions run in a thread under ``limiter``."""
    if not callable(handler):
        raise TypeError(f"a handler must be callable, got {type(handler).__name__}")
    try:
        signature: inspect.Signature | None = inspect.signature(handler)
    except (TypeError, ValueError):
        signature = None
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # unresolvable annotations: treat the handler as untyped
        hints = {}
    first = next(iter(signature.parameters.values()), None) if signature else None
    input_model = _model(hints.get(first.name)) if first is not None else None
    output_model = _model(hints.get("return"))
    mode = _metadata_mode(signature)
    is_async = _is_async(handler)
    injected = ENGINE_INJECTED_KEYS - _input_keys(input_model) if input_model else frozenset()

    def arguments(data: JsonValue, metadata: JsonValue) -> tuple[tuple[Any, ...], dict[str, Any]]:
        value: Any = data
        if input_model is not None:
            if injected and isinstance(data, dict):
                data = {key: item for key, item in data.items() if key not in injected}
            try:
                value = input_model.model_validate(data)
            except ValidationError as exc:
                raise HandlerInputError(str(exc)) from None
        if mode == "positional":
            return (value, metadata), {}
        if mode == "keyword":
            return (value,), {"metadata": metadata}
        return (value,), {}

    async def run(data: JsonValue, metadata: JsonValue) -> JsonValue:
        args, kwargs = arguments(data, metadata)
        if is_async:
            result = await handler(*args, **kwargs)
        else:
            result = await run_in_thread(partial(handler, *args, **kwargs), limiter)
        return to_json(result)

    async def run_untyped(data: JsonValue, metadata: JsonValue) -> JsonValue:
        # The common shape, ``async def f(data)``: nothing to validate or arrange.
        return to_json(await handler(data))

    return AdaptedHandler(
        run=run_untyped if is_async and input_model is None and mode == "none" else run,
        request_format=_schema(input_model),
        response_format=_schema(output_model),
        is_async=is_async,
    )


def _input_keys(model: type[BaseModel]) -> frozenset[str]:
    """The payload keys ``model`` reads: field names and their string aliases."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        keys.update(_aliases(info))
    return frozenset(keys)


def _aliases(info: FieldInfo) -> set[str]:
    aliases = {alias for alias in (info.alias, info.validation_alias) if isinstance(alias, str)}
    choices = getattr(info.validation_alias, "choices", ())
    return aliases | {choice for choice in choices if isinstance(choice, str)}


def _schema(model: type[BaseModel] | None) -> JsonValue:
    return typing.cast(JsonValue, model.model_json_schema()) if model is not None else None


# -- plain handlers' threads ------------------------------------------------------------------


async def run_in_thread(call: Callable[[], T], limiter: trio.CapacityLimiter) -> T:
    """Run ``call`` in a worker thread under ``limiter``, holding a virtual clock still.

    Not abandoned on cancel: the thread is part of the invocation's scope, so the
    scope ends when it does (a sync handler can poll
    ``trio.from_thread.check_cancelled()`` to stop early).
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock) or clock.autojump_threshold == math.inf:
        return await trio.to_thread.run_sync(call, limiter=limiter)
    hold = _ClockHold.of(clock)
    context = current_invocation()
    held = _Held(
        trio.lowlevel.current_task(), context.function_id if context else "a plain handler"
    )

    def in_thread() -> T:
        _HELD_BY.set(held)
        return call()

    # The slot first, then the hold: held while waiting for a slot, this call would
    # stop the clock that the threads in the slots may need to move (one waiting on
    # Trio for a ``trio.sleep``) before they give their slot up. And the hold before
    # the thread starts: with a zero threshold the clock jumps the moment all wait.
    async with limiter:
        hold.add(held)
        try:
            return await trio.to_thread.run_sync(in_thread, limiter=hold.unlimited)
        finally:
            hold.held.discard(held)


#: In a plain handler's thread (and in what it runs through ``trio.from_thread``),
#: the hold entry of that thread.
_HELD_BY: ContextVar[_Held | None] = ContextVar("iii_trio_held_by", default=None)


@dataclass(eq=False)
class _Held:
    """One plain handler's thread that keeps the virtual clock still."""

    host: trio.lowlevel.Task
    function_id: str
    #: When the thread started running (``time.monotonic()``).
    since: float = 0.0
    let_go: bool = False

    def working(self) -> bool:
        """Whether the thread is running its own code (not waiting on Trio)."""
        # ``trio.from_thread.run`` runs its coroutine in the task that started the
        # thread (``host``), with a copy of the thread's context as that task's
        # context; anywhere else the host waits on the thread.
        return not self.let_go and self.host.context.get(_HELD_BY) is not self


_HOLDS: trio.lowlevel.RunVar[_ClockHold] = trio.lowlevel.RunVar("iii_trio_clock_hold")


class _ClockHold:
    """Holds a ``MockClock``'s autojump while any plain handler's thread works.

    Trio's autojump does not happen while a task waits in
    ``trio.testing.wait_all_tasks_blocked``; this run's one system task waits there
    while threads are held, and when the run has been idle for a while and no held
    thread works (each waits on Trio, or was let go), it jumps the clock itself,
    to the next deadline, as the autojump would have.
    """

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self.clock = clock
        self.held: set[_Held] = set()
        #: The threads' limiter once the handler's own ``limiter`` gave the slot.
        self.unlimited = trio.CapacityLimiter(math.inf)
        self._wake = trio.Event()

    @classmethod
    def of(cls, clock: trio.testing.MockClock) -> _ClockHold:
        """This run's hold, started on first use."""
        try:
            return _HOLDS.get()
        except LookupError:
            hold = cls(clock)
            _HOLDS.set(hold)
            trio.lowlevel.spawn_system_task(hold._run, name="iii_trio clock hold")
            return hold

    def add(self, held: _Held) -> None:
        held.since = time.monotonic()
        self.held.add(held)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self.held:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await trio.testing.wait_all_tasks_blocked(
                max(self.clock.autojump_threshold, _HOLD_POLL_S)
            )
            if not any(held.working() for held in self._over_time()):
                self._jump()

    def _over_time(self) -> set[_Held]:
        """The held threads, after letting go of those held too long (with a warning)."""
        now = time.monotonic()
        for held in self.held:
            if not held.let_go and held.working() and now - held.since > CLOCK_HOLD_LIMIT_S:
                held.let_go = True
                log.warning(
                    "%s: its plain def handler's thread has kept the virtual clock (MockClock) "
                    "still for %.0f s of real time while every task waited; letting the clock "
                    "move again. A thread that waits for something only virtual time brings "
                    "(an event set after trio.sleep) never returns while the clock stands "
                    "still: make the handler async def, or wait through trio.from_thread.run",
                    held.function_id,
                    now - held.since,
                )
        return self.held

    def _jump(self) -> None:
        if self.clock.autojump_threshold == math.inf:
            return
        seconds = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if 0 < seconds < math.inf:
            self.clock.jump(seconds)
