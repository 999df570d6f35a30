"""The attacks of ``hostile_peers.py``: one coroutine per item of issue 11.

Each takes a ``Target`` and returns ``Finding``s: what it did, what it saw, and the
defect it saw, if any (``None`` when the engine behaved). An attack stops early
once the engine is dead; ``hostile_peers.py`` notices the death and reports it.
Every loop is bounded in count, every wait in time.
"""

from __future__ import annotations

import itertools
import json
import resource
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar
from uuid import UUID, uuid4

import trio
from _hostile_wire import GONE, Closed, PeerGone, RawPeer, frame_header, upgrade_request

import iii_trio
from engine_sim import EngineConfig
from iii_trio.protocol import (
    MAX_FRAME_BYTES,
    InvocationResult,
    InvokeFunction,
    Message,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterTrigger,
)

__all__ = [
    "A_FUNCTION",
    "B_FUNCTION",
    "Finding",
    "NeverReader",
    "StalledConnections",
    "Target",
    "call_burst",
    "connect_cycles",
    "connection_flood",
    "deep_nesting",
    "forged_results",
    "huge_frame",
    "large_frames",
    "mersenne_hits",
    "observe_ids",
    "takeovers",
    "upgrade_then_reset",
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


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / MiB:.1f} MiB"


async def _answers(peer: RawPeer, within: float = 5.0) -> str | None:
    """``None`` if the engine still answers this connection's ping message, else why not."""
    try:
        closed = await peer.sync(within)
    except trio.TooSlowError:
        return f"silent for {within:.0f} s"
    except GONE:
        return "the connection was lost"
    return None if closed is None else f"the engine closed the connection ({closed.code})"


async def _await(peer: RawPeer, kind: type[M], invocation: UUID, within: float) -> M | None:
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


# -- 2 ------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    r"""A JSON array ``depth`` deep around the escaped surrogate pair ``"\ud83d\ude00"``."""
    return "[" * depth + '"\\ud83d\\ude00"' + "]" * depth


def _call_frame(invocation: UUID, function_id: str, data_json: str) -> str:
    return (
        f'{{"type":"invokefunction","invocation_id":"{invocation}",'
        f'"function_id":"{function_id}","data":{data_json}}}'
    )


async def deep_nesting(target: Target) -> list[Finding]:
    """The 1.2 KB frame nested 600 deep, bare and as a call's ``data``; then a legal
    100-deep call through the engine to honest-a, which must answer it."""
    peer = await RawPeer.worker(target.port, "hostile-deep")
    try:
        bare = _nested(600)
        attack = (
            f"{len(bare):,}-byte JSON array nested 600 deep around an escaped surrogate pair "
            "(bare, then as a call's data)"
        )
        for kind, frame in (
            ("bare", bare),
            ("as data", _call_frame(uuid4(), A_FUNCTION, _nested(600))),
        ):
            await peer.send_text(frame)
            if (trouble := await _answers(peer)) is not None:
                outcome = f"after the one {kind}: {trouble}"
                return [Finding("2", attack, outcome, "a frame ended its connection")]
        deep = Finding("2", attack, "ignored: the engine answered a ping after each")
        invocation = uuid4()
        await peer.send_text(_call_frame(invocation, A_FUNCTION, _nested(100)))
        result = await _await(peer, InvocationResult, invocation, within=5)
        expected = json.loads(_nested(100))
        if result is None:
            outcome, defect = "no answer in 5 s", "honest-a did not answer a legal 100-deep call"
        elif result.error is not None or result.result != expected:
            outcome = f"answered wrongly: {result.error or 'result differs'}"
            defect = "honest-a mangled a legal 100-deep call"
        else:
            outcome, defect = "honest-a answered it, unchanged", None
        legal = Finding(
            "2", "a legal 100-deep call through the engine to honest-a", outcome, defect
        )
        return [deep, legal]
    finally:
        await peer.aclose()


