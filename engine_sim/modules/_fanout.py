"""Calling a trigger type's bindings one after another, as the state and stream modules do.

Upstream's ``state`` and ``stream`` fan-outs spawn one task per event that awaits
each matching binding in turn: its condition function first (if any), then its
handler (https://github.com/iii-hq/iii/blob/main/engine/src/condition.rs for the
condition's rule). Here a binding's call answers through a callback, and that
callback starts the next binding.

A call may answer before ``invoke`` returns (a built-in function, or one that does
not exist), so the next step must not start from inside the previous one's
callback: a few hundred such bindings would nest that deep and overflow Python's
stack. ``run_in_turn`` loops instead, and a callback that comes at once only tells
the loop to go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from pydantic import JsonValue

from iii_trio.protocol import ErrorBody

from .._records import Binding
from ._seam import ModuleHost

__all__ = ["EventBound", "Step", "conditional_fire", "run_in_turn"]

#: One step: starts its call(s) and calls ``resume()`` once when it is over.
Step = Callable[[Callable[[], None]], None]


class _Turns:
    def __init__(self, steps: Iterator[Step], on_done: Callable[[], None] | None) -> None:
        self.steps = steps
        self.on_done = on_done
        self.running = False
        self.resumed = False

    def resume(self) -> None:
        if self.running:
            self.resumed = True  # the step ended at once: the loop below goes on
            return
        self.running = True
        try:
            for step in self.steps:
                self.resumed = False
                step(self.resume)
                if not self.resumed:
                    return  # waiting for an answer; its callback resumes us
            if self.on_done is not None:
                self.on_done()
        finally:
            self.running = False


def run_in_turn(steps: Iterable[Step], on_done: Callable[[], None] | None = None) -> None:
    """Run ``steps`` one after another, each once the previous one resumed; then
    ``on_done()``."""
    _Turns(iter(steps), on_done).resume()


def conditional_fire(
    host: ModuleHost, what: str, binding: Binding, condition: str | None, event: JsonValue
) -> Step:
    """The step that calls ``binding`` with ``event`` if its condition function (if
    any) did not answer a JSON ``false`` or fail; failures are logged as errors,
    naming the ``what`` trigger."""

    def step(resume: Callable[[], None]) -> None:
        def fired(_result: JsonValue, error: ErrorBody | None) -> None:
            if error is not None:
                host.log.error(
                    "%s trigger %s -> %s failed: %s: %s",
                    what,
                    binding.id,
                    binding.function_id,
                    error.code,
                    error.message,
                )
            resume()

        def checked(result: JsonValue, error: ErrorBody | None) -> None:
            if error is not None:
                host.log.error(
                    "%s trigger %s: condition %s failed: %s: %s",
                    what,
                    binding.id,
                    condition,
                    error.code,
                    error.message,
                )
                resume()
            elif result is False:  # only an explicit false skips (upstream check_condition)
                host.log.debug("%s trigger %s: condition false, skipped", what, binding.id)
                resume()
            else:
                host.fire(binding, event, on_result=fired)

        if condition is None:
            host.fire(binding, event, on_result=fired)
        else:
            host.invoke(condition, event, namespace=binding.target_namespace, on_result=checked)

    return step


class EventBound:
    """Events whose bindings are still being served, bounded in count and bytes: a
    slow handler holds its events up, and each waits here with its payload."""

    def __init__(self, log: logging.Logger, max_events: int, max_bytes: int) -> None:
        self.log = log
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events = 0
        self.bytes = 0

    def admit(self, size: int, describe: str) -> Callable[[], None] | None:
        """Room for one more event of ``size`` bytes: the function that releases it,
        or ``None`` (logged as a warning naming ``describe``) when there is none."""
        if self.events >= self.max_events or self.bytes + size > self.max_bytes:
            self.log.warning(
                "%s not delivered: %d events (%d bytes) are still being handled "
                "(limits %d events, %d bytes); a trigger's handler is slower than "
                "the changes it watches",
                describe,
                self.events,
                self.bytes,
                self.max_events,
                self.max_bytes,
            )
            return None
        self.events += 1
        self.bytes += size
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.events -= 1
                self.bytes -= size

        return release
