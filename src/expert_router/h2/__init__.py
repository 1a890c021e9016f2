"""A lean HTTP/2 transport for gRPC on asyncio protocols: the gateway's Triton ingress and
upstream client, and the emulator's Triton face. ``frames`` (framing and HPACK output),
``headers`` (HPACK input), ``limits`` (``H2Limits``: every bound, with its reason),
``stream`` (one stream's state), ``connection`` (one HTTP/2 connection, read strictly:
settings, flow control, pings, stream states), ``send`` (its sending half), ``grpc`` (message
framing, status, deadlines), ``server`` (servicers in grpc.aio's calling convention) and
``client`` (streaming calls on pooled connections).
"""