# -- 3 ------------------------------------------------------------------------------------


async def call_burst(target: Target, calls: int = 500) -> list[Finding]:
    """One iii_trio worker fires ``calls`` concurrent ``engine::workers::list`` calls."""
    outcomes: Counter[str] = Counter()
    options = iii_trio.InitOptions(
        worker_name="hostile-burst",
        enable_metrics_reporting=False,
        invocation_timeout_ms=20_000,
        send_buffer_frames=max(1000, calls),
    )

    async def list_once(worker: iii_trio.Worker) -> None:
        try:
            await worker.list_workers()
            outcomes["ok"] += 1
        except (iii_trio.IIIError, trio.TooSlowError) as exc:
            outcomes[type(exc).__name__] += 1

    try:
        async with iii_trio.register_worker(target.url, options) as worker:
            with trio.fail_after(10):
                await worker.ready()
            with trio.move_on_after(40):
                async with trio.open_nursery() as nursery:
                    for _ in range(calls):
                        nursery.start_soon(list_once, worker)
    except (iii_trio.IIIError, trio.TooSlowError) as exc:
        outcomes[f"worker failed: {type(exc).__name__}"] += 1
    failed = calls - outcomes["ok"]
    detail = ", ".join(f"{kind} x{n}" for kind, n in outcomes.most_common() if kind != "ok")
    return [
        Finding(
            "3",
            f"{calls} concurrent engine::workers::list calls from one iii_trio worker",
            f"{outcomes['ok']} ok" + (f"; {detail}" if detail else ""),
            f"{failed} of {calls} calls failed" if failed else None,
        )
    ]


class NeverReader:
    """A worker that asks for a lot and never reads a byte of the answers."""

    def __init__(self, peer: RawPeer, calls: int) -> None:
        self.peer = peer
        self.calls = calls
        self.started = trio.current_time()

    @classmethod
    async def start(cls, target: Target, calls: int = 2000) -> NeverReader:
        # A tiny receive window, so the engine's writes stall after a few KB.
        peer = await RawPeer.connect(target.port, receive_buffer=4096)
        sent = 0
        try:
            await peer.upgrade()
            await peer.announce("hostile-never-reader")
            with trio.move_on_after(5):
                for _ in range(calls):
                    await peer.send(
                        InvokeFunction(
                            invocation_id=uuid4(), function_id="engine::workers::list", data={}
                        )
                    )
                    sent += 1
        except GONE:
            pass
        return cls(peer, sent)

    async def finish(self) -> Finding:
        held = trio.current_time() - self.started
        dropped = await self.peer.closed_by_engine(within=1.0)
        await self.peer.stream.aclose()
        return Finding(
            "3",
            f"a peer that sent {self.calls} engine::workers::list calls and never read",
            f"held {held:.0f} s; the engine {'dropped it' if dropped else 'kept it open'} "
            "(either is right while its write timeout has not passed)",
        )


# -- 4 ------------------------------------------------------------------------------------


def _untemper(y: int) -> int:
    """The Mersenne Twister state word behind one 32-bit output."""
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    r = y
    for _ in range(5):
        r = y ^ ((r << 7) & 0x9D2C5680)
    y = r & 0xFFFFFFFF
    r = y
    for _ in range(3):
        r = y ^ (r >> 11)
    return r & 0xFFFFFFFF


def _twist(upper_of: int, lower_of: int) -> int:
    y = (upper_of & 0x80000000) | (lower_of & 0x7FFFFFFF)
    return (y >> 1) ^ (0x9908B0DF if y & 1 else 0)


