"""gRPC calls on the lean HTTP/2 transport: a ``GrpcChannel`` to one ``host:port`` keeps a few
connections open and multiplexes calls over them; a ``ClientCall`` reads the answer's
messages as they arrive and cancels with RST_STREAM. Failures raise ``GrpcError`` with the
status a grpc.aio client would report (UNAVAILABLE when the server could not be reached).

A call the server did not take (RST_STREAM REFUSED_STREAM, or a stream above a GOAWAY's last
id: RFC 9113 8.7, "not processed") is sent again once, on a connection that takes it, as
grpc's transparent retry does; its caller sees one call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from expert_router.h2 import frames as f
from expert_router.h2.connection import H2Connection
from expert_router.h2.grpc import (
    CONTENT_TYPE,
    GrpcError,
    GrpcStream,
    decode_message,
    format_timeout,
    message,
    status_of,
)
from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits
from expert_router.h2.stream import RESET_SENT
from expert_router.wire.grpc_status import TRANSPORT_STATUS

EOF: Any = object()  # what ``ClientCall.read`` returns after the last message
Replay = tuple[bytes, bytes]  # a call's request header block and its framed messages
_MAX_SID = 2**31 - 1


class Listener(Protocol):
    """Takes a call's messages synchronously, as they arrive (see ``ClientCall.listen``)."""

    def message(self, framed: bytes, /) -> object:
        """One whole message, with its 5-byte gRPC prefix. False: the listener could not pass
        it on yet; its flow-control credit is held until ``ClientCall.release`` (so a slow
        reader downstream stops the server at the stream's window)."""

    def end(self, error: GrpcError | None) -> None:
        """The call is over (``None``: with status OK)."""


