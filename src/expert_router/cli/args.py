"""Argument types shared by several commands (not a command itself).

Each ``type=`` function checks one value when argparse reads it, so a bad flag is a one-line
usage error (exit status 2) before anything starts; ``parse_users`` and the checks that need
several flags raise ``UsageError`` from a command's ``run``.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable

from expert_router.errors import UsageError


def parse_users(text: str) -> list[int]:
    """``"1,100,200,...,500"`` -> [1, 100, 200, 300, 400, 500]; ``...`` continues the step.

    >>> parse_users("1,2,...,4,10")
    [1, 2, 3, 4, 10]
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    out: list[int] = []
    try:
        for i, part in enumerate(parts):
            if part == "...":
                if len(out) < 2 or i + 1 >= len(parts):
                    raise UsageError(
                        f"--users: '...' needs two values before and one after: {text!r}"
                    )
                step, last = out[-1] - out[-2], int(parts[i + 1])
                if step <= 0:
                    raise UsageError(f"--users: '...' needs an increasing step: {text!r}")
                out.extend(range(out[-1] + step, last, step))
            else:
                out.append(int(part))
    except ValueError as exc:
        raise UsageError(f"--users: expected comma-separated integers, got {text!r}") from exc
    if not out or any(u < 1 for u in out):
        raise UsageError(f"--users: every user count must be >= 1, got {text!r}")
    return list(dict.fromkeys(out))


def users(text: str) -> str:
    """An argparse type: a ``--users`` list that ``parse_users`` accepts (kept as text)."""
    try:
        parse_users(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--users: ")) from None
    return text


def _number(kind: type[int] | type[float], text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def at_least(minimum: float, kind: type[int] | type[float] = int) -> Callable[[str], float]:
    """An argparse type: a number >= ``minimum`` (``int`` unless ``kind`` says otherwise)."""

    def parse(text: str) -> float:
        value = _number(kind, text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)
non_negative_float = at_least(0.0, float)


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(_number(float, text))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    value = int(_number(int, text))
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {text}")
    return value


def listen_port(text: str) -> int:
    """An argparse type: a port to listen on, 1-65535, or 0 for any free port."""
    if text.strip() == "0":
        return 0
    try:
        return port(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"a port is 1-65535 (or 0 for any free port), got {text}"
        ) from None


def local_host(text: str) -> str:
    """An argparse type: an address of this machine to listen on (a name that resolves to
    one, or one of its IP addresses; 0.0.0.0 and :: are every address)."""
    try:
        infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise argparse.ArgumentTypeError(f"unknown host {text!r} ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address[0], 0))
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{text} is not an address of this machine ({exc.strerror})"
        ) from None
    return text


def base_url(text: str) -> str:
    """An argparse type: an absolute URL with a host and a valid port, without trailing /."""
    from expert_router.urls import check_base_url

    try:
        return check_base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def expert(text: str) -> str:
    """An argparse type: ``CLUSTER=URL`` (CLUSTER an id or ``*``) with a valid URL."""
    cluster, sep, url = text.partition("=")
    if not sep or not cluster.strip():
        raise argparse.ArgumentTypeError(
            f"expected CLUSTER=URL (CLUSTER = id or '*'), got {text!r}"
        )
    return f"{cluster.strip()}={base_url(url)}"


def preset(text: str) -> str:
    """An argparse type: a built-in emulator preset or an existing preset YAML file."""
    from pathlib import Path

    from expert_router.emulator.catalog import PRESETS

    if text in PRESETS or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"unknown preset {text!r} (built-in: {', '.join(PRESETS)}; or a YAML file)"
    )


def bind_error(host: str, port: int, exc: OSError) -> str:
    """One line for a failed bind that names the address: busy port, foreign address, ..."""
    shown = f"[{host}]" if ":" in host else host
    why = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        why = f"unknown host ({why})"
    return f"cannot listen on {shown}:{port}: {why}"


def check_listen(host: str, port: int) -> None:
    """Raise ``OSError`` now when ``host:port`` cannot be listened on (busy, not local), so a
    command fails with one line before it starts anything. Port 0 is always free."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows ``(default: X)`` for flags with a real default, once: not for flags
    without one (``None``), switches, or help that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or action.nargs == 0  # switches: --flag, store_const
            or default == argparse.SUPPRESS
            or action.required
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def check_distribution(spec: str, clusters: int = 8) -> None:
    """``UsageError`` when ``--distribution`` is not a mix of ``clusters`` clusters."""
    from expert_router.bench.mix import cluster_weights
    from expert_router.errors import ConfigError

    try:
        cluster_weights(spec, clusters)
    except ConfigError as exc:
        raise UsageError(f"--{exc}") from None


def add_workload_flags(parser: argparse.ArgumentParser) -> None:
    """The paper's workload flags (``bench``, ``simulate``): answer and prompt lengths, the
    jitter on prompt lengths, the cluster mix."""
    add_token_flags(parser)
    parser.add_argument(
        "--distribution",
        default="uniform",
        help="cluster mix: uniform | normal[:MEAN,SD] | weights:w0,w1,...",
    )


def add_token_flags(parser: argparse.ArgumentParser) -> None:
    """Answer and prompt lengths of the paper's workload, and the jitter on prompt lengths."""
    from expert_router.bench.defaults import (
        BASE_TOKENS,
        CONTINUATION_TOKENS,
        JITTER,
        OUTPUT_TOKENS,
    )

    add = parser.add_argument
    add("--output-tokens", type=positive_int, default=OUTPUT_TOKENS, help="tokens per answer")
    add("--base-tokens", type=positive_int, default=BASE_TOKENS, help="base prompt, tokens")
    add("--continuation-tokens", type=non_negative_int, default=CONTINUATION_TOKENS,
        help="continuation prompt, tokens")  # fmt: skip
    add("--jitter", type=non_negative_int, default=JITTER, help="± tokens on prompt lengths")


def preset_spec(text: str) -> str:
    """An argparse type: ``NAME`` (every cluster) or ``CLUSTERS=NAME[|NAME...]`` (those
    clusters, comma-separated ids, may run any of the presets), each a built-in preset or a
    preset YAML file."""
    clusters, sep, names = text.rpartition("=")
    if sep:
        ids = [c.strip() for c in clusters.split(",")]
        if not all(c.isdigit() for c in ids):
            raise argparse.ArgumentTypeError(
                f"expected NAME or CLUSTERS=NAME[|NAME...] (clusters: ids like 0,3), got {text!r}"
            )
    for name in names.split("|"):
        preset(name.strip())
    return text
