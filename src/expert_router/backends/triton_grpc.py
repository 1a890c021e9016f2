"""Triton / TensorRT-LLM upstreams over KServe v2 gRPC (``grpc://HOST:PORT[?model=&template=]``).

Each request opens one decoupled ``ModelStreamInfer`` call on the replica's channel (the lean
HTTP/2 client of ``expert_router.h2``, connected on first use, closed by ``aclose``); Triton's
text pieces are re-emitted as OpenAI SSE chunks (through the ``TaskCall`` shim). A client's own
``ModelInferRequest`` (``BackendRequest.native``) that the replica can take as it is goes there
unchanged and its answer's messages come back undecoded, from the call's callbacks. Health is
ServerLive + ModelReady; gRPC failures map to ``BackendError``s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb2

from expert_router.backends.base import BackendRequest, BackendSettings, Listener
from expert_router.backends.tasks import TaskCall
from expert_router.errors import (
    BackendError,
    BackendProtocolError,
    BackendRefused,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    RequestError,
)
from expert_router.h2.client import ClientCall, GrpcChannel
from expert_router.h2.grpc import GrpcError
from expert_router.wire import kserve
from expert_router.wire import triton as tw
from expert_router.wire.grpc_status import http_for_grpc
from expert_router.wire.openai import error_bytes

_PATH = b"/inference.GRPCInferenceService/"
STREAM_INFER = _PATH + b"ModelStreamInfer"

_ids = itertools.count(1)


def parse_target(url: str) -> tuple[str, tw.TritonTarget]:
    """``host:port`` and the model/template/tensor options of a Triton URL."""
    parts = urlsplit(url)
    try:
        return parts.netloc, tw.target_from_query(parts.query)
    except RequestError as exc:
        raise ConfigError(f"{url}: {exc}") from None


# At most 18 digits: a size past that is no request's, and ``int`` refuses more than 4300
# digits with a ValueError (the status message is the upstream's to write).
_LARGER = re.compile(r"larger than max \((\d{1,18}) vs\. \d+\)")


def _too_large(details: str) -> int | None:
    """The message size a "larger than max" status names (grpc-core's words, and ours)."""
    m = _LARGER.search(details)
    return int(m.group(1)) if m else None


def rpc_error(where: str, exc: GrpcError, sent: int = -1) -> BackendError:
    """The ``BackendError`` for a failed RPC: retryable when the replica was unreachable.
    ``sent``: the size of the request message; a RESOURCE_EXHAUSTED that names that size as
    too large (grpc's "larger than max (N vs. M)") is the request's fault, 413, not the
    replica's load (429, which puts the replica in back-off and retries on the others)."""
    code, details = exc.status, exc.details
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _too_large(details) == sent:
        return BackendStatusError(
            f"{where}: the request is larger than the replica takes: {details}",
            status=413,
            body=error_bytes(
                f"the request is larger than the expert takes ({details})",
                type="invalid_request_error",
                code="request_too_large",
            ),
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if "Connection refused" in details:  # the lean client's connect failure
            return BackendRefused(f"{where}: connection refused")
        return BackendUnavailable(f"{where}: unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"{where}: no answer in time")
    status = http_for_grpc(code)
    return BackendStatusError(
        f"{where} answered {code.name}: {details}",
        status=status,
        body=error_bytes(details, type="upstream_error", code=code.name.lower()),
    )


class Pieces(Protocol):
    """A source of (text, final) pieces of one Triton answer."""

    async def next(self) -> tuple[str, bool]: ...

    def cancel(self) -> None: ...


def translate(
    req: BackendRequest, template: tw.PromptTemplate, model: str, rid: str
) -> tuple[tw.TritonRequest, tw.OpenAIChunks]:
    """An OpenAI request for a Triton replica: its tensors, and the encoder of the OpenAI
    chunks its answer becomes. Built in ``open``, before anything is sent: a value the tensors
    cannot carry raises ``RequestError`` there (the client's 400, the replica not blamed)."""
    payload = json.loads(req.body)
    treq = tw.openai_to_triton(payload, template)
    treq.stream = req.stream
    chat = req.path.endswith("chat/completions")
    return treq, tw.OpenAIChunks(chat, str(payload.get("model") or model), rid)


class TritonResponse:
    """A Triton answer in progress, read as OpenAI wire bytes (SSE or one JSON body)."""

    __slots__ = ("_src", "_enc", "_first", "_eof", "_count", "_max", "status", "content_type")

    def __init__(
        self,
        src: Pieces,
        enc: tw.OpenAIChunks,
        first: tuple[str, bool],
        max_tokens: int,
        stream: bool,
    ) -> None:
        self._src, self._enc, self._first = src, enc, first
        self._eof = False
        self._count, self._max = 0, max_tokens
        self.status = 200
        self.content_type = "text/event-stream" if stream else "application/json"

    def _reason(self) -> str:
        return "length" if self._count >= self._max else "stop"

    async def readany(self) -> bytes:
        if self._eof:
            return b""
        if self.content_type == "application/json":  # not streamed: the whole answer at once
            return await self.read()
        first = self._first
        if first is not None:
            self._first = None  # type: ignore[assignment]
            text, final = first
            head = self._enc.role
        else:
            text, final = await self._src.next()
            head = b""
        self._count += 1
        if final:
            self._eof = True
            return head + self._enc.last(text, self._reason())
        return head + self._enc.piece(text)

    def at_eof(self) -> bool:
        return self._eof

    async def texts(self) -> AsyncIterator[tuple[str, bool]]:
        """The answer's (text, last) pieces as Triton sent them (no OpenAI encoding)."""
        final = self._eof
        first = self._first
        if first is not None:
            self._first = None  # type: ignore[assignment]
            final = first[1]
            yield first
        nxt = self._src.next
        while not final:
            text, final = await nxt()
            yield text, final
        self._eof = True

    async def read(self) -> bytes:
        parts = []
        first = self._first
        if first is not None:
            self._first = None  # type: ignore[assignment]
            parts.append(first[0])
            final = first[1]
        else:
            final = self._eof
        while not final:
            text, final = await self._src.next()
            parts.append(text)
        self._eof = True
        return self._enc.full("".join(parts), "stop")

    def close(self) -> None:
        if not self._eof:
            self._src.cancel()


class _GrpcPieces:
    __slots__ = ("_call", "_names", "_where", "_read_timeout")

    def __init__(
        self, call: ClientCall, names: tw.TritonNames, where: str, read_timeout: float
    ) -> None:
        self._call, self._names, self._where = call, names, where
        self._read_timeout = read_timeout

    async def next(self) -> tuple[str, bool]:
        try:
            async with asyncio.timeout(self._read_timeout):
                raw = await self._call.read_raw()
        except TimeoutError as exc:
            self._call.cancel()
            raise BackendTimeout(
                f"{self._where}: no response for {self._read_timeout:g} s"
            ) from exc
        except GrpcError as exc:
            raise rpc_error(self._where, exc) from exc
        return self.piece(raw)

    def piece(self, raw: bytes | None) -> tuple[str, bool]:
        """(text, final) of one serialized answer (``None``: the stream ended)."""
        if raw is None:
            return "", True  # the server ended the stream without a final flag
        msg = pb2.ModelStreamInferResponse.FromString(raw)
        if msg.error_message:
            raise BackendProtocolError(f"{self._where}: {msg.error_message}")
        resp = msg.infer_response
        return kserve.response_text(resp, self._names), kserve.is_final(resp)

    def cancel(self) -> None:
        self._call.cancel()


class _Through:
    """A relayed call's listener once its first message passed the checks: the messages go
    to the holder's ``on_data`` with no step between, the end to the relay."""

    __slots__ = ("message", "end")

    def __init__(
        self, message: Callable[[bytes], object], end: Callable[[GrpcError | None], None]
    ) -> None:
        self.message, self.end = message, end


class FirstMessageClock:
    """The first-message deadlines of one backend's relayed calls. Every call waits the same
    timeout, so they fall due in the order they started: one timer, armed for the oldest
    call still waiting, stands for all of them (no timer is armed and cancelled per call).
    A call leaves the clock with its first message, its end or its cancellation; what the
    clock holds is the calls waiting for a first message, no more."""

    __slots__ = ("timeout", "waiting", "timer")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.waiting: dict[_NativeRelay, float] = {}  # by deadline, oldest first
        self.timer: asyncio.TimerHandle | None = None

    def start(self, relay: _NativeRelay) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + self.timeout
        self.waiting[relay] = when
        if self.timer is None:
            self.timer = loop.call_at(when, self._due)

    def stop(self, relay: _NativeRelay) -> None:
        self.waiting.pop(relay, None)

    def _due(self) -> None:
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = []
        for relay, when in self.waiting.items():
            if when > now:
                self.timer = loop.call_at(when, self._due)
                break
            late.append(relay)
        for relay in late:
            del self.waiting[relay]
            relay.no_first()


class SilenceWatch:
    """The read timeout of one backend's relayed calls past their first message. One timer,
    armed while any call is watched, looks at every call each ``timeout`` seconds: a call
    that received nothing since the last look (and holds no message its listener could not
    take: then the silence is ours) has been silent for ``timeout`` seconds at least, two at
    most, and fails; the others are looked at again. A DATA frame only raises the call's
    ``heard`` flag: no clock and no timer per message."""

    __slots__ = ("timeout", "watched", "timer")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.watched: set[_NativeRelay] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, relay: _NativeRelay) -> None:
        self.watched.add(relay)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._look)

    def unwatch(self, relay: _NativeRelay) -> None:
        self.watched.discard(relay)

    def _look(self) -> None:
        self.timer = None
        silent = []
        for relay in self.watched:
            call = relay.call
            if call is None:
                continue
            if call.heard or call.unread:
                call.heard = False
            else:
                silent.append(relay)
        for relay in silent:
            self.watched.discard(relay)
            relay.silent()  # (a retry it starts may watch a new call: that arms the timer)
        if self.watched and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._look)