class ClientCall(GrpcStream):
    """One call in flight: its initial metadata, messages and final status."""

    __slots__ = (
        "response", "metadata", "_queue", "_head", "done", "error",
        "listener", "heard", "replay",
    )  # fmt: skip

    conn: ClientConnection

    def __init__(
        self,
        conn: ClientConnection,
        sid: int,
        response: type[Any],
        replay: Replay | None = None,
    ) -> None:
        super().__init__(conn, sid)
        self.response = response
        self.metadata: list[tuple[str, str]] | None = None
        self._queue: deque[bytes] = deque()
        self._head = False
        self.done = False
        self.error: GrpcError | None = None
        self.listener: Listener | None = None
        self.heard = False  # DATA came since a watcher last looked (and cleared it)
        self.replay = replay  # what to send again if the server refuses it (once; see refused)

    # -- frames from the server ------------------------------------------------------------
    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        status, details, http = None, "", b"200"
        first = not self._head
        meta: list[tuple[str, str]] = []
        for k, v in headers:
            if k == b"grpc-status":
                status = status_of(v)
            elif k == b"grpc-message":
                details = decode_message(v)
            elif k == b":status":
                http = v
            elif k == b"grpc-encoding":
                self._deframer.encoding = v
            elif first and not k.startswith(b":") and k != b"content-type":
                meta.append((k.decode("latin-1"), v.decode("latin-1")))
        if first:
            self._head = True
            self.metadata = meta
            self.replay = None  # taken: never sent again
            if http != b"200":  # (a malformed one, "2OO", ends this call alone: UNKNOWN)
                status_code = int(http) if len(http) == 3 and http.isdigit() else 0
                code = TRANSPORT_STATUS.get(status_code, grpc.StatusCode.UNKNOWN)
                self._end(code, f"the server answered HTTP {http[:3].decode('latin-1')!r}")
                return
        if status is not None:
            self._end(status, details)
        elif end_stream:
            self._end(grpc.StatusCode.INTERNAL, "the stream ended without a status")
        else:
            self._wake()

    def on_data(self, data: bytes, end_stream: bool) -> int:
        self.heard = True
        listener = self.listener
        d = self._deframer
        if (
            listener is not None
            and len(data) > 5
            and not data[0]
            and len(data) == 5 + int.from_bytes(data[1:5], "big")
            and not d.have
            and len(data) - 5 <= d.limit
        ):
            # the usual case: one whole message, relayed as it came
            if listener.message(data) is False:  # held: its window credit waits for release
                self.unread += len(data)
        elif self.done:
            return self.owed  # cancelled: nothing is kept
        else:
            unread = self.unread
            messages = self.messages(data)  # their bytes are counted in unread
            if messages is None:  # a broken message: the call is over, its listener told
                return 0
            if listener is None:
                self._queue.extend(messages)
            else:
                held = False
                for body in messages:
                    held |= listener.message(message(body)) is False
                if not held:  # taken at once: credited now
                    self.unread = unread
        if end_stream:
            self._end(grpc.StatusCode.INTERNAL, "the stream ended without trailers")
        elif self._waiter is not None:
            self._wake()
        return self.owed - self.unread

    def fail(self, status: grpc.StatusCode, details: str) -> None:
        """A broken answer: the call is over (reset), its reader or listener told."""
        self.conn.assembling -= self.release_partial()
        self.conn.reset(self, f.CANCEL)
        self._end(status, details)

    def on_reset(self, code: int) -> None:
        details = f"the server reset the stream (HTTP/2 error {code})"
        if code == f.REFUSED_STREAM:
            self.refused(details)
            return
        status = grpc.StatusCode.CANCELLED if code == f.CANCEL else grpc.StatusCode.INTERNAL
        self._end(status, details)

    def refused(self, details: str) -> None:
        """The server took no part of the call (it has left its connection's table): sent
        again on a connection that takes it, once; a second refusal ends it UNAVAILABLE."""
        replay, self.replay = self.replay, None
        channel = self.conn.channel
        if replay is None or channel is None or self.done:  # (no replay once a head came)
            self._end(grpc.StatusCode.UNAVAILABLE, details)
        else:
            channel.send_again(self, replay)

    def move(self, conn: ClientConnection, sid: int) -> None:
        """Start afresh as stream ``sid`` of ``conn`` (``refused``: nothing was received), its
        reader still waiting."""
        waiter = self._waiter
        GrpcStream.__init__(self, conn, sid)
        self._waiter = waiter

    def on_lost(self, exc: BaseException | None) -> None:
        self._end(grpc.StatusCode.UNAVAILABLE, f"connection lost: {exc or 'closed by the peer'}")

    def _end(self, status: grpc.StatusCode, details: str) -> None:
        if self.done:
            return
        self.done = True
        if self.pending is not None or not self.remote_ended:
            self.conn.reset(self, f.CANCEL)  # the server answered before our request had
        else:  # all left, or before it ended its own stream: nothing more is read
            self.conn.forget(self)
        if status != grpc.StatusCode.OK:
            self.error = GrpcError(status, details)
        listener, self.listener = self.listener, None  # no reference cycle left behind
        if listener is not None:
            listener.end(self.error)
        self._wake()

    # -- the caller's side -----------------------------------------------------------------
    async def read(self) -> Any:
        """The next message, ``EOF`` after the last one; ``GrpcError`` when the call failed."""
        raw = await self.read_raw()
        return EOF if raw is None else self.response.FromString(raw)

    async def read_raw(self) -> bytes | None:
        """The next message's serialized bytes, ``None`` after the last one."""
        while not self._queue:
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            await self._wait()
        raw = self._queue.popleft()
        self.unread -= len(raw) + 5  # credited later: H2Stream.settle
        return raw

    def release(self) -> None:
        """The listener passed on what it held: give the server that window back."""
        if self.unread and self.listener is not None:
            self.unread = 0
            self.settle()

    def listen(self, listener: Listener) -> None:
        """Hand the messages not read yet, and every later one, to ``listener`` as they arrive;
        ``listener.end`` is called once the call is over (at once if it already is)."""
        queue, self._queue = self._queue, deque()
        for body in queue:
            self.unread -= len(body) + 5
            listener.message(message(body))
        self.settle()
        if self.done:
            listener.end(self.error)
        else:
            self.listener = listener

    async def initial_metadata(self) -> list[tuple[str, str]]:
        while self.metadata is None:
            if self.error is not None:
                raise self.error
            await self._wait()
        return self.metadata

    def cancel(self) -> None:
        """Cancel the call (RST_STREAM CANCEL); later reads raise CANCELLED, and a listener's
        ``end`` is called with that error."""
        if self.done:
            return
        self.done = True
        self.error = GrpcError(grpc.StatusCode.CANCELLED, "cancelled by the client")
        listener, self.listener = self.listener, None
        self.conn.reset(self, f.CANCEL)
        self._wake()
        if listener is not None:
            listener.end(self.error)