def mersenne_hits(values: list[str]) -> int:
    """How many consecutive pairs of ``values`` fit Python's Mersenne Twister.

    ``UUID(int=rng.getrandbits(128), version=4)`` keeps the first and the fourth of
    its four 32-bit outputs intact (the version and variant bits fall in the other
    two). With outputs ``x`` in draw order, MT19937 guarantees
    ``x[k+624] = x[k+397] ^ twist(x[k], x[k+1])`` on untempered words; for ``k`` the
    last word of one UUID, ``k+1`` is the first word of the next, ``k+397`` a first
    word and ``k+624`` a last word. So each consecutive pair is checked against every
    (first, last) word seen; a random 128-bit id fits by chance with probability
    about n/2**32. Values that are not UUIDs are skipped.
    """
    words: list[tuple[int, int]] = []
    for value in values:
        try:
            number = UUID(value).int
        except ValueError:
            continue
        words.append((_untemper(number & 0xFFFFFFFF), _untemper(number >> 96)))
    firsts = {first for first, _ in words}
    lasts = {last for _, last in words}
    hits = 0
    for (_, last), (first, _) in itertools.pairwise(words):
        step = _twist(last, first)
        hits += any(step ^ candidate in lasts for candidate in firsts)
    return hits


async def observe_ids(target: Target, connections: int = 300) -> list[Finding]:
    """Collect the worker id and reattach token of ``connections`` fresh connections."""
    values: list[str] = []
    for _ in range(connections):
        if not target.alive():
            break
        try:
            peer = await RawPeer.worker(target.port)
        except GONE:
            break
        assert peer.hello is not None
        values.append(peer.hello.worker_id)
        if peer.hello.reattach_token is not None:
            values.append(peer.hello.reattach_token)
        await peer.aclose()
    hits = mersenne_hits(values)
    repeated = len(values) - len(set(values))
    defects = []
    if hits >= 3:  # chance gives ~0.1 for 600 random ids
        defects.append(f"ids are a Mersenne Twister stream ({hits} recurrence hits)")
    if repeated:
        defects.append(f"{repeated} ids repeated")
    return [
        Finding(
            "4",
            f"{len(values)} worker ids and reattach tokens from {connections} connections, "
            "checked against MT19937's recurrence",
            f"{hits} of {max(len(values) - 1, 0)} consecutive pairs fit a Mersenne Twister; "
            f"{repeated} repeated",
            "; ".join(defects) or None,
        )
    ]


# -- 5 ------------------------------------------------------------------------------------


