"""A lean HTTP/2 transport for gRPC on asyncio protocols: the gateway's Triton ingress and
upstream client, and the emulator's Triton face. ``frames`` (framing and HPACK output),
``connection`` (one HTTP/2 connection: settings, flow control, pings), ``grpc`` (message
framing, status, deadlines), ``server`` (servicers in grpc.aio's calling convention) and
``client`` (streaming calls on pooled connections).
"""
