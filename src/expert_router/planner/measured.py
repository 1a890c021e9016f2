"""A measured topic mix: requests per cluster, read from what a running gateway reports.

Two sources (``--mix-from``): its Prometheus text (``GET /metrics``, or a saved copy), where
``expert_router_requests_total`` counts requests by the cluster that served them and the
spill-over and fail-over counters say which of them left their nearest cluster (they are
moved back, so the counts are the classifier's); or its JSON access log (``access_log:
true``), one line per request with its cluster, counted under its ``nearest`` cluster (the
classifier's; lines of older gateways without it count under the cluster that served them).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from expert_router.errors import ConfigError

REQUESTS = "expert_router_requests_total"
MOVED = ("expert_router_spillovers_total", "expert_router_failovers_total")
FETCH_TIMEOUT_S = 10.0


@dataclass
class MeasuredMix:
    """Requests per cluster id, where they were read, and what to know about them."""

    counts: Counter[int] = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def weights(self, clusters: int | None = None) -> list[float]:
        """Each cluster's share (``clusters`` of them; by default up to the largest id seen)."""
        total = sum(self.counts.values())
        if total <= 0:
            raise ConfigError(f"--mix-from {', '.join(self.sources)}: no request has a cluster")
        k = clusters if clusters is not None else max(self.counts) + 1
        beyond = sorted(c for c in self.counts if c >= k)
        if beyond:
            raise ConfigError(
                f"--mix-from: requests were routed to cluster {beyond[0]}, beyond the "
                f"{k} clusters planned for (--clusters)"
            )
        return [self.counts[c] / total for c in range(k)]

    def describe(self) -> str:
        total = sum(self.counts.values())
        return f"measured: {total:,} requests from {', '.join(self.sources)}"


def _cluster(label: object) -> int | None:
    text = str(label).strip() if label is not None else ""
    return int(text) if text.isdigit() else None


def parse_metrics(text: str) -> tuple[Counter[int], list[str]]:
    """Requests per nearest cluster from a gateway's Prometheus text, and notes."""
    served: Counter[int] = Counter()
    moved: Counter[int] = Counter()
    n_moved = 0
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == REQUESTS:
                    c = _cluster(s.labels.get("cluster"))
                    if c is not None:
                        served[c] += int(s.value)
                elif s.name in MOVED:
                    a = _cluster(s.labels.get("from_cluster"))
                    b = _cluster(s.labels.get("to_cluster"))
                    if a is not None and b is not None and a != b:
                        moved[a] += int(s.value)
                        moved[b] -= int(s.value)
                        n_moved += int(s.value)
    except ValueError as exc:
        raise ConfigError(f"not Prometheus text: {exc}") from exc
    if not served:
        raise ConfigError(f"no {REQUESTS} sample with a cluster label")
    counts = Counter({c: served[c] + moved[c] for c in set(served) | set(moved)})
    notes = [f"{n_moved:,} spilled or failed-over requests counted under their nearest cluster"]
    return Counter({c: n for c, n in counts.items() if n > 0}), notes if n_moved else []


def parse_access_log(lines: Iterable[str]) -> tuple[Counter[int], list[str]]:
    """Requests per cluster from a gateway's JSON access lines (other lines are skipped)."""
    counts: Counter[int] = Counter()
    spilled = skipped = 0
    for line in lines:
        start = line.find("{")
        try:
            entry = json.loads(line[start:]) if start >= 0 else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "cluster" not in entry:
            skipped += bool(line.strip())
            continue
        c = _cluster(entry.get("nearest") or entry.get("cluster"))
        if c is None:
            continue  # probes, and requests refused before they were classified
        counts[c] += 1
        spilled += entry.get("reason") == "spillover" and "nearest" not in entry
    if not counts:
        raise ConfigError("no access line with a cluster (is access_log on?)")
    notes = []
    if spilled:
        notes.append(f"{spilled:,} spilled-over requests are counted under the cluster that "
                     "served them (these access lines do not name the nearest)")  # fmt: skip
    if skipped:
        notes.append(f"{skipped:,} lines that are not access lines were skipped")
    return counts, notes


def _read(source: str) -> str:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_S) as resp:
                return str(resp.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise ConfigError(f"--mix-from {source}: cannot fetch: {why}") from exc
    try:
        return Path(source).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"--mix-from {source}: cannot read: {exc.strerror}") from exc


def read_mix(sources: Sequence[str]) -> MeasuredMix:
    """The summed counts of every source (a URL or file; metrics text or access log)."""
    mix = MeasuredMix()
    for source in sources:
        text = _read(source)
        is_metrics = source.startswith(("http://", "https://")) or REQUESTS in text
        try:
            counts, notes = parse_metrics(text) if is_metrics else parse_access_log(
                text.splitlines())  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"--mix-from {source}: {exc}") from exc
        mix.counts.update(counts)
        mix.sources.append(source)
        mix.notes += notes
    return mix
