"""Base URLs given by users (expert replicas, bench targets), checked in one place: a bad one is
a one-line error where it is given, not a traceback where it is first used.

>>> check_base_url("http://127.0.0.1:8001/")
'http://127.0.0.1:8001'
>>> check_base_url("http://127.0.0.1:99999")
Traceback (most recent call last):
...
ValueError: 'http://127.0.0.1:99999': the port must be 1-65535
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def check_base_url(url: str) -> str:
    """``url`` without its trailing slash; ``ValueError`` saying what is wrong with it (no
    ``scheme://``, no host, a port outside 1-65535, credentials in it: they would travel in
    the ``Host`` header and in error messages; a replica's key is its ``api_key``).

    >>> check_base_url("http://user:secret@10.0.0.5:8000")
    Traceback (most recent call last):
    ...
    ValueError: a URL with credentials (user:...@): give the key as the replica's api_key
    """
    text = url.strip()
    parts = urlsplit(text)
    if "@" in parts.netloc:  # refused without quoting the URL: it holds a secret
        raise ValueError(
            "a URL with credentials (user:...@): give the key as the replica's api_key"
        )
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"{url!r} is not a URL (expected scheme://host[:port], e.g. http://...)")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{url!r}: the port must be 1-65535")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    return text.rstrip("/")


def host_port(url: str) -> tuple[str, int]:
    """The host and port a checked ``url`` connects to (the scheme's default port when none).

    >>> host_port("https://example.org")
    ('example.org', 443)
    """
    parts = urlsplit(check_base_url(url))
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None:
        raise ValueError(f"{url!r}: give a port (no default port for {parts.scheme}://)")
    return parts.hostname or "", port
