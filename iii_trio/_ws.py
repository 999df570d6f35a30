"""A WebSocket on ``websockets``' sans-I/O protocol, driven from Trio (either end).

trio-websocket gives every connection a reader task, a message channel and a send
lock; a message pays for that machinery at each end (the floor benchmark: a relay on
it costs 2.7x the CPU of the same relay on this module's shape). Here the protocol
object (``websockets``' ``ServerProtocol`` or ``ClientProtocol``, whose frame masking
is in C) is fed by whichever task asks for the next message: no task of its own, no
channel.

``SansIOWebSocket`` answers to the subset of trio-websocket's ``WebSocketConnection``
in use (``get_message``, ``send_message``, ``aclose``, ``ping``, and ``_stream``,
every read and write going through it), so either stack is served through one code
path and errors map the same way: ``ConnectionClosed`` with the peer's close code,
1006 when the link broke.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Final

import trio
from websockets.exceptions import PayloadTooBig
from websockets.frames import EXTERNAL_CLOSE_CODES, Frame, Opcode
from websockets.protocol import Protocol, State

from ._exceptions import ABNORMAL_CLOSURE, ConnectionClosed

__all__ = ["RECEIVE_BYTES", "SansIOWebSocket", "fragment_ends"]

#: Bytes asked of the socket per read: a burst of frames is parsed in one go.
RECEIVE_BYTES: Final = 65_536
#: Close code for a text message that is not UTF-8 (RFC 6455 7.4.1).
INVALID_DATA: Final = 1007
#: "No status": reported for an empty close frame, never sent as a code.
NO_STATUS: Final = 1005
#: A close frame's reason fits its 125-byte payload after the 2-byte code.
MAX_REASON_BYTES: Final = 123
#: Seconds the reader's control replies (pongs, a close echo), once started, may take
#: to be written whatever cancels the read; past it the link is dropped, so a peer that
#: pings and never reads cannot hold up a shutdown (the engine's close timeout).
REPLY_GRACE: Final = 2.0


class SansIOWebSocket:
    """An open WebSocket (either end): whole messages in and out over ``stream``.

    One task reads at a time (the engine and the worker each have one reader per
    connection); any number may send, one write on the socket at a time. A send
    cancelled before its turn to write sends nothing.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        early: list[Frame],
        on_frame_over_limit: Callable[[int], None] | None = None,
        *,
        interrupt_reads: bool = False,
        unread: bytes = b"",
    ) -> None:
        #: Every read and write goes through this attribute, so a wrapper put here
        #: (the engine's write-progress watch) sees them all.
        self._stream = stream
        #: Whether ``aclose`` ends a read under way at once (``get_message`` then raises
        #: ``ConnectionClosed``), as trio-websocket's does: a worker closing its side
        #: must not wait for its reader. The engine's reader takes the peer's close
        #: frame instead, and spares a cancel scope per read.
        self._read_scope: trio.CancelScope | None = trio.CancelScope() if interrupt_reads else None
        self._protocol = protocol
        #: Bytes the peer sent past the handshake, before it was answered: the first
        #: read takes them, so they are parsed exactly as later ones.
        self._unread = unread
        #: Messages parsed and not yet taken, from ``_next`` on (a list, not a deque:
        #: an idle connection holds an empty one, 56 bytes against a deque's 760).
        self._messages: list[str | bytes] = []
        self._next = 0
        #: Pieces of a fragmented message, and whether it is text.
        #: (One buffer, not a list of parts: a peer sending one-byte fragments would
        #: hold ~40 bytes of memory per byte of its message within the size limit.)
        self._fragments: bytearray | None = None
        self._fragmented_text = False
        #: A message is going out in fragments: no other message may start before its
        #: last one (control frames may go between them).
        self._fragmenting = False
        self._closed: ConnectionClosed | None = None
        #: Told the size of a frame over the protocol's fragment limit, which drops
        #: the link with no close frame (the real engine's frame limit).
        self._on_frame_over_limit = on_frame_over_limit
        self._reading = False
        self._writing = False
        #: Tasks waiting for the write under way (or the read, in ``aclose``) to end;
        #: made at the first wait (most connections never have one).
        self._turns: trio.lowlevel.ParkingLot | None = None
        #: ``ping`` payloads waiting for their pong.
        self._pings: dict[bytes, trio.Event] = {}
        #: Control replies (pongs, a close echo) taken from the protocol and not yet
        #: written: a read cancelled before its turn to write (a fault gate changing)
        #: leaves them here, and the next write or read sends them first.
        self._owed = b""
        for frame in early:
            self._take(frame)
        self._owed = b"".join(protocol.data_to_send())
        self._closed = _ended(protocol)

    async def get_message(self) -> str | bytes:
        """The next whole message; ``ConnectionClosed`` once the connection is over."""
        if self._next < len(self._messages):
            # Messages a read already parsed; a checkpoint still, as every Trio await.
            await trio.lowlevel.checkpoint()
            return self._take_next()
        while True:
            if self._closed is not None:
                if self._owed:
                    await self._settle()
                raise self._closed
            await self._read()  # the socket read is the checkpoint
            if self._next < len(self._messages):
                return self._take_next()

    async def _settle(self) -> None:
        """Send the close echo a cancelled read left owed, then close the socket once
        the close handshake is done (as that read would have)."""
        with contextlib.suppress(ConnectionClosed):
            await self._write()
        if self._protocol.close_rcvd is not None or self._eof():
            await trio.aclose_forcefully(self._stream)

    def _take_next(self) -> str | bytes:
        message = self._messages[self._next]
        self._next += 1
        if self._next == len(self._messages):
            self._messages = []
            self._next = 0
        return message

    async def send_message(self, message: str | bytes) -> None:
        """Send one message: text for ``str``, binary for ``bytes``."""
        if self._fragmenting:
            await self._wait_fragments()
        if self._closed is not None:
            raise self._closed
        if isinstance(message, str):
            await self._write(self._protocol.send_text, message.encode())
        else:
            await self._write(self._protocol.send_binary, message)

    async def send_fragmented(self, data: bytes, fragment_bytes: int, *, text: bool) -> None:
        """Send ``data`` as one message (text if ``text``: it must be UTF-8) in fragments
        of at most ``fragment_bytes``, text cut between characters (``fragment_ends``).

        Pongs, pings and a close may go between fragments; no other message starts
        before the last one. Cancelled or failed part-way, the link is dropped: the
        peer must neither take half a message for a whole one nor read the next
        message as its continuation.
        """
        if self._fragmenting:
            await self._wait_fragments()
        if self._closed is not None:
            raise self._closed
        self._fragmenting = True
        protocol = self._protocol
        view = memoryview(data)
        start = 0
        started = False  # part of the message is out: stopping now must drop the link
        try:
            for end in fragment_ends(view, fragment_bytes, text=text):
                if started:
                    make = partial(protocol.send_continuation, fin=False)
                else:
                    make = partial(protocol.send_text if text else protocol.send_binary, fin=False)
                await self._write(make, view[start:end])
                started = True
                start = end
                # The reader's pongs (or a close) owed meanwhile take their turn here,
                # not only once the whole message is out.
                await trio.lowlevel.checkpoint()
            # An empty last fragment ends the message, as the official SDK's ends
            # (websockets' fragmented send), so the two write the same frames.
            if started:
                await self._write(partial(protocol.send_continuation, fin=True), b"")
            else:
                await self._write(
                    partial(protocol.send_text if text else protocol.send_binary), b""
                )
            started = False
        except BaseException:
            if started and self._closed is None:
                self._closed = ConnectionClosed(ABNORMAL_CLOSURE, "a fragmented send was cut short")
                await trio.aclose_forcefully(self._stream)
            raise
        finally:
            view.release()
            self._fragmenting = False
            self._next_turn()

    async def _wait_fragments(self) -> None:
        """Wait for the message going out in fragments to be sent whole."""
        while self._fragmenting:
            await self._wait_turn()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close with a handshake: send a close frame, wait for the peer's, close the
        socket. Cancelled, it closes the socket at once (no handshake)."""
        try:
            if self._closed is None and self._protocol.state is State.OPEN:
                self._closed = ConnectionClosed(code, reason or "")
                if code == NO_STATUS:
                    # 1005 is never sent: an empty close frame means it (as wsproto does).
                    self._protocol.send_close()
                elif code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000:
                    self._protocol.send_close(code, _fit_reason(reason or ""))
                else:
                    return  # 1006 and the like: no close frame, the socket is dropped
                await self._write()
            elif self._owed:
                await self._write()  # a close echo (or pongs) a cancelled read left
            while self._protocol.close_rcvd is None and not self._eof():
                if self._reading:
                    # The reader task takes the peer's close frame (or, interrupted,
                    # leaves the socket to this task): wait for its read.
                    if self._read_scope is not None:
                        self._read_scope.cancel()
                    await self._wait_turn()
                else:
                    await self._read(interruptible=False)
        except ConnectionClosed:
            pass
        finally:
            await trio.aclose_forcefully(self._stream)
            self._wake_pings()

    async def _wait_turn(self) -> None:
        if self._turns is None:
            self._turns = trio.lowlevel.ParkingLot()
        await self._turns.park()

    def _next_turn(self) -> None:
        if self._turns is not None:
            self._turns.unpark_all()

    def _eof(self) -> bool:
        return self._protocol.state is State.CLOSED or self._protocol.parser_exc is not None

    async def _read(self, interruptible: bool = True) -> None:
        self._reading = True
        data: bytes | bytearray | None
        try:
            if self._owed:
                with contextlib.suppress(ConnectionClosed):
                    await self._write(shield=interruptible)
            try:
                if self._unread:
                    data, self._unread = self._unread, b""
                    await trio.lowlevel.checkpoint()
                elif self._read_scope is None or not interruptible:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                else:
                    data = await self._interruptible_receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data is None:
                return  # interrupted by ``aclose``: it reads from here on
            protocol = self._protocol
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            for event in protocol.events_received():
                if isinstance(event, Frame):
                    self._take(event)
            # Pongs, or the answer to a close frame, or a close for a broken frame:
            # owed from here on, so a cancel before their turn to write loses none.
            self._owed += b"".join(protocol.data_to_send())
            if self._frame_over_limit():
                # Not the 1009 close websockets queued: the link is dropped.
                self._owed = b""
                self._closed = ConnectionClosed(ABNORMAL_CLOSURE, "a frame over the limit")
            ended = _ended(protocol)
            if self._closed is None:
                self._closed = ended
            if self._closed is not None:
                # Nothing of a message cut short (one over the limit, say) is kept.
                self._fragments = None
            if self._owed:
                with contextlib.suppress(ConnectionClosed):
                    await self._write(shield=interruptible)
            if ended is not None:
                # The server closes the TCP connection once the close handshake is done.
                await trio.aclose_forcefully(self._stream)
        finally:
            self._reading = False
            self._next_turn()
            self._wake_pings()

    async def _interruptible_receive(self) -> bytes | bytearray | None:
        """Bytes from the socket, or ``None`` if ``aclose`` interrupted the wait."""
        if self._closed is not None:
            return None
        scope = self._read_scope = trio.CancelScope()
        with scope:
            return await self._stream.receive_some(RECEIVE_BYTES)
        return None

    def _frame_over_limit(self) -> bool:
        """Whether the peer just sent a frame over the fragment limit (reported)."""
        refused = self._protocol.parser_exc
        limit = self._protocol.max_fragment_size
        if not (isinstance(refused, PayloadTooBig) and refused.size and limit is not None):
            return False
        if refused.size <= limit:
            return False  # a message over its limit in frames within it: 1009, as ever
        if self._on_frame_over_limit is not None:
            self._on_frame_over_limit(refused.size)
            self._on_frame_over_limit = None
        return True

    def _take(self, frame: Frame) -> None:
        if self._protocol.close_sent is not None and self._protocol.close_rcvd is None:
            # We closed (for the peer's error: invalid UTF-8 in the same read, say):
            # nothing past that point is delivered, as wsproto did.
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(frame.data, opcode is Opcode.TEXT)
            else:
                self._fragments = bytearray(frame.data)
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT and self._fragments is not None:
            # (The protocol refuses a continuation with no message under way.)
            self._fragments += frame.data
            if frame.fin:
                whole, self._fragments = self._fragments, None
                self._deliver(whole, self._fragmented_text)
        elif opcode is Opcode.PONG and self._pings:
            waiter = self._pings.pop(bytes(frame.data), None)
            if waiter is not None:
                waiter.set()
        # Pings are answered and closes echoed by the protocol itself.

    async def ping(self) -> None:
        """Ping the peer and wait for its pong (read by whoever reads this connection);
        ``ConnectionClosed`` if the connection ends first."""
        if self._closed is not None:
            raise self._closed
        payload = os.urandom(4)
        pong = trio.Event()
        self._pings[payload] = pong
        try:
            await self._write(self._protocol.send_ping, payload)
            await pong.wait()
            # A pong takes its waiter out; the end of the connection wakes it in place.
            if payload in self._pings and self._closed is not None:
                raise self._closed
        finally:
            self._pings.pop(payload, None)

    def _wake_pings(self) -> None:
        if self._closed is not None:
            for waiter in self._pings.values():
                waiter.set()

    def _deliver(self, data: bytes | bytearray | memoryview, text: bool) -> None:
        if not text:
            self._messages.append(bytes(data))
            return
        try:
            self._messages.append(str(data, "utf-8"))
        except UnicodeDecodeError:
            self._protocol.fail(INVALID_DATA, "invalid UTF-8 in a text message")

    async def _write(
        self,
        make: Callable[[bytes | memoryview], None] | None = None,
        data: bytes | memoryview = b"",
        *,
        shield: bool = False,
    ) -> None:
        """At this task's turn, make a frame of ``data`` with ``make`` (``send_text``...),
        if given, and write what the protocol has to send, after the replies owed.

        A frame made only at its turn cannot follow a close frame on the wire: a close
        that came while it waited ends the send with ``ConnectionClosed``. ``shield``:
        the reader's replies, once started, are not cut by a cancel of the read (a gate
        changing), which would drop the link for a cancelled read.
        """
        while self._writing:
            await self._wait_turn()
        # Already cancelled (a gate's hold that came first): raise before a byte goes,
        # so the link stays whole (and replies stay owed). Past this, a cancel can only
        # land while the socket is full, part of the frame perhaps written.
        await trio.lowlevel.checkpoint_if_cancelled()
        if make is not None:
            if self._closed is not None:
                raise self._closed
            make(data)
        # (An empty chunk is the protocol asking for a half-close; the socket is closed
        # whole once the connection is over, so it is left out.)
        payload = b"".join(self._protocol.data_to_send())
        if self._owed:
            # Replies first: a pong the peer waits for goes before our next message.
            payload, self._owed = self._owed + payload, b""
        if not payload:
            return  # the write under way sent what was owed
        self._writing = True
        if shield:
            await self._room_for_replies(payload)
        try:
            if shield:
                with trio.CancelScope(shield=True) as bounded:
                    bounded.deadline = trio.current_time() + REPLY_GRACE
                    await self._stream.send_all(payload)
                if bounded.cancelled_caught:
                    raise trio.TooSlowError  # dropped below, as a write cut short
            else:  # (a scope per write would cost more than the rest of the write)
                await self._stream.send_all(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._closed is None:
                self._closed = ConnectionClosed(ABNORMAL_CLOSURE, "link broken")
            raise ConnectionClosed(ABNORMAL_CLOSURE, "link broken") from None
        except BaseException as exc:
            # Cancelled mid-write: part of a frame may be on the wire, so nothing more
            # can follow it (not even a close frame); the link is dropped.
            if self._closed is None:
                self._closed = ConnectionClosed(ABNORMAL_CLOSURE, "a write was cut short")
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, trio.TooSlowError):
                raise self._closed from None
            raise
        finally:
            self._writing = False
            self._next_turn()

    async def _room_for_replies(self, payload: bytes) -> None:
        """Wait (holding the turn) until the socket may take the replies: cancelled
        here (a gate changing, a shutdown), nothing is written and they stay owed."""
        try:
            await self._stream.wait_send_all_might_not_block()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the write that follows finds the link broken
        except BaseException:
            self._owed = payload + self._owed
            self._writing = False
            self._next_turn()
            raise


def fragment_ends(data: bytes | memoryview, size: int, *, text: bool) -> Iterator[int]:
    """Where each fragment of ``data`` ends: every ``size`` bytes (at least 4), for
    text moved back to the start of a UTF-8 character, so that every fragment is
    valid UTF-8 by itself (as the official Python SDK cuts, and as a text API that
    takes a string per fragment needs)."""
    if size < 4:
        raise ValueError(f"a fragment holds at least one character (4 bytes), not {size}")
    total = len(data)
    end = 0
    while end < total:
        end = min(end + size, total)
        if text:
            while end < total and data[end] & 0xC0 == 0x80:
                end -= 1  # a continuation byte: the character starts before it
        yield end


def _fit_reason(reason: str) -> str:
    """``reason`` cut to what a close frame holds, on a character boundary."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode(errors="ignore")


def _ended(protocol: Protocol) -> ConnectionClosed | None:
    """How the connection ended, if what was just read ended it: the peer's close
    frame, the link dropping (1006), or a close we sent for what the peer sent (a
    protocol error 1002, a message too big 1009, text not UTF-8 1007)."""
    received = protocol.close_rcvd
    if received is not None:
        return ConnectionClosed(received.code, received.reason)
    if isinstance(protocol.parser_exc, EOFError):
        return ConnectionClosed(ABNORMAL_CLOSURE)
    sent = protocol.close_sent
    if sent is not None:
        return ConnectionClosed(sent.code, sent.reason)
    if protocol.state is State.CLOSED:
        return ConnectionClosed(ABNORMAL_CLOSURE)
    return None
