"""A faulty OpenAI-compatible upstream on raw HTTP/1.1, for the hostile-input suite.

Run as ``python fake_upstream.py --ports 0,0``: it listens on every port given (0 = any free
one), prints ``READY {"ports": [...]}`` and serves until killed. A POST's behaviour is chosen
by tokens in its body (the gateway forwards the client's body bytes unchanged):
``fault:NAME`` picks a fault from ``FAULTS`` (default ``none``, a healthy answer), ``rid:ID``
names the request, and ``once`` limits the fault to the first attempt of that id, so a retry
on the other replica gets a healthy answer. ``GET /health`` answers 200 (probes are counted);
``GET /stats`` returns the counters and ``GET /stats?rid=ID`` what happened to one request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from upstream_faults import FAULTS, Exchange, Record, healthy

_TOKEN = re.compile(rb"(fault|rid):([A-Za-z0-9_-]+)")


@dataclass
class Stats:
    probes: dict[int, int] = field(default_factory=dict)
    requests: dict[int, int] = field(default_factory=dict)
    rids: dict[str, Record] = field(default_factory=dict)
    released: dict[str, asyncio.Event] = field(default_factory=dict)  # see ``Exchange.released``


class FakeUpstream:
    """Every port's server and the counters they share."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.servers: list[asyncio.Server] = []

    async def listen(self, port: int) -> int:
        server = await asyncio.start_server(
            lambda r, w: self.serve(r, w), "127.0.0.1", port, backlog=1024
        )
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = int(writer.get_extra_info("sockname")[1])
        last: list[Record] = []  # the request last answered on this connection
        try:
            while await self.one(reader, writer, port, last):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            if last:  # the peer closed the kept-alive connection
                last[0].peer_closed += 1
        finally:
            writer.close()

    async def one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        last: list[Record],
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        length = 0
        for line in lines[1:]:
            field_name, _, value = line.partition(b":")
            if field_name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        if method == b"GET":
            return await self.get(writer, port, target.decode("latin-1"))
        self.stats.requests[port] = self.stats.requests.get(port, 0) + 1
        tokens = {k.decode(): v.decode() for k, v in _TOKEN.findall(body)}
        rid = tokens.get("rid", "")
        record = self.stats.rids.setdefault(rid, Record())
        name = tokens.get("fault", "none")
        if b" once" in body and record.attempts:
            name = "none"
        record.attempts.append({"port": port, "fault": name})
        last[:] = [record]
        try:
            stream = json.loads(body).get("stream") is True
        except ValueError:
            stream = False
        released = self.stats.released.setdefault(rid, asyncio.Event())
        ex = Exchange(reader, writer, port, target.decode("latin-1"), stream, record, released)
        return await FAULTS.get(name, healthy)(ex)

    async def get(self, writer: asyncio.StreamWriter, port: int, target: str) -> bool:
        path, _, query = target.partition("?")
        if path == "/health":
            self.stats.probes[port] = self.stats.probes.get(port, 0) + 1
            data: Any = {"status": "ok"}
        elif path == "/release" and query.startswith("rid="):
            self.stats.released.setdefault(query[4:], asyncio.Event()).set()
            data = {"released": query[4:]}
        elif path == "/stats" and query.startswith("rid="):
            data = self.stats.rids.get(query[4:], Record()).__dict__
        elif path == "/stats":
            data = {"probes": self.stats.probes, "requests": self.stats.requests}
        else:
            data = {"error": {"message": "not found", "type": "invalid_request_error"}}
        body = json.dumps(data).encode()
        status = b"200 OK" if "error" not in data else b"404 Not Found"
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )
        await writer.drain()
        return True


async def main(ports: list[int]) -> None:
    fake = FakeUpstream()
    bound = [await fake.listen(p) for p in ports]
    print("READY " + json.dumps({"ports": bound}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default="0,0", help="comma-separated ports (0 = any free)")
    args = parser.parse_args()
    try:
        asyncio.run(main([int(p) for p in args.ports.split(",")]))
    except KeyboardInterrupt:
        sys.exit(0)
