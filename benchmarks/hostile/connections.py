"""Attacks on the connection layer: resets mid-upgrade (item 1), connect/disconnect
churn and frames of tens of MB (items 7 and 9), sockets that stall or flood (item 8)."""

from __future__ import annotations

import itertools
import resource
from collections import Counter

import trio

from iii_trio.protocol import MAX_FRAME_BYTES, RegisterFunction

from .target import Finding, MiB, Target, engine_default, mib, seconds
from .wire import GONE, PeerGone, RawPeer, frame_header, upgrade_request

__all__ = [
    "StalledConnections",
    "connect_cycles",
    "connection_flood",
    "huge_frame",
    "large_frames",
    "upgrade_then_reset",
]


# -- 1 ------------------------------------------------------------------------------------


async def upgrade_then_reset(target: Target, rounds: int = 20) -> list[Finding]:
    """Send a complete upgrade request, then reset the socket: half the rounds before
    the engine's ``101``, half after it."""
    done = 0
    for round_ in range(rounds):
        if not target.alive():
            break
        try:
            peer = await RawPeer.connect(target.port)
        except OSError:
            break  # nobody listens any more
        try:
            await peer.send_bytes(upgrade_request(target.port))
            if round_ % 2:
                with trio.move_on_after(2):
                    await peer.read_upgrade_response()
        except GONE:
            pass
        finally:
            await peer.reset()
        done += 1
        # Let the engine see this reset before the next one, so a death is pinned to it.
        await trio.sleep(0.05)
    return [
        Finding(
            "1",
            "upgrade request, then TCP reset (SO_LINGER 0)",
            f"{done} of {rounds} rounds done (every other one after reading the 101)",
        )
    ]


# -- 7 ------------------------------------------------------------------------------------


async def connect_cycles(
    target: Target, cycles: int = 2000, lanes: int = 8, leak_bound: int = 1 * MiB
) -> list[Finding]:
    """``cycles`` of connect / announce / register a function / disconnect, in two
    halves; memory that grows in the second half as in the first is a leak."""
    failures: Counter[str] = Counter()
    count = 0

    async def lane(first: int, step: int, stop: int) -> None:
        nonlocal count
        for n in range(first, stop, step):
            if not target.alive():
                return
            try:
                peer = await RawPeer.worker(target.port, f"hostile-cycle-{n}")
                try:
                    await peer.send(RegisterFunction(id=f"hostile::cycle::{n}"))
                    closed = await peer.sync()
                    if closed is not None:
                        failures[f"closed {closed.code}"] += 1
                finally:
                    await peer.aclose()
                count += 1
            except (*GONE, trio.TooSlowError) as exc:
                failures[type(exc).__name__] += 1

    half = cycles // 2
    rss = [target.rss()]
    for start, stop in ((0, half), (half, cycles)):
        async with trio.open_nursery() as nursery:
            for first in range(start, start + lanes):
                nursery.start_soon(lane, first, lanes, stop)
        await trio.sleep(1)  # let the engine finish closing the last ones
        rss.append(target.rss())
    growth = [
        (b - a) if a is not None and b is not None else None for a, b in itertools.pairwise(rss)
    ]
    defects = []
    if failures:
        defects.append(f"{sum(failures.values())} cycles failed ({dict(failures)})")
    if growth[1] is not None and growth[1] > leak_bound:
        defects.append(
            f"RSS grew {mib(growth[1])} in the second {half} cycles "
            f"(~{growth[1] / half / 1024:.1f} KiB per cycle)"
        )
    return [
        Finding(
            "7",
            f"{cycles} connect/register/disconnect cycles ({lanes} at a time)",
            f"{count} done; engine RSS {' -> '.join(mib(r) for r in rss)} "
            f"(growth bound for the second half: {mib(leak_bound)})",
            "; ".join(defects) or None,
        )
    ]


async def _send_large(target: Target, size: int) -> str:
    """Send one ``size``-byte text frame holding a valid void call; say what happened."""
    prefix = (
        b'{"type":"invokefunction","invocation_id":null,'
        b'"function_id":"hostile::nowhere","action":{"type":"void"},"data":"'
    )
    suffix = b'"}'
    chunk = b"x" * MiB
    peer = await RawPeer.worker(target.port, "hostile-large")
    try:
        try:
            await peer.send_bytes(frame_header(size) + prefix)
            left = size - len(prefix) - len(suffix)
            while left > 0:
                await peer.send_bytes(chunk[: min(left, len(chunk))])
                left -= len(chunk)
            await peer.send_bytes(suffix)
        except GONE:
            return "refused (closed while it was sent)"
        try:
            closed = await peer.sync(within=20)
        except trio.TooSlowError:
            return "no answer in 20 s"
        except GONE:
            return "refused (connection closed)"
        return "accepted" if closed is None else f"refused (close {closed.code})"
    finally:
        await peer.aclose()


async def large_frames(
    target: Target, sizes: tuple[int, ...] = (40_000_000, 52_000_000, 64_000_000)
) -> list[Finding]:
    """A few single frames of 40-64 MB; the engine's memory must come back after them."""
    before = target.rss()
    verdicts = []
    for size in sizes:
        if not target.alive():
            break
        verdicts.append(f"{size / 1e6:.0f} MB {await _send_large(target, size)}")
    await trio.sleep(1)
    after = target.rss()
    kept = after - before if after is not None and before is not None else None
    defects = []
    accepted = [v for v in verdicts if v.endswith("accepted")]
    if accepted:
        defects.append(f"frames over {MAX_FRAME_BYTES // MiB} MiB accepted")
    if kept is not None and kept > target.rss_slack:
        defects.append(f"engine kept {mib(kept)}")
    return [
        Finding(
            "7/9",
            f"{len(sizes)} single frames of {sizes[0] / 1e6:.0f}-{sizes[-1] / 1e6:.0f} MB",
            f"{'; '.join(verdicts)}; engine RSS {mib(before)} -> {mib(after)} a second later",
            "; ".join(defects) or None,
        )
    ]


