"""Argument types shared by several commands (not a command itself)."""

from __future__ import annotations

from expert_router.errors import ConfigError


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
                    raise ConfigError(
                        f"--users: '...' needs two values before and one after: {text!r}"
                    )
                step, last = out[-1] - out[-2], int(parts[i + 1])
                if step <= 0:
                    raise ConfigError(f"--users: '...' needs an increasing step: {text!r}")
                out.extend(range(out[-1] + step, last, step))
            else:
                out.append(int(part))
    except ValueError as exc:
        raise ConfigError(f"--users: expected comma-separated integers, got {text!r}") from exc
    if not out or any(u < 1 for u in out):
        raise ConfigError(f"--users: every user count must be >= 1, got {text!r}")
    return list(dict.fromkeys(out))
