"""The ``iii-stream`` module: streams of items that clients watch live.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/stream.
Items live in ``stream_name`` > ``group_id`` > ``item_id``. Functions
``stream::set/get/delete/list/list_groups/list_all/send/update``; trigger types
``stream`` (a change), ``stream:join`` and ``stream:leave`` (a subscriber joins or
leaves); and the stream port (label ``"stream"``, 3112 by default) where clients
subscribe to a group or an item and receive every change.

Differences from the real engine:

* A subscriber that leaves more than ``subscriber_buffer_bytes`` (an engine_sim
  option, 8 MiB by default) unread is dropped with a warning naming it; upstream
  buffers a fixed number of messages and lets a lagging reader miss the oldest.
* A connection reads its next message once the previous one's hooks answered, or
  after 30 s (logged); upstream waits for them without a bound.
* Changes whose ``stream`` bindings are still being served are bounded (10,000
  events, 64 MiB): past that a change fires no trigger and a warning is logged
  (upstream spawns a task per change). Subscribers still get it.
* One connection holds at most 4096 subscriptions; a join past that is logged and
  ignored (upstream has no bound).
* A ``stream`` binding without ``stream_name`` is refused at registration
  (upstream's registration panics on it).
* ``stream::list_groups`` answers sorted (upstream: hash-map order).
* The ``auth_function``'s ``addr`` is the peer's IP without the port (``""`` in
  memory), and a repeated header keeps its last value. It is called once the
  WebSocket is open (upstream: before the upgrade; neither refuses a connection).
  One that has not answered within 30 s leaves the connection without a context,
  as a failing one does (upstream waits for it without a bound).
* Only the ``kv`` adapter exists; ``redis`` and ``bridge`` are replaced by an
  in-memory store with a warning. The store is the one ``iii-state`` uses (see
  ``engine_sim.modules._kv``: one SQLite file in ``file_path`` for ``file_based``).
* The stream port listens on 127.0.0.1 unless its config gives ``host`` (upstream:
  0.0.0.0), as the worker port does.
* Timestamps are Unix milliseconds on the engine's clock (``ModuleHost.wall_time``),
  so they move with a virtual clock.
"""

from ._module import StreamConfig, StreamModule

__all__ = ["StreamConfig", "StreamModule"]