async def huge_frame(target: Target, size: int = 60_000_000) -> list[Finding]:
    verdict = await _send_large(target, size)
    return [
        Finding(
            "9",
            f"one {size / 1e6:.0f} MB frame (limit: {MAX_FRAME_BYTES // MiB} MiB per frame)",
            verdict,
            "a frame over the limit was accepted" if verdict == "accepted" else None,
        )
    ]


# -- 8 ------------------------------------------------------------------------------------


class StalledConnections:
    """Connections that send half a frame and stall, and TCP connections that send
    nothing, held open while every other attack runs; the engine must close them."""

    def __init__(self, stalled: list[RawPeer], silent: list[RawPeer], refused: Counter[str]):
        self.stalled = stalled
        self.silent = silent
        self.refused = refused
        self.started = trio.current_time()

    @classmethod
    async def start(
        cls, target: Target, half_frames: int = 300, idle: int = 300
    ) -> StalledConnections:
        stalled: list[RawPeer] = []
        silent: list[RawPeer] = []
        refused: Counter[str] = Counter()
        opening = trio.CapacityLimiter(50)
        # A frame that announces 1,000 bytes and delivers 100 of them.
        half = (
            frame_header(1000) + b'{"type":"invokefunction","function_id":"x","data":"' + b"y" * 49
        )

        async def open_one(stall: bool) -> None:
            async with opening:
                try:
                    peer = await RawPeer.connect(target.port)
                except OSError as exc:
                    refused[f"connect: {type(exc).__name__}"] += 1
                    return
                try:
                    if stall:
                        await peer.upgrade()
                        await peer.send_bytes(half)
                except GONE as exc:
                    refused[str(exc)[:60] if isinstance(exc, PeerGone) else type(exc).__name__] += 1
                    await peer.stream.aclose()
                    return
                (stalled if stall else silent).append(peer)

        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(half_frames + idle):
                    nursery.start_soon(open_one, n < half_frames)
        return cls(stalled, silent, refused)

    async def finish(self) -> Finding:
        first_message = engine_default("first_message_timeout_ms")
        handshake = engine_default("handshake_timeout_ms")
        # Hold them past the engine's timeouts (plus 5 s), so the verdict below applies.
        longest = max(first_message or 0, handshake or 0) / 1000 + 6
        await trio.sleep_until(self.started + min(longest, 60))
        held = trio.current_time() - self.started
        closed = {"half-frame": 0, "idle": 0}

        async def probe(peer: RawPeer, kind: str) -> None:
            if await peer.closed_by_engine(within=0.3):
                closed[kind] += 1
            await peer.stream.aclose()

        async with trio.open_nursery() as nursery:
            for peer in self.stalled:
                nursery.start_soon(probe, peer, "half-frame")
            for peer in self.silent:
                nursery.start_soon(probe, peer, "idle")
        defects = []
        # Past its timeout, plus 5 s of slack, every such connection must be gone.
        for kind, peers, timeout_ms in (
            ("half-frame", self.stalled, first_message),
            ("idle", self.silent, handshake),
        ):
            left = len(peers) - closed[kind]
            if timeout_ms is not None and held > timeout_ms / 1000 + 5 and left:
                defects.append(f"{left} {kind} connections open after {held:.0f} s")
        not_opened = ", ".join(f"{why} x{n}" for why, n in self.refused.most_common()) or "none"
        return Finding(
            "8",
            f"{len(self.stalled)} connections that sent half a frame and stalled, "
            f"{len(self.silent)} idle TCP connections, held through the other attacks",
            f"after {held:.0f} s the engine had closed {closed['half-frame']} half-frame and "
            f"{closed['idle']} idle ones (first-message timeout {seconds(first_message)}, "
            f"handshake timeout {seconds(handshake)}); not opened: {not_opened}",
            "; ".join(defects) or None,
        )


async def connection_flood(target: Target, most: int = 1000) -> list[Finding]:
    """Upgrade fresh connections one after another until the engine refuses one or
    ``most`` are open (kept well under this process's descriptor limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(0, min(most, soft - 200))
    peers: list[RawPeer] = []
    refusal: str | None = None
    rss = [target.rss()]
    try:
        with trio.move_on_after(30):
            for _ in range(most):
                if not target.alive():
                    break
                try:
                    peer = await RawPeer.connect(target.port)
                except OSError as exc:
                    refusal = f"connect: {exc}"
                    break
                peers.append(peer)
                try:
                    await peer.upgrade()
                except GONE as exc:
                    refusal = str(exc) or type(exc).__name__
                    break
        rss.append(target.rss())
    finally:
        for peer in peers:
            await peer.stream.aclose()
    await trio.sleep(2)  # the engine lets them all go
    rss.append(target.rss())
    limit = engine_default("max_connections")
    upgraded = sum(peer.upgraded for peer in peers)
    defect = None
    if refusal is None and limit is not None and limit < most and target.alive():
        defect = f"{upgraded} connections upgraded, none refused (max_connections {limit})"
    return [
        Finding(
            "8",
            f"open and upgrade up to {most} connections at once",
            f"{upgraded} upgraded"
            + (f", then: {refusal[:80]}" if refusal else ", none refused")
            + f" (max_connections {limit if limit is not None else 'unknown'}, counting "
            "every other connection still open); engine RSS before / all open / 2 s after: "
            + " / ".join(mib(r) for r in rss),
            defect,
        )
    ]
