"""Every limit of the HTTP/2 transport, each with its reason: one frozen ``H2Limits`` that
``GrpcServer`` and ``GrpcChannel`` take (the gateway config overrides the stream count and the
message size). docs/operations.md, "HTTP/2 limits", lists them with the answer to a peer that
passes each one.
"""

from __future__ import annotations

from dataclasses import dataclass

from expert_router.h2.frames import DEFAULT_FRAME, DEFAULT_WINDOW, MAX_FRAME, MAX_WINDOW


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one HTTP/2 connection lets its peer hold or send."""

    max_frame_size: int = DEFAULT_FRAME
    """SETTINGS_MAX_FRAME_SIZE we advertise. A longer frame is a FRAME_SIZE_ERROR, seen from
    its 9-byte head, before its payload is buffered."""

    max_header_list_size: int = 1 << 16
    """SETTINGS_MAX_HEADER_LIST_SIZE (hpack's and h2's default, 64 KiB): the decoded size of a
    header list, and the encoded bytes one header block may reach while HEADERS and
    CONTINUATION frames assemble it (CVE-2024-27316). Beyond: GOAWAY ENHANCE_YOUR_CALM, as
    nginx and h2 answer an oversized header block; nothing past the cap is kept."""

    max_header_frames: int = 64
    """Frames of one header block, HEADERS included (h2's CONTINUATION_BACKLOG): empty
    CONTINUATION frames cost CPU without adding bytes. Beyond: GOAWAY ENHANCE_YOUR_CALM."""

    max_concurrent_streams: int = 100
    """SETTINGS_MAX_CONCURRENT_STREAMS a server advertises (grpc's and h2's 100; nginx 128).
    A stream beyond it is refused with RST_STREAM REFUSED_STREAM before its servicer runs."""

    stream_window: int = 1 << 22
    """SETTINGS_INITIAL_WINDOW_SIZE: bytes of one stream received and not yet read by the
    application. Credited back (WINDOW_UPDATE) as the reader takes messages; a peer that
    sends past it gets FLOW_CONTROL_ERROR."""

    connection_window: int = 1 << 24
    """The connection's receive window, credited as the stream windows are: the most unread
    message bytes one connection can park, whatever its stream count."""

    max_message: int = 4 << 20
    """The largest gRPC message received, compressed or inflated (grpc's
    max_receive_message_length, 4 MiB). A longer one ends its call with RESOURCE_EXHAUSTED
    as soon as its 5-byte prefix arrives; none of it is buffered."""

    max_assembling: int = 1 << 24
    """Bytes of messages still arriving (prefix seen, end not yet) on one connection, all
    streams together. A message is credited as it arrives so that one larger than the windows
    can complete; this caps what a peer can park that way. The call that passes it ends with
    RESOURCE_EXHAUSTED."""

    reset_burst: int = 200
    """Streams the peer may open and cancel in a burst before the rate applies (rapid reset,
    CVE-2023-44487): twice the stream limit, as nginx allows per read."""

    reset_rate: float = 100.0
    """Cancelled streams per second allowed after the burst; faster, the connection ends with
    GOAWAY ENHANCE_YOUR_CALM. Clients cancel a few calls a second, attacks send tens of
    thousands."""

    max_unsent_control: int = 1_000
    """Frames answered to the peer (PING and SETTINGS acknowledgements, RST_STREAM) while its
    socket takes nothing more: a peer that floods PINGs and never reads would make us buffer
    without end. Beyond: GOAWAY ENHANCE_YOUR_CALM and the connection is dropped (nginx's
    and h2o's flood checks do the same)."""

    close_linger: float = 1.0
    """Seconds a connection ended with GOAWAY still reads (and drops) what the peer sends
    before it closes: closing with unread input makes the kernel reset the connection, and
    the peer may never read the GOAWAY (nginx's lingering close, shorter)."""

    preface_timeout: float = 10.0
    """Seconds a server gives a new connection to send the client's connection preface; a
    silent one is then closed (the gateway's ``server.head_timeout``; nginx's
    ``client_header_timeout``). A client end ignores it."""

    idle_timeout: float | None = None
    """Seconds a server keeps a connection with no stream open (from its last stream's end,
    or its preface); then GOAWAY NO_ERROR and close, and the client reconnects for its next
    call. None: kept while the peer keeps it, as grpc's ``max_connection_idle`` default (the
    gateway sets ``server.idle_timeout``; nginx's ``keepalive_timeout``). PINGs do not count
    as use. A client end ignores it."""

    closed_streams_kept: int = 1_024
    """How many closed stream ids are remembered with how they closed (to tell frames that
    were in flight, which are ignored, from frames on streams the peer knows are over, which
    are errors). Older ones are known only as closed: DATA on them gets RST_STREAM
    STREAM_CLOSED, HEADERS is a new stream id not above the last (PROTOCOL_ERROR)."""

    def __post_init__(self) -> None:
        if not DEFAULT_FRAME <= self.max_frame_size <= MAX_FRAME:
            raise ValueError(f"max_frame_size must be {DEFAULT_FRAME}..{MAX_FRAME}")
        # Below the default window, a peer that has not read our SETTINGS yet would overrun
        # it through no fault of its own.
        for name in ("stream_window", "connection_window"):
            if not DEFAULT_WINDOW <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} must be {DEFAULT_WINDOW}..{MAX_WINDOW}")
        for name in ("max_header_list_size", "max_header_frames", "max_concurrent_streams",
                     "max_message", "max_assembling", "reset_burst", "max_unsent_control",
                     "closed_streams_kept"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.close_linger < 0:
            raise ValueError("close_linger must not be negative")
        if self.preface_timeout <= 0 or self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("preface_timeout and idle_timeout must be positive")
        if self.reset_rate <= 0:
            raise ValueError("reset_rate must be positive")


DEFAULT_LIMITS = H2Limits()