async def forged_results(target: Target) -> list[Finding]:
    """Results nobody asked this peer for: random ids aimed at the honest pair, then
    the id of a call routed to another worker, answered before that worker does."""
    forger = await RawPeer.worker(target.port, "hostile-forger")
    caller = provider = None
    try:
        for i in range(200):
            await forger.send(
                InvocationResult(
                    invocation_id=uuid4(),
                    function_id=A_FUNCTION if i % 2 else B_FUNCTION,
                    result={"n": -1, "from": "forged"},
                )
            )
        trouble = await _answers(forger)
        findings = [
            Finding(
                "5",
                "200 invocationresults with random ids for the honest pair's functions",
                (trouble or "the engine answered a ping after them")
                + " (one taken by honest-a/b would count as its 'wrong result' error)",
                "the engine stopped answering" if trouble else None,
            )
        ]
        caller = await RawPeer.worker(target.port, "hostile-caller")
        provider = await RawPeer.worker(target.port, "hostile-provider")
        await provider.send(RegisterFunction(id="hostile::sink"))
        await provider.sync()
        invocation = uuid4()
        await caller.send(
            InvokeFunction(invocation_id=invocation, function_id="hostile::sink", data={})
        )
        attack = "a forged result for a call routed to another worker, sent before its own"
        if await _await(provider, InvokeFunction, invocation, within=5) is None:
            findings.append(Finding("5", attack, "inconclusive: the call never reached its worker"))
            return findings
        await forger.send(
            InvocationResult(invocation_id=invocation, function_id="hostile::sink", result="forged")
        )
        forged = await _await(caller, InvocationResult, invocation, within=1.5)
        if forged is not None:
            outcome = f"the caller got the forged result ({forged.result!r})"
            defect: str | None = "a result from a worker the call was not routed to was accepted"
        else:
            await provider.send(
                InvocationResult(
                    invocation_id=invocation, function_id="hostile::sink", result="real"
                )
            )
            real = await _await(caller, InvocationResult, invocation, within=3)
            if real is not None and real.result == "real":
                outcome, defect = "forged one dropped; the real result arrived after it", None
            else:
                outcome = "forged one dropped, but the real result never arrived"
                defect = "the forged result cost the caller its real one"
        findings.append(Finding("5", attack, outcome, defect))
        return findings
    finally:
        for peer in (forger, caller, provider):
            if peer is not None:
                await peer.aclose()


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
            f"RSS grew {_mib(growth[1])} in the second {half} cycles "
            f"(~{growth[1] / half / 1024:.1f} KiB per cycle)"
        )
    return [
        Finding(
            "7",
            f"{cycles} connect/register/disconnect cycles ({lanes} at a time)",
            f"{count} done; engine RSS {' -> '.join(_mib(r) for r in rss)} "
            f"(growth bound for the second half: {_mib(leak_bound)})",
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
        defects.append(f"engine kept {_mib(kept)}")
    return [
        Finding(
            "7/9",
            f"{len(sizes)} single frames of {sizes[0] / 1e6:.0f}-{sizes[-1] / 1e6:.0f} MB",
            f"{'; '.join(verdicts)}; engine RSS {_mib(before)} -> {_mib(after)} a second later",
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
        first_message = _config_ms("first_message_timeout_ms")
        handshake = _config_ms("handshake_timeout_ms")
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
            f"{closed['idle']} idle ones (first-message timeout {_seconds(first_message)}, "
            f"handshake timeout {_seconds(handshake)}); not opened: {not_opened}",
            "; ".join(defects) or None,
        )


def _config_ms(name: str) -> int | None:
    """A default of ``iii-sim serve``'s configuration, if this engine_sim has it."""
    value = getattr(EngineConfig(), name, None)
    return value if isinstance(value, int) else None


def _seconds(ms: int | None) -> str:
    return "unknown" if ms is None else f"{ms / 1000:g} s"


async def connection_flood(target: Target, most: int = 1000) -> list[Finding]:
    """Upgrade fresh connections one after another until the engine refuses one or
    ``most`` are open (kept well under this process's descriptor limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(0, min(most, soft - 200))
    peers: list[RawPeer] = []
    refusal: str | None = None
    try:
        with trio.move_on_after(30):
            for _ in range(most):
                if not target.alive():
                    break
                peer = await RawPeer.connect(target.port)
                peers.append(peer)
                try:
                    await peer.upgrade()
                except GONE as exc:
                    refusal = str(exc) or type(exc).__name__
                    break
    finally:
        for peer in peers:
            await peer.stream.aclose()
    limit = getattr(EngineConfig(), "max_connections", None)
    upgraded = len(peers) - (refusal is not None)
    defect = None
    if refusal is None and isinstance(limit, int) and limit < most and target.alive():
        defect = f"{upgraded} connections upgraded, none refused (max_connections {limit})"
    return [
        Finding(
            "8",
            f"open and upgrade up to {most} connections at once",
            f"{upgraded} upgraded"
            + (f", then: {refusal[:80]}" if refusal else ", none refused")
            + f" (max_connections {limit if limit is not None else 'unknown'}, counting "
            "every other connection still open)",
            defect,
        )
    ]


# -- 13 -----------------------------------------------------------------------------------


async def takeovers(target: Target) -> list[Finding]:
    """A victim provides a trigger type with three bindings; an attacker re-registers
    one binding's id, unregisters another, registers the type itself, and registers
    ``engine::workers::register`` in ``default`` before a newcomer announces itself."""
    tick = "hostile::victim_tick"
    bindings = [f"hostile-victim-binding-{k}" for k in (1, 2, 3)]
    victim = await RawPeer.worker(target.port, "hostile-victim")
    attacker = newcomer = None
    try:
        await victim.send(RegisterFunction(id="hostile::victim_fn"))
        await victim.send(RegisterTriggerType(id=tick, description="the victim's"))
        for k, binding in enumerate(bindings, 1):
            await victim.send(
                RegisterTrigger(
                    id=binding,
                    trigger_type=tick,
                    function_id="hostile::victim_fn",
                    config={"secret": f"victim-{k}"},
                )
            )
        await victim.sync()
        victim.seen.clear()
        attacker = await RawPeer.worker(target.port, "hostile-attacker")
        await attacker.send(RegisterFunction(id="hostile::attacker_fn"))
        await attacker.sync()
        attacker.seen.clear()

        async def settle() -> tuple[list[Message], list[Message]]:
            assert attacker is not None
            await attacker.sync()
            await victim.sync()
            seen = (list(attacker.seen), list(victim.seen))
            attacker.seen.clear()
            victim.seen.clear()
            return seen

        findings = []
        await attacker.send(
            RegisterTrigger(
                id=bindings[0],
                trigger_type=tick,
                function_id="hostile::attacker_fn",
                config={"stolen": True},
            )
        )
        to_attacker, to_victim = await settle()
        rebound = any(
            isinstance(m, RegisterTrigger) and m.function_id == "hostile::attacker_fn"
            for m in to_victim
        )
        findings.append(
            Finding(
                "13",
                "re-register another worker's trigger id",
                ("taken over: the binding now calls the attacker" if rebound else "not taken")
                + _refusal(to_attacker),
                "another worker's trigger was rebound" if rebound else None,
            )
        )
        await attacker.send(UnregisterTrigger(id=bindings[1], trigger_type=tick))
        to_attacker, to_victim = await settle()
        removed = any(isinstance(m, UnregisterTrigger) and m.id == bindings[1] for m in to_victim)
        findings.append(
            Finding(
                "13",
                "unregister another worker's trigger",
                ("removed: its provider was told to drop it" if removed else "not removed")
                + _refusal(to_attacker),
                "another worker's trigger was removed" if removed else None,
            )
        )
        await attacker.send(RegisterTriggerType(id=tick, description="the attacker's"))
        to_attacker, _ = await settle()
        leaked = [m.id for m in to_attacker if isinstance(m, RegisterTrigger) and m.id in bindings]
        findings.append(
            Finding(
                "13",
                "take over another worker's trigger type",
                (
                    f"taken over: the attacker received {len(leaked)} of the victim's bindings"
                    if leaked
                    else "not taken"
                )
                + _refusal(to_attacker),
                "another worker's trigger type and its bindings' configs were taken"
                if leaked
                else None,
            )
        )
        await attacker.send(RegisterFunction(id="engine::workers::register"))
        to_attacker, _ = await settle()
        refusal = _refusal(to_attacker)
        newcomer = await RawPeer.worker(target.port, "hostile-newcomer")
        await newcomer.sync()
        await attacker.sync()
        shadowed = any(
            isinstance(m, InvokeFunction) and m.function_id == "engine::workers::register"
            for m in attacker.seen
        )
        findings.append(
            Finding(
                "13",
                "register engine::workers::register in default, then a newcomer announces",
                (
                    "shadowed: the attacker received the newcomer's announcement"
                    if shadowed
                    else "the newcomer's announcement did not reach the attacker"
                )
                + refusal,
                "a worker shadowed an engine:: function" if shadowed else None,
            )
        )
        return findings
    finally:
        for peer in (victim, attacker, newcomer):
            if peer is not None:
                await peer.aclose()


def _refusal(messages: list[Message]) -> str:
    """ "; refused (code)" if the engine told the attacker no, else nothing."""
    for message in messages:
        if isinstance(message, RegistrationRejected):
            return f"; refused ({message.code})"
        if isinstance(message, TriggerRegistrationResult) and message.error is not None:
            return f"; refused ({message.error.code})"
    return ""
