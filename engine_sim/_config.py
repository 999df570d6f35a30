"""How a simulated engine is set up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iii_trio.protocol import MAX_MESSAGE_BYTES

__all__ = ["DEFAULT_PORT", "ENGINE_VERSION", "EngineConfig"]

#: The real engine's worker port.
DEFAULT_PORT: Final = 49134
#: Reported as the version of the engine's in-process worker in discovery listings.
ENGINE_VERSION: Final = "0.23.0-sim"


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Settings of one simulated engine; the defaults are the real engine's.

    ``port=None`` opens no listener (connect in-process with ``engine.connect()``);
    ``port=0`` listens on a free port. Times are milliseconds, as in the engine's
    own configuration.
    """

    host: str = "127.0.0.1"
    port: int | None = None
    #: How long registrations wait for ``engine::workers::register`` before they are
    #: applied in ``default`` (the engine's ``registration_namespace_grace_ms``).
    namespace_grace_ms: int = 5000
    #: Period of the ``engine::functions-available`` change check.
    functions_poll_ms: int = 5000
    #: How long ``engine::register_trigger`` waits for a worker provider's verdict.
    trigger_ack_timeout_ms: int = 10_000
    #: Largest message accepted from a worker; bigger ones close the socket with 1009.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Frames queued for one worker before it counts as not reading and is dropped.
    send_buffer_frames: int = 64
    #: How long a closing handshake may take before the socket is simply dropped.
    close_timeout_ms: int = 2000
    #: How long a client may take to finish the WebSocket upgrade.
    handshake_timeout_ms: int = 10_000
    #: Serve ``engine::queue::enqueue`` in process (no retries, no persistence) so
    #: ``action: enqueue`` works without the external queue worker.
    builtin_queue: bool = False
    #: Seed for worker ids, tokens and invocation ids; ``None`` draws fresh UUIDs.
    seed: int | None = None
