"""A gRPC server on the lean HTTP/2 transport that runs grpc.aio-style servicers unchanged.

Methods come from the service's protobuf descriptor; each RPC runs its servicer method as a
task with a ``ServerCall`` as its context (``invocation_metadata``, ``send_initial_metadata``,
``write``, ``abort``, ``set_code``, ``set_details``, ``cancelled``). A client reset or a lost
connection cancels the task; ``grpc-timeout`` is enforced as DEADLINE_EXCEEDED.

A servicer may serve a method on callbacks instead, with no task (its ``callbacks``: method
name -> ``CallHandler`` factory): the handler is told of each request as it arrives, of the
client's half-close and of the call's cancellation, and ends the call itself (``finish``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from expert_router.h2 import frames as f
from expert_router.h2.connection import H2Connection
from expert_router.h2.grpc import (
    CONTENT_TYPE,
    GrpcError,
    GrpcStream,
    message,
    parse_timeout,
    trailers,
)
from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits

log = logging.getLogger("expert_router.h2")
_RESERVED = {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
_OK_HEAD = [(b":status", b"200"), (b"content-type", CONTENT_TYPE)]
_EOF: Any = object()
_UNAVAILABLE = "drain timeout"  # the cancel message of calls a drain ends
_NO_DEADLINE = contextlib.nullcontext()  # a call without grpc-timeout: no timer to arm


@dataclass(frozen=True)
class Method:
    name: str
    request: type[Any]
    streaming_in: bool
    streaming_out: bool


def methods_of(pb2: ModuleType, service: str) -> dict[bytes, Method]:
    """``/package.Service/Method`` -> its ``Method``, from ``pb2``'s descriptor."""
    desc = pb2.DESCRIPTOR.services_by_name[service]
    return {
        f"/{desc.full_name}/{m.name}".encode(): Method(
            m.name, getattr(pb2, m.input_type.name), m.client_streaming, m.server_streaming
        )
        for m in desc.methods
    }


class CallHandler(Protocol):
    """A method served on callbacks: told what happens to one call, from the connection's
    callbacks (nothing it raises reaches the connection: the call ends UNKNOWN, then
    ``on_cancel``). It ends the call with ``ServerCall.finish``; after that nothing is told."""

    def on_message(self, request: Any) -> None:
        """One request message, parsed."""

    def on_input_end(self) -> None:
        """The client half-closed: no request follows."""

    def on_cancel(self) -> None:
        """The call ended without the handler (the client reset it or left, its deadline
        passed, the server stopped, or a callback raised)."""


HandlerFactory = Callable[["ServerCall"], CallHandler]


UNPARSED = "a request message does not parse"
"""grpc's servers answer INTERNAL too ("Exception deserializing request!"), logging nothing."""


class _Abort(Exception):
    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        self.status, self.details = status, details