class _NativeRelay:
    """A client's own request forwarded unchanged; the replica's messages go to the listener
    framed, as they arrive (the call's ``listen`` callbacks). The first one is checked (an
    ``error_message`` fails the request) and must come within the first-byte timeout (the
    backend's ``FirstMessageClock``).

    On a connection already open the call starts at once and runs on callbacks alone; only
    a call that must wait for a connection takes a task."""

    __slots__ = ("listener", "where", "task", "call", "clock", "first", "silence", "sent")

    def __init__(self, backend: TritonGrpcBackend, request: Any, listener: Listener) -> None:
        self.listener: Listener | None = listener
        self.where = f"grpc://{backend.target}"
        self.task: asyncio.Task[None] | None = None
        self.clock = backend.clock
        self.silence = backend.silence
        self.first = True  # no message has reached the listener yet
        raw = request.SerializeToString()
        self.sent = len(raw)  # (a status naming this size as too large is the request's)
        self.call = backend.channel().start_now(STREAM_INFER, [raw], pb2.ModelStreamInferResponse)
        if self.call is None:
            self.task = asyncio.get_running_loop().create_task(self._connect(backend, raw))
        else:
            self._listen(backend)

    async def _connect(self, backend: TritonGrpcBackend, raw: bytes) -> None:
        try:
            call = await backend.channel().start(STREAM_INFER, [raw], pb2.ModelStreamInferResponse)
        except GrpcError as exc:
            self._fail(rpc_error(self.where, exc, self.sent))
            return
        self.task = None
        self.call = call
        if self.listener is None:
            call.cancel()
            return
        self._listen(backend)

    def _listen(self, backend: TritonGrpcBackend) -> None:
        self.clock.start(self)
        self.call.listen(self)  # type: ignore[union-attr]

    def no_first(self) -> None:
        """The first-byte timeout passed (the clock let go of this call)."""
        self.first = False
        self._refuse(BackendTimeout(f"{self.where}: no first response in time"))

    def silent(self) -> None:
        """Nothing came for the read timeout (the watch let go of this call)."""
        timeout = self.silence.timeout
        self._fail(BackendTimeout(f"{self.where}: no response for {timeout:g} s"))
        if self.call is not None:
            self.call.cancel()

    def _refuse(self, exc: BackendError) -> None:
        """The request fails before its first message reached the listener: the call ends."""
        self._fail(exc)
        if self.call is not None:
            self.call.cancel()

    # -- the call's listener -----------------------------------------------------------------
    def message(self, framed: bytes) -> bool:
        listener = self.listener
        if listener is None:
            return True
        if self.first:
            self.first = False
            self.clock.stop(self)
            try:  # in the connection's data_received: nothing may escape
                error = pb2.ModelStreamInferResponse.FromString(framed[5:]).error_message
            except DecodeError:
                self._refuse(BackendProtocolError(f"{self.where}: an unreadable first message"))
                return True
            if error:
                body = error_bytes(error)
                self._refuse(BackendStatusError(f"{self.where}: {error}", status=400, body=body))
                return True
            listener.on_head(200, "application/grpc")
            if self.call is not None:  # the next messages go straight to the listener
                self.call.listener = _Through(listener.on_data, self.end)
                self.silence.watch(self)
        return listener.on_data(framed)

    def end(self, error: GrpcError | None) -> None:
        listener, self.listener = self.listener, None
        if listener is None:
            return
        self.silence.unwatch(self)
        if self.first:  # over before its first message
            self.first = False
            self.clock.stop(self)
            where = self.where
            listener.on_error(
                rpc_error(where, error, self.sent)
                if error is not None
                else BackendProtocolError(f"{where}: the stream ended without a response")
            )
        elif error is None:
            listener.on_end()
        else:
            listener.on_error(rpc_error(self.where, error))

    def _fail(self, exc: BackendError) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_error(exc)

    # -- the holder's controls ---------------------------------------------------------------
    def resume(self) -> None:
        """The listener passed on what it could not take (its ``on_data`` said False): the
        call gives the replica that window back. Until then HTTP/2 flow control holds the
        replica at the stream's window."""
        if self.call is not None:
            self.call.release()

    def cancel(self) -> None:
        self.listener = None
        self.silence.unwatch(self)
        if self.first:
            self.first = False
            self.clock.stop(self)
        if self.task is not None:
            self.task.cancel()
        if self.call is not None:
            self.call.cancel()


