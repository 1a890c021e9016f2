"""The floor under any Python proxy: a uvloop TCP relay that forwards bytes and parses nothing.

``gateway_overhead.py --targets ...,relay`` runs it beside nginx and the gateway, pinned to the
same core. Each client connection gets its own upstream connection (round robin over
``--upstream``), and every read is written to the other side as it came: no HTTP parsing, no
routing, no metrics. What this process spends per relayed event is what an asyncio event loop
and the kernel cost a Python process, so the gateway's events per CPU-second divided by this
relay's says how much of the gap to nginx is our code and how much is the runtime under it.

``--strict`` adds the least that issue 12's rule asks of a proxy (``--targets ...,strict``):
httptools reads every request and every response, and each response body is framed again
towards the client (one chunk per read, as the gateway writes). Its body pieces go to a list's
``append``, a C callback, as the gateway's go to ``wire/_http1.c``'s (a Python ``on_body``
costs a frame per relayed chunk). Still no routing, no classifier, no metrics: the gateway
divided by this floor is what our own code costs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
from types import SimpleNamespace

import httptools

_LAST = b"0\r\n\r\n"


class Side(asyncio.Protocol):
    """One side of a relayed connection: what it reads goes to ``peer``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.early: list[bytes] = []  # read before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def _other(self) -> asyncio.Transport | None:
        return self.peer.transport if self.peer is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if (other := self._other()) is not None:
            other.close()

    def pause_writing(self) -> None:  # the other side reads no more until this one drains
        if (other := self._other()) is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        if (other := self._other()) is not None:
            other.resume_reading()


class StrictUpstream(Side):
    """An upstream side that reads the response with httptools and frames its body again."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []  # one list: its append is llhttp's on_body
        self.out: list[bytes] = []
        self.parser = httptools.HttpResponseParser(
            SimpleNamespace(
                on_headers_complete=self.on_headers_complete,
                on_body=self.parts.append,
                on_message_complete=self.on_message_complete,
            )
        )

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()
            return
        out, self.out = self.out, []
        if self.parts:
            body = b"".join(self.parts)
            self.parts.clear()
            out.insert(1 if out and out[0].startswith(b"HTTP/") else 0,
                       b"%x\r\n%b\r\n" % (len(body), body))  # fmt: skip
        other = self._other()
        if out and other is not None:
            other.write(b"".join(out))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.out.append(
            b"HTTP/1.1 %d OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % status
        )

    def on_message_complete(self) -> None:
        if self.parts:
            body = b"".join(self.parts)
            self.parts.clear()
            self.out.append(b"%x\r\n%b\r\n" % (len(body), body))
        self.out.append(_LAST)


class Client(Side):
    """The accepted side: opens its upstream connection, then relays both ways (``strict``:
    each request read by httptools on the way)."""

    def __init__(self, upstreams: itertools.cycle[tuple[str, int]], strict: bool) -> None:
        super().__init__()
        self.upstreams = upstreams
        self.strict = strict
        self.parser = httptools.HttpRequestParser(self) if strict else None

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                if self.transport is not None:
                    self.transport.close()
                return
        super().data_received(data)
        self.connecting: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connecting = asyncio.get_running_loop().create_task(
            self._connect(*next(self.upstreams))
        )

    async def _connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(
                StrictUpstream if self.strict else Side, host, port
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None:  # the client left while we connected
            up.transport.close()  # type: ignore[union-attr]
            return
        up.peer, self.peer = self, up
        for data in self.early:
            up.transport.write(data)  # type: ignore[union-attr]
        self.early.clear()


async def serve(port: int, upstreams: list[tuple[str, int]], strict: bool) -> None:
    loop = asyncio.get_running_loop()
    cycle = itertools.cycle(upstreams)
    server = await loop.create_server(
        lambda: Client(cycle, strict), "127.0.0.1", port, backlog=4096
    )
    gc.collect()
    gc.freeze()  # as the gateway does: start-up objects out of the collector's scans
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", action="append", required=True, help="host:port, repeatable")
    p.add_argument("--strict", action="store_true", help="read both sides with httptools")
    args = p.parse_args()
    upstreams = [(u.rsplit(":", 1)[0], int(u.rsplit(":", 1)[1])) for u in args.upstream]
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, upstreams, args.strict))
    else:
        uvloop.run(serve(args.port, upstreams, args.strict))


if __name__ == "__main__":
    main()
