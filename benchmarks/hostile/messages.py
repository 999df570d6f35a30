"""Attacks through protocol messages: deep nesting (item 2), a call burst and a peer
that never reads (item 3), id prediction (item 4), forged results (item 5), and
takeovers of another worker's triggers and of ``engine::`` functions (item 13)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from uuid import UUID, uuid4

import trio

import iii_trio
from iii_trio.protocol import (
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

from .target import (
    A_FUNCTION,
    B_FUNCTION,
    Finding,
    Target,
    answers,
    await_message,
    engine_default,
    seconds,
)
from .wire import GONE, RawPeer

__all__ = [
    "NeverReader",
    "call_burst",
    "deep_nesting",
    "forged_results",
    "mersenne_hits",
    "observe_ids",
    "takeovers",
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
            if (trouble := await answers(peer)) is not None:
                outcome = f"after the one {kind}: {trouble}"
                return [Finding("2", attack, outcome, "a frame ended its connection")]
        deep = Finding("2", attack, "ignored: the engine answered a ping after each")
        invocation = uuid4()
        await peer.send_text(_call_frame(invocation, A_FUNCTION, _nested(100)))
        result = await await_message(peer, InvocationResult, invocation, within=5)
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
        write_timeout = engine_default("write_timeout_ms")
        # Hold it past the write timeout (plus 5 s), so the verdict below applies.
        if write_timeout is not None:
            await trio.sleep_until(self.started + min(write_timeout / 1000 + 6, 60))
        held = trio.current_time() - self.started
        dropped = await self.peer.closed_by_engine(within=1.0)
        await self.peer.stream.aclose()
        # Dropping it sooner is right too: its answers may pass the send buffer's bound.
        overdue = write_timeout is not None and held > write_timeout / 1000 + 5
        return Finding(
            "3",
            f"a peer that sent {self.calls} engine::workers::list calls and never read",
            f"held {held:.0f} s: the engine {'dropped it' if dropped else 'kept it open'} "
            f"(write timeout {seconds(write_timeout)})",
            "a peer that never reads was kept past the write timeout"
            if overdue and not dropped
            else None,
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
        trouble = await answers(forger)
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
        if await await_message(provider, InvokeFunction, invocation, within=5) is None:
            findings.append(Finding("5", attack, "inconclusive: the call never reached its worker"))
            return findings
        await forger.send(
            InvocationResult(invocation_id=invocation, function_id="hostile::sink", result="forged")
        )
        forged = await await_message(caller, InvocationResult, invocation, within=1.5)
        if forged is not None:
            outcome = f"the caller got the forged result ({forged.result!r})"
            defect: str | None = "a result from a worker the call was not routed to was accepted"
        else:
            await provider.send(
                InvocationResult(
                    invocation_id=invocation, function_id="hostile::sink", result="real"
                )
            )
            real = await await_message(caller, InvocationResult, invocation, within=3)
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
        # Only the victim's own bindings carry a "secret" (binding 1 may be the attacker's now).
        leaked = [
            m.id
            for m in to_attacker
            if isinstance(m, RegisterTrigger)
            and isinstance(m.config, dict)
            and "secret" in m.config
        ]
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
    """``; refused (code)`` if the engine told the attacker no, else nothing."""
    for message in messages:
        if isinstance(message, RegistrationRejected):
            return f"; refused ({message.code})"
        if isinstance(message, TriggerRegistrationResult) and message.error is not None:
            return f"; refused ({message.error.code})"
    return ""
