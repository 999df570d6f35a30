"""Turning a user's handler (async or plain, typed or not) into one async call shape.

A handler takes the invocation's ``data``, and ``metadata`` too when it declares
a parameter of that name (second positional or keyword-only), as in the official
Python SDK. When its first parameter is annotated with a pydantic model, ``data``
is validated into it and the model's JSON schema is advertised as the function's
``request_format``; a model return annotation gives ``response_format``, and a
returned model is dumped to JSON.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import trio
from pydantic import BaseModel, JsonValue, ValidationError

__all__ = ["AdaptedHandler", "HandlerInputError", "adapt_handler", "to_json"]

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

    def arguments(data: JsonValue, metadata: JsonValue) -> tuple[tuple[Any, ...], dict[str, Any]]:
        value: Any = data
        if input_model is not None:
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
            # Not abandoned on cancel: the thread is part of the invocation's scope, so
            # the scope ends when it does (a sync handler can poll
            # ``trio.from_thread.check_cancelled()`` to stop early).
            result = await trio.to_thread.run_sync(
                partial(handler, *args, **kwargs), limiter=limiter
            )
        return to_json(result)

    return AdaptedHandler(
        run=run,
        request_format=_schema(input_model),
        response_format=_schema(output_model),
        is_async=is_async,
    )


def _schema(model: type[BaseModel] | None) -> JsonValue:
    return typing.cast(JsonValue, model.model_json_schema()) if model is not None else None