class ServerCall(GrpcStream):
    """One RPC being served, and its servicer context."""

    conn: ServerConnection

    __slots__ = (
        "method", "_headers", "_metadata", "_queue", "_eof", "_head_sent",
        "_code", "_details", "task", "cancelled_", "handler", "_factory", "_timer",
        "_delivering",
    )  # fmt: skip

    def __init__(
        self,
        conn: ServerConnection,
        sid: int,
        method: Method,
        headers: list[tuple[bytes, bytes]],
        encoding: bytes = b"identity",
    ) -> None:
        super().__init__(conn, sid, encoding)
        self.method = method
        self._headers = headers
        self._metadata: tuple[tuple[str, str], ...] | None = None  # read on first use
        self._queue: deque[bytes] = deque()
        self._eof = False
        self._head_sent: list[tuple[bytes, bytes]] | None = None
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.task: asyncio.Task[None] | None = None
        self.cancelled_ = False
        self.handler: CallHandler | None = None  # a method served on callbacks
        self._factory: HandlerFactory | None = None  # its handler, made once the call is open
        self._timer: asyncio.TimerHandle | None = None  # its deadline
        self._delivering = False  # _deliver is running (further down this stack)

    # -- frames from the client ------------------------------------------------------------
    def on_open(self) -> None:
        factory, self._factory = self._factory, None
        if factory is None:
            return
        self.conn.server.calls.add(self)
        try:
            handler = factory(self)
            if not self.closed:  # else the handler ended the call as it was made
                self.handler = handler
                if self._eof:
                    handler.on_input_end()
        except Exception as exc:
            self._handler_failed(exc)

    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        if end_stream:
            self._end_input()

    def on_data(self, data: bytes, end_stream: bool) -> int:
        if self.closed:
            return self.owed  # the call is over: nothing is kept
        messages = self.messages(data)
        if messages is None:
            return 0
        if self.handler is not None:  # each request to the handler as it comes, unless
            self._queue.extend(messages)  # its answers cannot leave (see _deliver)
            self._deliver()
            if end_stream:
                self._end_input()
            return self.owed - self.unread
        self._queue.extend(messages)
        if end_stream:
            self._end_input()
        self._wake()
        return self.owed - self.unread

    def _deliver(self) -> None:
        """Hand the requests received to the handler, in order, while the call's answers can
        leave. While they cannot (the client's window for them is spent, or it does not read
        its socket), the rest wait here unread: their flow-control credit is kept, so the
        client stops at its windows instead of making the server queue answers without end;
        ``resume_input`` goes on once the answers have left."""
        queue, handler, conn = self._queue, self.handler, self.conn
        parse = self.method.request.FromString
        self._delivering = True
        try:
            while queue and handler is not None and not self.closed:
                if self.pending is not None or conn._paused:
                    conn.held.add(self)
                    return
                raw = queue.popleft()
                self.unread -= len(raw) + 5
                try:
                    request = parse(raw)
                except DecodeError:
                    self.fail(grpc.StatusCode.INTERNAL, UNPARSED)
                    return
                handler.on_message(request)
        except Exception as exc:
            self._handler_failed(exc)
            return
        finally:
            self._delivering = False
        conn.held.discard(self)
        self.unread = 0  # nothing held (a compressed message's bytes are not its length)
        if self._eof and not self.closed and handler is not None:
            self._tell_input_end(handler)

    def resume_input(self) -> None:
        """The call's answers have left: the requests held meanwhile go on to the handler,
        their credit back to the client (from inside ``_deliver``: its loop goes on)."""
        if self._queue and not self.closed and not self._delivering:
            self._deliver()
            self.settle()

    def on_drained(self) -> None:
        self.resume_input()

    def _end_input(self) -> None:
        self._eof = True
        if self._deframer.partial:  # the client half-closed inside a message (as grpc does)
            self.fail(grpc.StatusCode.INTERNAL, "the request stream ended inside a message")
            return
        handler = self.handler
        if handler is None:
            self._wake()
        elif not self.closed and not self._queue:  # (else once the held requests are in)
            self._tell_input_end(handler)

    def _tell_input_end(self, handler: CallHandler) -> None:
        if not self.closed:
            try:
                handler.on_input_end()
            except Exception as exc:
                self._handler_failed(exc)

    def on_reset(self, code: int) -> None:
        self._cancel()

    def on_lost(self, exc: BaseException | None) -> None:
        self._cancel()

    def _cancel(self) -> None:
        self.cancelled_ = True
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        handler, self.handler = self.handler, None
        self._tell_cancel(handler)

    def fail(self, status: grpc.StatusCode, details: str) -> None:
        """End the call now (a broken request): trailers, then cancel the servicer."""
        self.conn.assembling -= self.release_partial()
        self.stop(status, details)

    def stop(self, status: grpc.StatusCode, details: str) -> None:
        """End the call with ``status`` whatever serves it: its task is cancelled, its
        handler told (``on_cancel``)."""
        handler, self.handler = self.handler, None
        self.finish(status, details)
        if self.task is not None:
            self.task.cancel()
        self._tell_cancel(handler)

    def _handler_failed(self, exc: Exception) -> None:
        handler, self.handler = self.handler, None
        _failed(self, exc)
        self._tell_cancel(handler)

    def _tell_cancel(self, handler: CallHandler | None) -> None:
        self._over()
        if handler is not None:
            try:
                handler.on_cancel()
            except Exception:
                log.exception("error cancelling gRPC method %s", self.method.name)

    def _over(self) -> None:
        """The call's deadline and its place among the server's callback calls, let go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.conn.held.discard(self)
        server = self.conn.server
        if self in server.calls:
            server.call_over(self)

    # -- reading requests ------------------------------------------------------------------
    async def read(self) -> Any:
        """The next request message, or ``_EOF`` once the client half-closed."""
        while not self._queue:
            if self._eof:
                return _EOF
            await self._wait()
        raw = self._queue.popleft()
        self.unread -= len(raw) + 5  # credited later: H2Stream.settle
        try:
            return self.method.request.FromString(raw)
        except DecodeError:
            raise _Abort(grpc.StatusCode.INTERNAL, UNPARSED) from None

    def input_done(self) -> bool:
        """The client has half-closed and every request it sent was read."""
        return self._eof and not self._queue

    async def requests(self) -> AsyncIterator[Any]:
        while (msg := await self.read()) is not _EOF:
            yield msg

    # -- the servicer context (grpc.aio's names) -------------------------------------------
    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The client's metadata: its headers less the pseudo-headers and gRPC's own."""
        meta = self._metadata
        if meta is None:
            meta = self._metadata = tuple(
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in self._headers
                if not k.startswith(b":") and k not in _RESERVED
            )
        return meta

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.set_initial_metadata(metadata)
        # They leave with the first message when one follows at once, else on their own.
        self.conn.event_loop().call_soon(self._send_head)

    def set_initial_metadata(self, metadata: Any) -> None:
        """Set the initial metadata, for callers in a callback: they leave with the next
        message or the trailers, whichever is sent first."""
        if self._head_sent is not None:
            raise RuntimeError("initial metadata was already sent")
        self._head_sent = _OK_HEAD + [(str(k).encode(), str(v).encode()) for k, v in metadata]

    def _send_head(self) -> None:
        head = self._head_sent
        if head is not _SENT and head is not None and not self.closed:
            self._head_sent = _SENT
            self.conn._write(self.conn.headers_frame(self.sid, head, False))

    async def write(self, msg: Any) -> None:
        if self.closed:
            raise asyncio.CancelledError("the call is over")
        if not self.send_framed(message(msg.SerializeToString())):
            await self.drain()

    def send_framed(self, framed: bytes) -> bool:
        """Send one message that already has its gRPC prefix, at once (headers first when
        they have not left); False when the caller should ``await drain()`` before more."""
        if self.closed:
            return True  # the call is over: nothing to send, nothing to wait for
        conn = self.conn
        head = b""
        if self._head_sent is not _SENT:
            head = conn.headers_frame(self.sid, self._head_sent or _OK_HEAD, False)
            self._head_sent = _SENT
        return conn.send(self, framed, False, head) and not conn._paused

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def cancelled(self) -> bool:
        return self.cancelled_

    def done(self) -> bool:
        return self.closed

    def peer(self) -> str:
        transport = self.conn.transport
        addr = transport.get_extra_info("peername") if transport is not None else None
        return f"ipv4:{addr[0]}:{addr[1]}" if addr else "unknown"

    # -- ending ----------------------------------------------------------------------------
    def finish(self, status: grpc.StatusCode, details: str = "", last: bytes = b"") -> None:
        """End the call with trailers (a unary answer's message ``last`` before them); once."""
        if self.closed:
            return
        conn, sid = self.conn, self.sid
        tail = _OK_TAIL if status is _OK and not details else trailers(status, details)
        head = b""
        if self._head_sent is _SENT:
            end = conn.headers_frame(sid, tail, True)
        elif last:
            head = conn.headers_frame(sid, self._head_sent or _OK_HEAD, False)
            end = conn.headers_frame(sid, tail, True)
        else:  # trailers-only
            end = conn.headers_frame(sid, (self._head_sent or _OK_HEAD) + tail, True)
        self._head_sent = _SENT
        if not self._eof:
            end += f.rst_stream(sid, f.NO_ERROR)  # the client need not send more
        if last:
            conn.send(self, last, False, head)
        if self.pending is None:  # trailers are not flow-controlled: they leave now
            conn._write(end)
        else:
            conn.queue(self, b"", False, end)
        conn.forget(self)
        self.handler = None  # ended by its handler, if it has one: nothing more to tell it
        self._over()


