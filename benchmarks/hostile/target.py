"""What every attack gets (``Target``) and gives back (``Finding``), and the small
moves several attacks share: wait for a message, check that the engine still answers,
read a default of the engine's configuration.

An attack takes a ``Target`` and returns ``Finding``s: what it did, what it saw, and
the defect it saw, if any (``None`` when the engine behaved). It stops early once
the engine is dead; ``hostile_peers.py`` notices the death and reports it. Every
loop is bounded in count, every wait in time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar
from uuid import UUID

import trio

from engine_sim import EngineConfig
from iii_trio.protocol import InvocationResult, InvokeFunction

from .wire import GONE, Closed, RawPeer

__all__ = [
    "A_FUNCTION",
    "B_FUNCTION",
    "Finding",
    "MiB",
    "Target",
    "answers",
    "await_message",
    "engine_default",
    "mib",
    "seconds",
]

#: The honest pair's functions: honest-a serves A_FUNCTION and calls B_FUNCTION.
A_FUNCTION: Final = "honest::a_echo"
B_FUNCTION: Final = "honest::b_echo"
MiB: Final = 1024 * 1024
M = TypeVar("M", InvocationResult, InvokeFunction)


@dataclass(frozen=True)
class Target:
    """The engine under attack: its port, whether it still runs, its RSS now."""

    port: int
    alive: Callable[[], bool]
    rss: Callable[[], int | None]
    #: Engine RSS growth (bytes) an attack may leave behind for good.
    rss_slack: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Finding:
    item: str
    attack: str
    outcome: str
    #: What went wrong, in a few words; ``None`` when nothing did.
    defect: str | None = None


def mib(size: int | None) -> str:
    return "?" if size is None else f"{size / MiB:.1f} MiB"


async def answers(peer: RawPeer, within: float = 5.0) -> str | None:
    """``None`` if the engine still answers this connection's ping message, else why not."""
    try:
        closed = await peer.sync(within)
    except trio.TooSlowError:
        return f"silent for {within:.0f} s"
    except GONE:
        return "the connection was lost"
    return None if closed is None else f"the engine closed the connection ({closed.code})"


async def await_message(peer: RawPeer, kind: type[M], invocation: UUID, within: float) -> M | None:
    """The first ``kind`` message about ``invocation`` within ``within`` s, else ``None``."""
    for earlier in peer.seen:
        if isinstance(earlier, kind) and earlier.invocation_id == invocation:
            peer.seen.remove(earlier)
            return earlier
    with trio.move_on_after(within):
        try:
            while True:
                message = await peer.receive()
                if isinstance(message, Closed):
                    return None
                if isinstance(message, kind) and message.invocation_id == invocation:
                    return message
                if not isinstance(message, str):
                    peer.seen.append(message)
        except GONE:
            return None
    return None


def engine_default(name: str) -> int | None:
    """A default of ``iii-sim serve``'s configuration (``EngineConfig``), if this
    engine_sim has that setting; attacks judge the engine against its own limits."""
    value = getattr(EngineConfig(), name, None)
    return value if isinstance(value, int) else None


def seconds(ms: int | None) -> str:
    return "unknown" if ms is None else f"{ms / 1000:g} s"
