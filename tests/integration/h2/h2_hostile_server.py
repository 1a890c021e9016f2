"""The lean ``GrpcServer`` with the Echo servicer and default ``H2Limits``, on uvloop as the
gateway runs it, in a process of its own so that the hostile-input tests can measure its memory:
prints its port, serves until its standard input closes.

    python tests/integration/h2/h2_hostile_server.py
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from h2_service import SERVICE, Echo, pb2

from expert_router.h2.server import GrpcServer


async def main() -> None:
    server = GrpcServer(Echo(), pb2, SERVICE)
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


if __name__ == "__main__":
    uvloop.run(main())