_SENT: Any = [(b"", b"")]  # marker: the response headers have left
_OK = grpc.StatusCode.OK
_OK_TAIL = trailers(_OK)


class ServerConnection(H2Connection):
    """The server end of one client connection."""

    def __init__(self, server: GrpcServer) -> None:
        super().__init__(server.limits)
        self.server = server
        self.refusing = False
        self.held: set[ServerCall] = set()  # callback calls holding requests (_deliver)
        self.idle_since = 0.0  # loop time the connection last had no stream open
        self._timer: asyncio.TimerHandle | None = None  # the preface or idle check

    def resume_writing(self) -> None:
        super().resume_writing()
        for call in list(self.held):
            call.resume_input()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self.server
        server.connections[self] = None
        cap = server.max_connections
        if cap is not None and len(server.connections) > cap and not server.evict(self):
            self.abort(f.NO_ERROR, "too many connections", False)  # its calls: UNAVAILABLE
            return
        loop = self.event_loop()
        self.idle_since = loop.time()
        self._timer = loop.call_at(self.idle_since + self.limits.preface_timeout, self._time_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_idle(self) -> None:
        """Armed lazily: a timer due before this idle period would end stays (it looks again
        when it fires), so calls in a row on one connection arm none."""
        limit = self.limits.idle_timeout
        if limit is None or self._ended:
            return  # (``idle_since`` matters to the idle check alone, past the preface)
        loop = self.event_loop()
        self.idle_since = now = loop.time()
        timer = self._timer
        if timer is not None:
            if timer.when() <= now + limit:
                return
            timer.cancel()  # the preface check, later than this idle period's end
        self._timer = loop.call_at(now + limit, self._time_check)

    def _time_check(self) -> None:
        """The preface timeout, then the idle timeout (``H2Limits``): end a connection that
        opened no stream for that long."""
        self._timer = None
        if self._ended or self.streams:
            return
        lim = self.limits
        limit = lim.preface_timeout if self._preface else lim.idle_timeout
        if limit is None:
            return
        due = self.idle_since + limit
        loop = self.event_loop()
        if loop.time() < due:
            self._timer = loop.call_at(due, self._time_check)
        elif self._preface:
            self.abort(f.NO_ERROR, "no connection preface in time")
        else:
            self.abort(f.NO_ERROR, "idle")

    def evictable(self) -> bool:
        """Idle: no stream open and not ending (the oldest such makes room for a new one)."""
        return not self.streams and not self._ended

    def goaway_graceful(self) -> None:
        """Tell the client no call after the ones it opened will be taken (GOAWAY NO_ERROR);
        calls in flight go on."""
        self.refusing = True
        self._write(f.goaway(self.last_peer_sid, f.NO_ERROR))

    def on_new_stream(
        self, sid: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> ServerCall | None:
        if self.refusing:  # after our GOAWAY: never processed, the client may retry it
            self.refuse(sid)
            return None
        path, ctype, timeout, encoding, verb = b"", b"", b"", b"identity", b""
        for k, v in headers:
            if k == b":path":
                path = v
            elif k == b":method":
                verb = v
            elif k == b"content-type":
                ctype = v
            elif k == b"grpc-timeout":
                timeout = v
            elif k == b"grpc-encoding":
                encoding = v
        method = self.server.methods.get(path)
        if verb != b"POST":  # gRPC is POST only (grpc resets such a stream; 405 says why)
            self.reject(sid, self.headers_frame(sid, [(b":status", b"405")], True))
            return None
        if not ctype.startswith(CONTENT_TYPE):
            self.reject(sid, self.headers_frame(sid, [(b":status", b"415")], True))
            return None
        if method is None:
            msg = f"Method not found: {path.decode(errors='replace')}"
            tail = trailers(grpc.StatusCode.UNIMPLEMENTED, msg)
            self.reject(sid, self.headers_frame(sid, _OK_HEAD + tail, True))
            return None
        call = ServerCall(self, sid, method, headers, encoding)
        if end:
            call._eof = True
        deadline = None
        if timeout:
            with contextlib.suppress(GrpcError):  # a malformed timeout is no deadline
                deadline = parse_timeout(timeout)
        factory = self.server.callbacks.get(method.name)
        if factory is not None:  # started by on_open, once the call is in the stream table
            call._factory = factory
            if deadline is not None:
                call._timer = self.event_loop().call_later(deadline, _expire, call)
            return call
        task = self.event_loop().create_task(self.server.run(call, deadline))
        call.task = task
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)
        return call


class GrpcServer:
    """Serves ``servicer`` (a grpc.aio-style class) for ``service`` of ``pb2``."""

    def __init__(
        self,
        servicer: Any,
        pb2: ModuleType,
        service: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        limits: H2Limits = DEFAULT_LIMITS,
        max_connections: int | None = None,
    ) -> None:
        self.servicer = servicer
        self.limits = limits
        self.max_connections = max_connections  # None: as many as the file limit allows
        self.methods = methods_of(pb2, service)
        self.callbacks: dict[str, HandlerFactory] = dict(getattr(servicer, "callbacks", {}))
        self.host, self.port, self.reuse_port = host, port, reuse_port
        self.connections: dict[ServerConnection, None] = {}  # open ones, oldest first
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls: set[ServerCall] = set()  # calls in flight served on callbacks
        self._no_calls: asyncio.Future[None] | None = None  # a drain waiting for them
        self._server: asyncio.Server | None = None

    def evict(self, newcomer: ServerConnection) -> bool:
        """Past ``max_connections``: close the oldest idle connection (GOAWAY NO_ERROR, its
        file descriptor freed at once) to make room for ``newcomer``; False when every other
        connection has a call open, and ``newcomer`` is the one refused."""
        for conn in self.connections:
            if conn is not newcomer and conn.evictable():
                conn.abort(f.NO_ERROR, "connection limit: the oldest idle one closes", False)
                return True
        return False

    def call_over(self, call: ServerCall) -> None:
        self.calls.discard(call)
        idle = self._no_calls
        if not self.calls and idle is not None and not idle.done():
            idle.set_result(None)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConnection(self),
            self.host,
            self.port,
            reuse_port=self.reuse_port or None,
            backlog=4096,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def drain(self, grace: float) -> None:
        """Stop gracefully: no new connections, GOAWAY to the open ones (no new calls), calls
        in flight may finish for ``grace`` seconds; the rest end UNAVAILABLE."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.goaway_graceful()
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        if self.calls and end > loop.time():
            self._no_calls = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_calls, end - loop.time())
        for call in list(self.calls):
            call.stop(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        for task in list(self.tasks):
            task.cancel(msg=_UNAVAILABLE)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.stop()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for call in list(self.calls):
            call.stop(grpc.StatusCode.CANCELLED, "server stopping")
        for conn in list(self.connections):
            conn.abort(f.NO_ERROR, "server stopping", linger=False)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()

    async def run(self, call: ServerCall, deadline: float | None) -> None:
        """Run one RPC's servicer method and end the call with its status."""
        handler: Callable[..., Any] = getattr(self.servicer, call.method.name)
        method = call.method
        timer = asyncio.timeout(deadline) if deadline is not None else None
        try:
            async with timer or _NO_DEADLINE:
                if method.streaming_in:
                    result = handler(call.requests(), call)
                else:
                    request = await call.read()
                    if request is _EOF:
                        raise _Abort(grpc.StatusCode.INTERNAL, "request message missing")
                    result = handler(request, call)
                if method.streaming_out:
                    if hasattr(result, "__aiter__"):
                        async for msg in result:
                            await call.write(msg)
                    else:
                        await result
                    call.finish(call._code or grpc.StatusCode.OK, call._details)
                else:
                    response = await result
                    if call._code not in (None, grpc.StatusCode.OK):
                        call.finish(call._code, call._details)
                    else:
                        call.finish(grpc.StatusCode.OK, "", message(response.SerializeToString()))
        except _Abort as exc:
            call.finish(exc.status, exc.details)
        except TimeoutError as exc:
            if timer is not None and timer.expired():
                call.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            else:  # the servicer's own timeout
                _failed(call, exc)
        except asyncio.CancelledError as exc:
            if not call.cancelled_:
                if exc.args and exc.args[0] == _UNAVAILABLE:  # the server drained too long
                    call.finish(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                else:
                    call.finish(grpc.StatusCode.CANCELLED, "server stopping")
            raise
        except Exception as exc:
            _failed(call, exc)


def _expire(call: ServerCall) -> None:
    """A callback call's ``grpc-timeout`` passed."""
    call._timer = None
    call.stop(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _failed(call: ServerCall, exc: Exception) -> None:
    """End a call whose servicer raised, as grpc.aio does: the code it set, else UNKNOWN."""
    if isinstance(exc, NotImplementedError):
        log.debug("gRPC method %s not implemented", call.method.name)
    else:
        log.exception("error in gRPC method %s", call.method.name)
    code = call._code if call._code not in (None, grpc.StatusCode.OK) else None
    call.finish(code or grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")
