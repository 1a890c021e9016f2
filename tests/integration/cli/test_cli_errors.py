"""Every command, given a bad argument, answers with exactly one line on stderr and no
traceback: exit status 2 for a usage error, 1 for a failure while running. Each invocation is
a real process; none starts a server (they fail at parsing or binding), and they run a few at a
time, so the whole table takes seconds."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.integration

E = "0=http://127.0.0.1:9"  # a valid --expert


class Case(NamedTuple):
    args: tuple[str, ...]
    status: int
    says: str = ""  # a piece of the error line, where the content matters


# {OUT} a fresh folder, {MISSING} no such path, {EMPTY} an empty corpus, {NOFIELD} records
# without 'text', {TEXTS} texts without labels, {FILE} a regular file, {BADYAML} not YAML,
# {BUSY} a port in use, {CLOSED} a port nobody listens on.
CASES: dict[str, Case] = {
    "unknown-command": Case(("nosuch",), 2, "invalid choice"),
    "train-no-corpus": Case(("train", "--out", "{OUT}"), 2, "CORPUS"),
    "train-clusters-0": Case(("train", "{EMPTY}", "--out", "{OUT}", "-k", "0"), 2, "--clusters"),
    "train-dims-abc": Case(("train", "{EMPTY}", "--out", "{OUT}", "--dims", "abc"), 2, "--dims"),
    "train-missing-corpus": Case(("train", "{MISSING}", "--out", "{OUT}"), 1, "no such file"),
    "train-empty-corpus": Case(("train", "{EMPTY}", "--out", "{OUT}"), 1, "read 0 documents"),
    "train-no-text-field": Case(("train", "{NOFIELD}", "--out", "{OUT}"), 1, "--text-field"),
    "classify-text-and-file": Case(("classify", "hi", "--file", "{MISSING}"), 2, "not both"),
    "classify-missing-model": Case(("classify", "--model", "{MISSING}", "hi"), 1, "manifest"),
    "classify-missing-file": Case(("classify", "--file", "{MISSING}"), 1, "--file"),
    "inspect-terms-0": Case(("inspect", "--terms", "0"), 2, "--terms"),
    "inspect-missing-model": Case(("inspect", "--model", "{MISSING}"), 1, "manifest"),
    "evaluate-no-data": Case(("evaluate",), 2, "DATA"),
    "evaluate-missing-data": Case(("evaluate", "{MISSING}"), 1, "no such file"),
    "evaluate-no-labels": Case(("evaluate", "{TEXTS}"), 1, "no labelled documents"),
    "serve-nothing": Case(("serve",), 2, "--expert"),
    "serve-port-70000": Case(("serve", "--port", "70000", "--expert", E), 2, "1-65535"),
    "serve-port-negative": Case(("serve", "--port", "-5", "--expert", E), 2, "1-65535"),
    "serve-expert-port": Case(("serve", "--expert", "0=http://127.0.0.1:99999"), 2, "1-65535"),
    "serve-expert-not-url": Case(("serve", "--expert", "0=localhost:8001"), 2, "not a URL"),
    "serve-expert-no-cluster": Case(("serve", "--expert", "http//a"), 2, "CLUSTER=URL"),
    "serve-expert-scheme": Case(("serve", "--expert", "0=ftp://a:1"), 2, "unknown protocol"),
    "serve-host-foreign": Case(("serve", "--host", "203.0.113.7", "--expert", E), 2,
                               "203.0.113.7 is not an address of this machine"),
    "serve-workers-0": Case(("serve", "--workers", "0", "--expert", E), 2, "--workers"),
    "serve-port-busy": Case(("serve", "--port", "{BUSY}", "--expert", E), 1,
                            "cannot listen on 127.0.0.1:{BUSY}"),
    "serve-grpc-port-busy": Case(("serve", "--port", "0", "--grpc-port", "{BUSY}", "--expert", E),
                                 1, "cannot listen on 127.0.0.1:{BUSY}"),
    "serve-missing-config": Case(("serve", "--config", "{MISSING}"), 1, "cannot read config"),
    "serve-bad-config": Case(("serve", "--config", "{BADYAML}"), 1, "invalid YAML"),
    "nginx-no-upstream": Case(("nginx-config",), 2, "--upstream"),
    "nginx-bad-upstream": Case(("nginx-config", "--upstream", "nohostport"), 2, "HOST:PORT"),
    "nginx-upstream-port": Case(("nginx-config", "--upstream", "127.0.0.1:70000"), 2, "65535"),
    "nginx-listen-port": Case(("nginx-config", "--upstream", "a:1", "--listen", "99999"), 2),
    "nginx-keepalive-0": Case(("nginx-config", "--upstream", "a:1", "--keepalive", "0"), 2),
    "nginx-out-unwritable": Case(("nginx-config", "--upstream", "a:1", "--out", "{FILE}/n.conf"),
                                 1, "file: File exists"),
    "emulate-port-70001": Case(("emulate", "--port", "70001"), 2, "1-65535"),
    "emulate-port-negative": Case(("emulate", "--port", "-1"), 2, "1-65535"),
    "emulate-fleet-past-65535": Case(("emulate", "--port", "65535", "--fleet", "2"), 2, "65536"),
    "emulate-host-foreign": Case(("emulate", "--host", "203.0.113.7"), 2, "203.0.113.7"),
    "emulate-unknown-preset": Case(("emulate", "--preset", "nosuch"), 2, "unknown preset"),
    "emulate-fleet-0": Case(("emulate", "--fleet", "0"), 2, "--fleet"),
    "emulate-drain-negative": Case(("emulate", "--drain-timeout", "-1"), 2, "--drain-timeout"),
    "emulate-paced-no-tpot": Case(("emulate", "--pacing", "per-request"), 2, "--tpot-ms"),
    "emulate-port-busy": Case(("emulate", "--port", "{BUSY}"), 1,
                              "cannot listen on 127.0.0.1:{BUSY}"),
    "emulate-grpc-port-busy": Case(("emulate", "--port", "0", "--grpc-port", "{BUSY}"), 1,
                                   "cannot listen on 127.0.0.1:{BUSY}"),
    "emulate-missing-fleet-config": Case(("emulate", "--fleet-config", "{MISSING}"), 1),
    "simulate-no-preset": Case(("simulate", "--out", "{OUT}"), 2, "--preset"),
    "simulate-users-abc": Case(("simulate", "--preset", "D", "--users", "abc", "--out", "{OUT}"),
                               2, "--users"),
    "simulate-repeat-0": Case(("simulate", "--preset", "D", "--repeat", "0", "--out", "{OUT}"),
                              2, "--repeat"),
    "simulate-mix": Case(("simulate", "--preset", "D", "--distribution", "zipf", "--out", "{OUT}"),
                         2, "--distribution"),
    "simulate-unknown-preset": Case(("simulate", "--preset", "Z", "--out", "{OUT}"), 2, "preset"),
    "bench-no-target": Case(("bench", "--out", "{OUT}"), 2, "--target"),
    "bench-target-not-url": Case(("bench", "--target", "notaurl", "--out", "{OUT}"), 2,
                                 "not a URL"),
    "bench-target-port": Case(("bench", "--target", "http://127.0.0.1:99999", "--out", "{OUT}"),
                              2, "1-65535"),
    "bench-target-down": Case(("bench", "--target", "http://127.0.0.1:{CLOSED}", "--out", "{OUT}"),
                              1, "cannot reach http://127.0.0.1:{CLOSED}"),
    "bench-users-0": Case(("bench", "--target", "http://a:1", "--users", "0", "--out", "{OUT}"),
                          2, "--users"),
    "bench-workers-x": Case(("bench", "--target", "http://a:1", "--workers", "x", "--out", "{OUT}"),
                            2, "--workers"),
    "bench-protocol": Case(("bench", "--target", "http://a:1", "--protocol", "smtp", "--out",
                            "{OUT}"), 2, "--protocol"),
    "report-no-runs": Case(("report", "--out", "{OUT}"), 2, "NAME=DIR"),
    "report-name-twice": Case(("report", "a=x", "a=y", "--out", "{OUT}"), 2, "twice"),
    "report-missing-sweep": Case(("report", "a={MISSING}", "--out", "{OUT}"), 1, "summary.json"),
    "experiment-no-study": Case(("experiment",), 2, "STUDY"),
    "experiment-config": Case(("experiment", "paper", "--configs", "Z", "--out", "{OUT}"), 2,
                              "--configs"),
    "experiment-repeat-0": Case(("experiment", "paper", "--repeat", "0", "--out", "{OUT}"), 2),
    "experiment-ttft-alone": Case(("experiment", "paper", "--ttft-ms", "5", "--out", "{OUT}"), 2,
                                  "--tpot-ms"),
    "demo-output-tokens-0": Case(("demo", "--output-tokens", "0", "--out", "{OUT}"), 2),
    "demo-live-users": Case(("demo", "--live-users", "abc", "--out", "{OUT}"), 2, "--live-users"),
    "demo-unknown-preset": Case(("demo", "--preset", "nosuch", "--out", "{OUT}"), 2, "preset"),
    "demo-out-unwritable": Case(("demo", "--out", "{FILE}/demo"), 1, "Not a directory"),
}  # fmt: skip


class Result(NamedTuple):
    status: int
    stderr: str
    says: str


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    """Run every case, four at a time; the busy port stays held until all have run."""
    root = tmp_path_factory.mktemp("cli")
    (root / "empty.jsonl").write_text("")
    (root / "nofield.jsonl").write_text('{"title": "a"}\n{"title": "b"}\n')
    (root / "texts.jsonl").write_text('{"text": "one prompt"}\n{"text": "another"}\n')
    (root / "file").write_text("a regular file\n")
    (root / "bad.yaml").write_text("experts: [unclosed\n")
    with socket.socket() as busy, socket.socket() as closed:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        values = {
            "OUT": str(root / "out"),
            "MISSING": str(root / "missing"),
            "EMPTY": str(root / "empty.jsonl"),
            "NOFIELD": str(root / "nofield.jsonl"),
            "TEXTS": str(root / "texts.jsonl"),
            "FILE": str(root / "file"),
            "BADYAML": str(root / "bad.yaml"),
            "BUSY": str(busy.getsockname()[1]),
            "CLOSED": str(closed.getsockname()[1]),
        }

        def run(case: Case) -> Result:
            args = [a.format(**values) for a in case.args]
            proc = subprocess.run(
                [sys.executable, "-m", "expert_router.cli.main", *args],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                cwd=root,
            )
            return Result(proc.returncode, proc.stderr, case.says.format(**values))

        with ThreadPoolExecutor(max_workers=4) as pool:
            yield dict(zip(CASES, pool.map(run, CASES.values()), strict=True))


@pytest.mark.parametrize("name", CASES)
def test_bad_argument_is_one_line(name: str, results: dict[str, Result]) -> None:
    result = results[name]
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("expert-router"), lines[0]
    assert ": error: " in lines[0], lines[0]
    assert result.status == CASES[name].status, lines[0]
    assert result.says in lines[0]
