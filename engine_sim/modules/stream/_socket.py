"""The stream port: browsers and other clients subscribe to stream changes here.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/stream.rs
(``ws_handler``: the ``auth_function`` call), ``socket.rs`` (the read loop) and
``connection.rs`` (join, leave, sync, cleanup). The protocol, as the motia stream
clients speak it:

* the client sends ``{"type": "join" | "leave", "data": {"subscriptionId",
  "streamName", "groupId", "id"?}}`` (text or binary); a blank text frame is
  skipped, anything else that is not a join or leave is logged and skipped;
* on a join the ``stream:join`` hooks run one after another; if one answers
  ``{"unauthorized": true}`` the client gets an ``unauthorized`` event and no
  subscription; otherwise the subscription is kept and the client gets a ``sync``
  event with the item (``id`` given; ``null`` if none) or the group's items;
* on a leave the ``stream:leave`` hooks run, then the subscription is dropped;
  when the connection ends the leave hooks run for every subscription it held;
* every change to a subscribed group (or item) arrives as a change message.

Messages of one connection are handled in order: the next is read once the
previous one's hooks answered (or after ``HOOK_WAIT`` seconds, logged, so a hung
hook cannot hold the connection forever).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio
from pydantic import JsonValue

from iii_trio import ConnectionClosed
from iii_trio.protocol import ErrorBody

from ..._peers import Peer
from .._seam import ModuleIO, PortRequest
from ._events import (
    UNAUTHORIZED,
    ClientMessage,
    ItemKey,
    change_message,
    encode,
    item_event,
    join_leave_payload,
    parse_client_message,
)
from ._hub import Subscriber
from ._triggers import JOIN_TRIGGER_TYPE, LEAVE_TRIGGER_TYPE, run_hooks

if TYPE_CHECKING:
    from ._module import StreamModule

__all__ = ["HOOK_WAIT", "MAX_SUBSCRIPTIONS", "query_to_multi_map", "serve_subscriber"]

#: Seconds a connection waits for its hooks (auth, join, leave) before reading on.
HOOK_WAIT: Final = 30.0
#: Subscriptions one connection may hold (engine_sim's bound; upstream has none).
MAX_SUBSCRIPTIONS = 4096


def query_to_multi_map(query: str) -> dict[str, JsonValue]:
    """``a=1&a=2&b=`` → ``{"a": ["1", "2"], "b": [""]}``; like upstream's
    ``query_to_multi_map``, pairs are split on ``&`` and the first ``=`` and not
    percent-decoded, and a pair without a name is skipped."""
    out: dict[str, list[str]] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name:
            out.setdefault(name, []).append(value)
    return {name: list[JsonValue](values) for name, values in out.items()}


# -- the core side (run through ``io.call``) ----------------------------------------------


def authenticate(
    module: StreamModule, request: PortRequest, done: Callable[[JsonValue], None]
) -> None:
    """Ask the ``auth_function`` for the connection's context; ``done(context)``.

    As upstream, a failed call or an answer without a ``context`` leaves the
    connection open with no context."""
    function_id = module.settings.auth_function
    assert function_id is not None
    payload: dict[str, JsonValue] = {
        "headers": dict(request.headers),
        "path": request.path,
        "query_params": query_to_multi_map(request.query),
        "addr": request.ip or "",
    }

    def answered(result: JsonValue, error: ErrorBody | None) -> None:
        if error is not None:
            module.host.log.error(
                "stream auth function %s failed: %s: %s", function_id, error.code, error.message
            )
        context = result.get("context") if isinstance(result, dict) else None
        done(context)

    module.host.invoke(function_id, payload, on_result=answered)


def _send_to(
    module: StreamModule, sub: Subscriber, message: ClientMessage, event: dict[str, JsonValue]
) -> None:
    frame = change_message(
        module.timestamp_ms(), message.stream_name, message.group_id, message.item_id, event
    )
    module.hub.deliver(sub, encode(frame))


def _sync(
    module: StreamModule, sub: Subscriber, message: ClientMessage, done: Callable[[], None]
) -> None:
    key = ItemKey(message.stream_name, message.group_id, message.item_id)
    op = "list" if message.item_id is None else "get"
    custom = module.custom_provider(op, key)
    if custom is None:
        data = module.read(key)
        _send_to(module, sub, message, item_event("sync", data))
        done()
        return

    def answered(result: JsonValue, error: ErrorBody | None) -> None:
        if error is not None:
            module.host.log.error(
                "%s: no sync for %s: %s: %s", sub.name, custom, error.code, error.message
            )
        elif sub.conn_id in module.hub.subscribers:
            _send_to(module, sub, message, item_event("sync", result))
        done()

    module.host.invoke(custom, key.to_json(), on_result=answered)


def handle_message(
    module: StreamModule, sub: Subscriber, message: ClientMessage, done: Callable[[], None]
) -> None:
    """A join or leave from ``sub``; ``done()`` once its hooks (and sync) are over."""
    payload = join_leave_payload(message, sub.context)
    if message.kind == "leave":

        def left(_refused: bool) -> None:
            sub.subscriptions.pop(message.subscription_id, None)
            done()

        run_hooks(module.host, LEAVE_TRIGGER_TYPE, payload, left)
        return

    def joined(refused: bool) -> None:
        if sub.conn_id not in module.hub.subscribers:
            done()  # it left while the hooks ran
        elif refused:
            _send_to(module, sub, message, UNAUTHORIZED)
            done()
        elif (
            message.subscription_id not in sub.subscriptions
            and len(sub.subscriptions) >= MAX_SUBSCRIPTIONS
        ):
            module.host.log.warning(
                "%s holds %d subscriptions already; join %s ignored",
                sub.name,
                MAX_SUBSCRIPTIONS,
                message.subscription_id,
            )
            done()
        else:
            sub.subscriptions[message.subscription_id] = message
            _sync(module, sub, message, done)

    run_hooks(module.host, JOIN_TRIGGER_TYPE, payload, joined)


def disconnect(module: StreamModule, sub: Subscriber) -> None:
    """``sub`` is gone: the leave hooks run for each subscription it still held."""
    for held in module.hub.close(sub):
        run_hooks(module.host, LEAVE_TRIGGER_TYPE, join_leave_payload(held, sub.context))


# -- the socket side ----------------------------------------------------------------------


async def _wait(event: trio.Event, what: str, module: StreamModule, sub_name: str) -> None:
    with trio.move_on_after(HOOK_WAIT):
        await event.wait()
        return
    module.host.log.warning(
        "%s: %s took over %g s; reading its next message meanwhile", sub_name, what, HOOK_WAIT
    )


async def _write_loop(sub: Subscriber, peer: Peer, done: trio.CancelScope) -> None:
    try:
        while (frame := await sub.outbox.get()) is not None:
            await peer.send(frame)
    except ConnectionClosed:
        pass
    done.cancel()


async def _handle(
    module: StreamModule, sub: Subscriber, message: ClientMessage, io: ModuleIO
) -> None:
    answered = trio.Event()
    io.call(lambda: handle_message(module, sub, message, answered.set))
    await _wait(answered, f"the {message.kind} hooks", module, sub.name)


async def _read_loop(module: StreamModule, sub: Subscriber, peer: Peer, io: ModuleIO) -> None:
    while True:
        try:
            frame = await peer.receive()
        except ConnectionClosed:
            return
        try:
            message = parse_client_message(frame)
        except (ValueError, RecursionError) as exc:
            module.host.log.warning(
                "%s sent a frame that is not a join or leave (%s); ignored", sub.name, exc
            )
            continue
        if message is None:
            continue
        await _handle(module, sub, message, io)


async def serve_subscriber(
    module: StreamModule, peer: Peer, request: PortRequest, io: ModuleIO
) -> None:
    """Serve one connection to the stream port until either side ends it."""
    conn_id = io.call(module.host.new_id)
    context: JsonValue = None
    if module.settings.auth_function is not None:
        authed = trio.Event()
        box: list[JsonValue] = []

        def got(found: JsonValue) -> None:
            box.append(found)
            authed.set()

        io.call(lambda: authenticate(module, request, got))
        await _wait(authed, "the auth function", module, f"stream subscriber {conn_id[:8]}")
        context = box[0] if box else None
    sub = io.call(lambda: module.hub.open(conn_id, context))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_loop, sub, peer, nursery.cancel_scope)
            await _read_loop(module, sub, peer, io)
            nursery.cancel_scope.cancel()
    finally:
        if not module.stopped:
            io.call(lambda: disconnect(module, sub))
        if sub.dropped:
            with trio.CancelScope(shield=True):
                await peer.abort()
