"""What a report says in words, computed from the runs themselves: what was run (each
configuration, users, repetitions, workload, cluster mix, modelled or measured) and which
configuration wins where, one sentence per metric. Nothing here names a configuration: the
words come from each sweep's own metadata (``simulation`` or ``bench`` in its summaries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from expert_router.bench.columns import METRICS, Series, Unit, fmt, short_name
from expert_router.bench.mix import describe_mix
from expert_router.bench.summary import get_path


def _meta(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run metadata of a sweep: the simulation's or the live bench's (first summary)."""
    first = summaries[0] if summaries else {}
    return dict(first.get("simulation") or first.get("bench") or {})


def is_modelled(summaries: Sequence[dict[str, Any]]) -> bool:
    """True for a sweep simulated in virtual time, False for one measured live."""
    return bool(summaries) and "simulation" in summaries[0]


def describe_config(summaries: Sequence[dict[str, Any]]) -> str:
    """One configuration in words, from its metadata."""
    meta = _meta(summaries)
    if is_modelled(summaries):
        p, n = meta.get("preset") or {}, int(meta.get("experts") or 1)
        what = p.get("description") or p.get("model_name") or p.get("name", "?")
        batch = f", up to {p['max_batch']} sequences per batch" if p.get("max_batch") else ""
        if n == 1:
            return f"1 engine ({what}){batch}"
        return f"{n} engines, one per topic cluster (each {what}){batch} each"
    if meta.get("description"):
        return str(meta["description"])
    return f"the server at {meta.get('target', '?')} ({meta.get('protocol', 'openai')} API)"


def how(summaries: Sequence[dict[str, Any]]) -> str:
    """``modelled (virtual time)`` or ``measured live``."""
    return "modelled (virtual time)" if is_modelled(summaries) else "measured live"


def _users(users: Sequence[int]) -> str:
    if len(users) > 4 and len({b - a for a, b in zip(users[1:], users[2:], strict=False)}) == 1:
        return f"{users[0]}, {users[1]}, {users[2]}, …, {users[-1]}"
    return ", ".join(map(str, users))


def all_users(series: Series) -> list[int]:
    return sorted({int(s["users"]) for summaries in series.values() for s in summaries})


def describe_run(series: Series) -> list[str]:
    """Paragraphs saying what was run: users, repetitions, workload, mix, how it was timed."""
    if not series:
        return []
    first = next(iter(series.values()))
    meta = _meta(first)
    work = meta.get("workload") or {}
    reps = sorted({int(s.get("repetitions", 1)) for ss in series.values() for s in ss})
    who = "Every configuration" if len(series) > 1 else "The configuration"
    out = [f"{who} served N concurrent users, for N = {_users(all_users(series))}."]
    if reps == [1]:
        out.append(
            "Each user count ran once (one repetition): every number is a single run, so no "
            "spread or interval is shown."
        )
    else:
        n = "–".join(map(str, (reps[0], reps[-1]))) if len(reps) > 1 else str(reps[0])
        out.append(
            f"Each user count ran {n} times (repetitions): tables show the mean ± the sample "
            "standard deviation over repetitions (left out where it rounds to zero); the "
            "figures' error bars are the 95 % interval of the mean (Student t)."
        )
    if work:
        jitter = f" ± {work['jitter']}" if work.get("jitter") else ""
        text = f"Every user sends a base prompt of {work.get('base_tokens')}{jitter} tokens"
        if int(work.get("turns", 2)) > 1:
            text += (
                f", then a continuation of {work.get('continuation_tokens')}{jitter} tokens "
                "that carries the first exchange (the paper's two-turn conversation)"
            )
        out.append(f"{text}; every answer is exactly {work.get('output_tokens')} tokens long.")
        spec, clusters = work.get("distribution"), int(meta.get("clusters") or 0)
        clusters = clusters or int(work.get("clusters") or 0)
        if spec and clusters:
            mix = describe_mix(spec, clusters)
            out.append(f"Users are spread over the topic clusters by the mix {mix}.")
    kinds = {is_modelled(ss) for ss in series.values()}
    if True in kinds:
        out.append(
            "Modelled runs are not measured on GPUs: the emulator's performance model (fitted "
            "to measured GPUs, docs/emulator.md) schedules every request in virtual time, "
            "without a gateway in the path."
        )
    if False in kinds:
        out.append(
            "Measured runs are real: streamed requests over HTTP, timed by the client as they "
            "arrive, in real time."
        )
    return out


def _at(users: Sequence[int], every: Sequence[int]) -> str:
    if list(users) == list(every):
        return "at every user count"
    if len(users) == 1:
        return f"at {users[0]} user{'' if users[0] == 1 else 's'}"
    return f"from {users[0]} to {users[-1]} users"


def headline(series: Series, key: str, unit: Unit) -> str | None:
    """One sentence on ``key``: which configuration is best at which user counts (with the
    values at the largest user count), or, for one configuration, how the metric moves."""
    m = METRICS[key]
    table: dict[int, dict[str, float]] = {}
    for name, summaries in series.items():
        for s in summaries:
            v = get_path(s, key)
            if isinstance(v, int | float):
                table.setdefault(int(s["users"]), {})[name] = float(v)
    if not table:
        return None
    every = sorted(table)
    last = every[-1]
    if len(series) == 1:
        first_v, last_v = table[every[0]], table[last]
        (name,) = series
        if name not in first_v or name not in last_v or len(every) == 1:
            return f"{m.label}: {fmt(last_v.get(name), unit, with_unit=True)} at {last} users."
        a, b = first_v[name], last_v[name]
        verb = "stays near" if abs(b - a) <= 0.05 * max(abs(a), 1e-12) else (
            "rises" if b > a else "falls")  # fmt: skip
        return (
            f"{m.label} {verb} from {fmt(a, unit, with_unit=True)} at {every[0]} "
            f"user{'' if every[0] == 1 else 's'} to {fmt(b, unit, with_unit=True)} at {last} users."
        )
    sign = 1.0 if m.better == "lower" else -1.0
    winners = [(u, min(table[u].items(), key=lambda kv: sign * kv[1])[0]) for u in every]
    segments: list[tuple[str, list[int]]] = []
    for u, w in winners:
        if segments and segments[-1][0] == w:
            segments[-1][1].append(u)
        else:
            segments.append((w, [u]))
    best = "lowest" if m.better == "lower" else "highest"
    parts = [f"{short_name(w)} {_at(us, every)}" for w, us in segments]
    ranked = sorted(table[last], key=lambda n: table[last][n], reverse=m.better != "lower")
    values = ", ".join(f"{short_name(n)} {fmt(table[last][n], unit)}" for n in ranked)
    return (
        f"{m.label} ({m.better} is better): {best} with {', then '.join(parts)} "
        f"(at {last} users, in {unit.name}: {values})."
    )


def headlines(series: Series, keys: Sequence[str], units: Mapping[str, Unit]) -> list[str]:
    """The headline sentences of ``keys`` that have data."""
    out = [headline(series, k, units[k]) for k in keys]
    return [s for s in out if s]
