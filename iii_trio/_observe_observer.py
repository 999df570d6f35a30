"""An observer as the owner of the observed function sees it, and how its hooks run.

``Observer`` is the object ``on_observer_added`` / ``on_observer_removed`` receive and
``Worker.observers`` lists; ``ObserverInfo`` is what the engine says of it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

import trio

from ._filter import CompiledFilter, MatchBudget, compile_filter
from ._handlers import run_in_thread
from ._observe_delivery import check_call, emit
from ._observe_types import DEFAULT_CAPTURE, ObserveHook, ObserveRejection

if TYPE_CHECKING:
    from ._observe_owner import FunctionObservers

#: Steps one observer's filters may take on one event (the engine's ``max_match_steps``).
MAX_MATCH_STEPS: Final = 10_000

__all__ = ["HookRun", "Observer", "ObserverInfo", "hook_error", "invoke_hook", "same_json"]


@dataclass(frozen=True)
class ObserverInfo:
    """An observer as its owner sees it on the wire (never its metadata or worker)."""

    id: str
    args: dict[str, Any]
    filters: Any
    target: str
    capture: tuple[str, ...]
    on: str
    legacy: dict[str, Any] | None

    @cached_property
    def size(self) -> int:
        """About the bytes this observer takes on the wire (its id, args, filters, target
        and legacy config): what bounds the observers an owner holds."""
        parts = (self.id, self.args, self.filters, self.target, self.legacy)
        return len(json.dumps(parts, separators=(",", ":"), default=repr).encode())

    @classmethod
    def of(cls, raw: Any) -> ObserverInfo:
        """Decoded leniently, as the official SDK: defaults for what is absent or malformed,
        filters kept as sent (a malformed one is refused, not read as "everything")."""
        data = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else raw
        if not isinstance(data, dict):
            data = {}
        capture = data.get("capture")
        legacy = data.get("legacy")
        filters = data.get("filters")
        return cls(
            id=_text(data, "id", ""),
            args=data["args"] if isinstance(data.get("args"), dict) else {},
            filters={} if filters is None else filters,
            target=_text(data, "target", ""),
            capture=tuple(c for c in capture if isinstance(c, str))
            if isinstance(capture, list)
            else DEFAULT_CAPTURE,
            on=_text(data, "on", "success"),
            legacy=(
                {"trigger_type": legacy["trigger_type"], "config": legacy.get("config")}
                if isinstance(legacy, dict) and isinstance(legacy.get("trigger_type"), str)
                else None
            ),
        )


def _text(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def same_json(a: Any, b: Any) -> bool:
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):
        return bool(a == b)


def compile_filters(filters: Any) -> CompiledFilter:
    """An observer's filters as the engine sent them (its normal form: trusted).
    Raises ``FilterError`` (a ``ValueError``) for a malformed one."""
    return compile_filter(filters, trusted=True)


class Observer:
    """An observer as the function's owner sees it (``on_observer_added``, ``observers()``).

    The same object for the observer's whole life, so an owner may keep it in its own
    index. ``args`` were checked by the engine against ``args_format``; ``filters``
    are applied by ``emit`` / ``call``; ``target`` is the target function id;
    ``legacy`` is ``{trigger_type, config}`` for one the engine made from an old
    ``register_trigger``.
    """

    def __init__(
        self, owner: FunctionObservers, info: ObserverInfo, compiled: CompiledFilter, revision: int
    ) -> None:
        self._owner = owner
        self.id = info.id
        self.function_id = owner.function_id
        self.args = info.args
        self.legacy = info.legacy
        self._update(info, compiled)
        self._revision = revision
        self._active = False
        #: A late rejection, acked again with every replayed set until the engine drops it.
        self._rejection: dict[str, str] | None = None
        self._adding = False
        #: Its ``ObserverInfo.size``: what it counts against its owner's bound.
        self._size = info.size

    def _update(self, info: ObserverInfo, compiled: CompiledFilter) -> None:
        self.filters: Any = info.filters
        self.target = info.target
        self.capture = list(info.capture)
        self.on = info.on
        self._filter = compiled

    def matches(self, doc: Mapping[str, Any], budget: MatchBudget | None = None) -> bool:
        """Whether the filters accept ``{input?, output?, error?, caller?, metadata?}``.

        At most ``MAX_MATCH_STEPS`` steps (``$any`` elements tested, ``$in`` items
        compared), fewer if ``budget`` has fewer left (it is charged with those taken):
        a filter that would walk further does not match, as in the engine, so an
        observer another worker made cannot stall this one's calls.
        """
        allowed = MAX_MATCH_STEPS if budget is None else min(MAX_MATCH_STEPS, budget.left)
        steps = MatchBudget(allowed)
        try:
            return self._filter.matches(doc, steps)
        finally:
            if budget is not None:
                budget.left -= allowed - steps.left

    def emit(self, event: Any) -> bool:
        """Owner delivery, fire and forget: hand ``event`` to this observer.

        ``False`` (nothing sent) when its filters refuse the event or it is no longer
        active. Raises ``InvocationError`` ``NOT_OWNER_DELIVERED`` on an auto function.
        Callable from a plain handler's thread.
        """
        return emit(self._owner, self, event)

    async def call(self, payload: Any, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - as trigger's
        """Owner delivery, request/response: invoke the target with ``payload``.

        Raises ``InvocationError`` ``FILTERS_NOT_MATCHED`` (nothing sent),
        ``OBSERVER_NOT_ACTIVE``, ``NOT_OWNER_DELIVERED``, or the engine's / target's error.
        """
        check_call(self._owner, self, payload)
        return await self._owner.host.call_target(self.target, self.id, payload, timeout)

    def reject(self, code: str, message: str) -> None:
        """Refuse an active observer late (a config reload); ``on_observer_removed`` runs
        when the engine removes it."""
        self._owner.reject(self, code, message)

    def to_dict(self) -> dict[str, Any]:
        """The observer as plain data."""
        out: dict[str, Any] = {
            "id": self.id,
            "function_id": self.function_id,
            "args": self.args,
            "filters": self.filters,
            "target": self.target,
            "capture": self.capture,
            "on": self.on,
        }
        if self.legacy is not None:
            out["legacy"] = self.legacy
        return out

    def __repr__(self) -> str:
        return f"Observer(id={self.id!r}, function_id={self.function_id!r}, target={self.target!r})"


@dataclass
class HookRun:
    """One hook call in a task of its own; it may outlive its timeout (see ``_run_hook``)."""

    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    error: BaseException | None = None
    finished: bool = False
    late: Callable[[], None] | None = None


def hook_error(function_id: str, error: BaseException | None) -> tuple[str, str] | None:
    if error is None:
        return None
    if isinstance(error, ObserveRejection):
        return error.code, error.message
    return "OBSERVE_REJECTED", str(error) or type(error).__name__


async def invoke_hook(hook: ObserveHook, obs: Observer) -> None:
    """A hook, async or plain (a plain one in a thread, holding a virtual clock still)."""
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        await hook(obs)  # type: ignore[misc]
        return
    result = await run_in_thread(lambda: hook(obs), trio.CapacityLimiter(1))
    if inspect.isawaitable(result):
        await result