class ClientConnection(H2Connection):
    """The client end of one connection."""

    client_side = True
    streams: dict[int, ClientCall]  # type: ignore[assignment]

    def __init__(
        self, limits: H2Limits = DEFAULT_LIMITS, channel: GrpcChannel | None = None
    ) -> None:
        super().__init__(limits)
        self.channel = channel  # where a refused call is sent again (None: not sent again)
        # Set once the server's first SETTINGS came (its stream limit above all), or on close.
        self.ready: asyncio.Future[None] = self.future()

    def _settings_frame(self, flags: int, payload: bytes) -> None:
        super()._settings_frame(flags, payload)
        if not flags & f.ACK and not self.ready.done():
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ready.done():
            self.ready.set_result(None)

    def usable(self) -> bool:
        return (
            not self.closed
            and not self._ended  # we ended it (GOAWAY sent): closing, never reused
            and self.goaway_id is None
            and self.next_sid < _MAX_SID
            and len(self.streams) < self.peer_max_streams
        )

    def new_sid(self) -> int:
        """The id of the next stream this end opens."""
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id:  # never processed: safe to send again elsewhere
                self._retire(stream, RESET_SENT)
                stream.refused(f"connection lost: GOAWAY (HTTP/2 error {code})")
        if not self.streams:
            self._leave()

    def on_idle(self) -> None:
        if self.goaway_id is not None:  # the last call the server took here has ended
            self._leave()

    def _leave(self) -> None:
        """After the server's GOAWAY, with no call left open: close our end now, as grpc's
        clients do, rather than hold the connection through the server's lingering close."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()


class GrpcChannel:
    """Calls to one gRPC server at ``host:port`` (insecure, HTTP/2 with prior knowledge)."""

    def __init__(
        self, target: str, *, connect_timeout: float = 5.0, limits: H2Limits = DEFAULT_LIMITS
    ) -> None:
        host, _, port = target.rpartition(":")
        self.target = target
        self.limits = limits
        self.host, self.port = host.strip("[]"), int(port)
        self.connect_timeout = connect_timeout
        self._conns: list[ClientConnection] = []
        self._connecting: asyncio.Task[ClientConnection] | None = None
        self._resending: set[asyncio.Task[None]] = set()  # refused calls waiting to connect
        self._closes = 0  # close() calls: a connect that spans one is not kept
        self._pseudo = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", target.encode()),
        ]
        self._fields = [(b"content-type", CONTENT_TYPE), (b"te", b"trailers")]  # after :path
        self._blocks: dict[bytes, bytes] = {}  # path -> its request header block

    async def _connection(self) -> ClientConnection:
        while True:
            for conn in self._conns:
                if conn.usable():
                    return conn
            self._conns = [c for c in self._conns if not c.closed]
            task = self._connecting
            if task is None:
                connect = self._connect(self._closes)
                self._connecting = task = asyncio.get_running_loop().create_task(connect)
                task.add_done_callback(self._connected)
            conn = await asyncio.shield(task)
            if conn.usable():
                return conn
            if conn.closed or conn.peer_max_streams == 0:
                raise GrpcError(grpc.StatusCode.UNAVAILABLE, f"{self.target} takes no calls")
            # else the callers that shared this connect filled it: open one more

    def _connected(self, task: asyncio.Task[ClientConnection]) -> None:
        """A connect is over, even if all its callers gave up waiting: the next one is new."""
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here, whoever still waits for it

    async def _connect(self, closes: int) -> ClientConnection:
        loop = asyncio.get_running_loop()
        conn: ClientConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: ClientConnection(self.limits, self), self.host, self.port
                )
                await asyncio.shield(conn.ready)  # calls must not exceed its stream limit
        except TimeoutError:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            raise GrpcError(
                grpc.StatusCode.UNAVAILABLE, f"{self.target}: connect timed out"
            ) from None
        except OSError as exc:
            raise GrpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"failed to connect to {self.target}: {exc.strerror or exc}",
            ) from None
        if conn.closed:
            raise GrpcError(grpc.StatusCode.UNAVAILABLE, f"{self.target} closed the connection")
        if closes != self._closes and conn.transport is not None:
            conn.transport.close()
            raise GrpcError(grpc.StatusCode.UNAVAILABLE, f"{self.target}: the channel was closed")
        self._conns.append(conn)
        return conn

    async def start(
        self,
        path: bytes,
        requests: Sequence[bytes],
        response: type[Any],
        *,
        metadata: Sequence[tuple[str, str]] = (),
        deadline: float | None = None,
        half_close: bool = True,
    ) -> ClientCall:
        """Open a call on ``path``, send the serialized ``requests`` (then half-close);
        ``deadline`` (seconds) goes to the server as ``grpc-timeout``."""
        conn = await self._connection()
        return self._start_on(conn, path, requests, response, metadata, deadline, half_close)

    def start_now(
        self, path: bytes, requests: Sequence[bytes], response: type[Any]
    ) -> ClientCall | None:
        """``start`` (half-closed, no deadline) without waiting: on a connection already open
        that takes one more call; None when there is none (``start`` connects)."""
        for conn in self._conns:
            if conn.usable():
                return self._start_on(conn, path, requests, response, (), None, True)
        return None

    def _start_on(
        self,
        conn: ClientConnection,
        path: bytes,
        requests: Sequence[bytes],
        response: type[Any],
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
        half_close: bool,
    ) -> ClientCall:
        if deadline is None and not metadata:  # a path's own headers: encoded once
            block = self._blocks.get(path)
            if block is None:
                head = [*self._pseudo, (b":path", path), *self._fields]
                block = self._blocks[path] = f.header_block(head)
        else:
            headers = [*self._pseudo, (b":path", path), *self._fields]
            if deadline is not None:
                headers.append((b"grpc-timeout", format_timeout(deadline)))
            headers += [(k.encode(), v.encode()) for k, v in metadata]
            block = f.cached_header_block(headers)
        body = message(requests[0]) if len(requests) == 1 else b"".join(map(message, requests))
        call = ClientCall(conn, conn.new_sid(), response, (block, body) if half_close else None)
        self._send(call, block, body, half_close)
        return call

    @staticmethod
    def _send(call: ClientCall, block: bytes, body: bytes, half_close: bool) -> None:
        """Open ``call``'s stream on its connection: its request's headers and messages."""
        conn, sid = call.conn, call.sid
        conn.streams[sid] = call
        conn.send(call, body, half_close, conn.block_frame(sid, block, False))

    def send_again(self, call: ClientCall, replay: Replay) -> None:
        """Send a refused call again (``ClientCall.refused``): on another open connection
        that takes it, else its own if it still does, else a new one."""
        refuser = call.conn
        for conn in (*(c for c in self._conns if c is not refuser), refuser):
            if conn.usable():
                call.move(conn, conn.new_sid())
                self._send(call, *replay, True)
                return
        task = asyncio.get_running_loop().create_task(self._send_when_connected(call, replay))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _send_when_connected(self, call: ClientCall, replay: Replay) -> None:
        try:
            conn = await self._connection()
        except GrpcError as exc:
            call._end(exc.status, exc.details)
            return
        except asyncio.CancelledError:  # the channel closed
            call._end(grpc.StatusCode.UNAVAILABLE, f"{self.target}: the channel was closed")
            raise
        if not call.done:  # (else cancelled meanwhile)
            call.move(conn, conn.new_sid())
            self._send(call, *replay, True)

    async def unary(
        self, path: bytes, request: Any, response: type[Any], *, deadline: float | None = None
    ) -> Any:
        """One request, one answer (``GrpcError`` when the call fails or outlives ``deadline``,
        connecting included)."""
        call: ClientCall | None = None
        try:
            async with asyncio.timeout(deadline):
                call = await self.start(
                    path, [request.SerializeToString()], response, deadline=deadline
                )
                answer = await call.read()
                while await call.read() is not EOF:  # wait for the trailers' status
                    pass
        except TimeoutError:
            if call is not None:
                call.cancel()
            raise GrpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        if answer is EOF:
            raise GrpcError(grpc.StatusCode.INTERNAL, "the server sent no message")
        return answer

    async def close(self) -> None:
        self._closes += 1
        for task in list(self._resending):
            task.cancel()
        conns, self._conns = self._conns, []
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
