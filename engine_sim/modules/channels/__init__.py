"""Data channels: bulk and streaming data between workers, outside the JSON protocol.

Upstream: channels belong to the worker manager
(https://github.com/iii-hq/iii/blob/main/engine/src/workers/worker/channels.rs and
``ws_handler.rs``), ``engine::channels::create`` to the engine functions
(``engine/src/workers/engine_fn/mod.rs``). engine_sim runs them as the module
``iii-channels``, always on, like the worker manager.

How a channel works, as with the real engine:

1. Someone calls ``engine::channels::create`` (``{"buffer_size": n}``, optional: 64 by
   default, cut to 1..1024) and gets ``{"writer": ref, "reader": ref}``; a ref is
   ``{"channel_id", "access_key", "direction": "write" | "read"}`` (a
   ``StreamChannelRef``), both with the same id and key. Refs travel inside ordinary
   payloads; the official SDKs turn them into a ``ChannelWriter`` / ``ChannelReader``.
2. Each end opens its own WebSocket on the worker port:
   ``/ws/channels/{channel_id}?key={access_key}&dir=write|read``. An unknown channel
   or a wrong key is refused with HTTP 404 before the upgrade, a query without
   ``key`` and ``dir`` with 400. Each end can be opened once; a second socket for it
   is accepted and closed at once.
3. Every text or binary message the writer sends is one item; the reader gets them in
   order with their frame type (the SDKs yield binary chunks and pass text to
   ``on_message``), then a close frame when the writer closed its socket.
4. Backpressure: a channel holds at most ``buffer_size`` items and ``buffer_size`` x
   64 KiB bytes (one bigger item when it is empty); a writer past that waits (its
   socket is not read, so TCP pushes back). Data written before the reader connects
   waits in the buffer, so "write, close, then hand the reader ref on" works for data
   that fits.
5. The writer's socket dropping (its worker crashed or disconnected) ends the stream
   like a close: the reader gets what was buffered, then the end, and cannot tell it
   from a complete stream (as upstream). A reader leaving discards what is buffered;
   the writer's socket is dropped without a close frame at its next write.
6. Neither end has an idle timeout (as upstream): a reader waits as long as its
   writer stays connected, a writer as long as its reader stays connected.
7. A worker's main connection ending does not touch channels (upstream's channels
   made by ``engine::channels::create`` have no owner). A channel with an end nobody
   opened within 5 minutes is dropped by a sweep every 60 s (a waiting reader sees the
   end, a writer's writes fail); upstream does the same.

Other modules (the HTTP module) stream through channels with the engine-side API of
``ChannelsModule``: ``create`` / ``open_to_worker`` / ``open_from_worker`` on the core,
then ``EngineWriter.send`` / ``close`` and ``EngineReader.receive`` / ``items`` from a
background task, each with the caller's timeout.

Limits (engine_sim's own, fixed: upstream has no channel settings and no config.yaml
entry for channels): at most 16,384 channels open at once (``engine::channels::create``
then fails with ``channel_limit``; the channels the engine opens itself for an HTTP
request are never refused, and go when the request ends), 256 MiB buffered by all
channels together (writers wait past it; one bigger item passes while nothing else is
held), and the sweep's 300 s / 60 s. A writer's message is at most what the worker port
takes (a single frame over 16 MiB drops the connection, as the real engine's WebSocket
does). They are the defaults of ``ChannelsConfig``, which the always-on module is built
with.

Differences from the real engine:

* Upstream keeps a channel whose two ends were both opened in its table for good
  (its sweep skips them, nothing else removes them); here a channel is forgotten once
  its writer finished and its reader left, so reconnecting to a finished channel is
  refused with 404 instead of being accepted and closed.
* Upstream bounds a channel by item count only (items may be up to a 64 MiB
  message each) and has no engine-wide bound or channel limit; the byte bounds and
  ``max_channels`` above are engine_sim's.
* A reader's socket closing is noticed at once (upstream notices at its next send);
  the writer is told the same way, at its next write.
* Upstream logs each channel socket at INFO and each refusal at WARNING; engine_sim
  logs the sweep at INFO and refusals at WARNING at most once per 10 s (the next line
  counts the ones left out), so a peer guessing channel ids or keys cannot flood the
  log. It compares access keys in constant time (upstream with ``==``).
"""

from __future__ import annotations

from ._buffer import (
    DEFAULT_BUFFER_SIZE,
    MAX_BUFFER_SIZE,
    ChannelClosed,
    ChannelPair,
    ChannelRef,
    ChannelRefused,
    ChannelTimeout,
    Item,
)
from ._ends import EngineReader, EngineWriter
from ._module import CREATE_FUNCTION, ChannelsConfig, ChannelsModule

__all__ = [
    "CREATE_FUNCTION",
    "DEFAULT_BUFFER_SIZE",
    "MAX_BUFFER_SIZE",
    "ChannelClosed",
    "ChannelPair",
    "ChannelRef",
    "ChannelRefused",
    "ChannelTimeout",
    "ChannelsConfig",
    "ChannelsModule",
    "EngineReader",
    "EngineWriter",
    "Item",
]