class TritonGrpcBackend:
    """One Triton replica reached over gRPC."""

    def __init__(self, settings: BackendSettings) -> None:
        self._s = settings
        self.target, t = parse_target(settings.url)
        self.names, self.template = t.names, t.template
        self.first_byte_timeout = settings.first_byte_timeout
        self.clock = FirstMessageClock(settings.first_byte_timeout)  # of relayed calls
        self.silence = SilenceWatch(settings.read_timeout)  # the same, past their first
        self._channel: GrpcChannel | None = None

    def channel(self) -> GrpcChannel:
        if self._channel is None:
            self._channel = GrpcChannel(self.target, connect_timeout=self._s.connect_timeout)
        return self._channel

    def open(self, req: BackendRequest, listener: Listener) -> TaskCall | _NativeRelay:
        if req.native is not None and self.relays(req.native):
            return _NativeRelay(self, req.native, listener)
        rid = f"er-{next(_ids)}"
        treq, enc = translate(req, self.template, self.names.model, rid)
        msg = kserve.infer_request(pb2, treq, self.names, rid)
        return TaskCall(self.start(msg, treq, enc), listener)

    async def start(self, msg: Any, treq: tw.TritonRequest, enc: tw.OpenAIChunks) -> TritonResponse:
        """Send ``msg`` (``treq`` as a ``ModelInferRequest``) and wait for its first piece."""
        where = f"grpc://{self.target}"
        call, raw = await self._open(msg, where)
        pieces = _GrpcPieces(call, self.names, where, self._s.read_timeout)
        try:
            first = pieces.piece(raw)
        except BackendProtocolError as exc:
            call.cancel()
            raise BackendStatusError(
                str(exc), status=400, body=error_bytes(str(exc), code="upstream_error")
            ) from exc
        return TritonResponse(pieces, enc, first, treq.max_tokens, treq.stream)

    def relays(self, request: Any) -> bool:
        """Whether a client's request can be forwarded as it is: same model and tensor names,
        so the replica's answers are already what the client expects."""
        return request.model_name == self.names.model and not self.names.rename

    async def _open(self, request: Any, where: str) -> tuple[ClientCall, bytes | None]:
        """Send ``request`` on a new ``ModelStreamInfer`` call and wait for the first answer
        (serialized; ``None`` when the stream ended first). Failures and the first-byte
        timeout raise ``BackendError``s, after cancelling the call."""
        try:
            raw = request.SerializeToString()
            call = await self.channel().start(STREAM_INFER, [raw], pb2.ModelStreamInferResponse)
            try:
                async with asyncio.timeout(self._s.first_byte_timeout):
                    return call, await call.read_raw()
            except BaseException:
                call.cancel()
                raise
        except TimeoutError as exc:
            raise BackendTimeout(f"{where}: no first response in time") from exc
        except GrpcError as exc:
            raise rpc_error(where, exc, len(raw)) from exc

    async def probe(self, path: str, timeout_s: float) -> int:
        """200 when the server is live and the model ready, 503 otherwise (``path`` unused)."""
        channel = self.channel()
        try:
            live = await channel.unary(
                _PATH + b"ServerLive",
                pb2.ServerLiveRequest(),
                pb2.ServerLiveResponse,
                deadline=timeout_s,
            )
            ready = await channel.unary(
                _PATH + b"ModelReady",
                pb2.ModelReadyRequest(name=self.names.model),
                pb2.ModelReadyResponse,
                deadline=timeout_s,
            )
        except GrpcError as exc:
            raise rpc_error(f"grpc://{self.target}", exc) from exc
        return 200 if live.live and ready.ready else 503

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def make(settings: BackendSettings) -> TritonGrpcBackend:
    return TritonGrpcBackend(settings)
