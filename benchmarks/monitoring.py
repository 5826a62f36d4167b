"""Monitoring benchmark: serving throughput with the prediction log on versus off, in one run.

Two ``aideploy serve`` child processes on the same repository (the serving benchmark's
784-64-64-10 MLP, built with ``onnx.helper``, no TensorFlow): one with ``--log-db``, one
with ``--no-log``. Rounds of batch-1 KServe V2 JSON requests (5,000 a round at concurrency
32 by default, after 1,000 to warm each up) go to each in turn, the order alternating from
round to round, so both see the same machine state. Both run one ONNX Runtime thread. The
load comes from ``wrk`` when installed (one thread, stopped after the round's answers;
``benchmarks/serving.py``'s Lua script), else from that file's Python client processes.

Checks the issue's targets and exits 1 if one is missed:

- with logging on, rows committed (``aideploy_prediction_log_rows_total``) plus rows dropped
  (``aideploy_prediction_log_dropped_total``) equal the requests the server answered
  (``aideploy_requests_total``, success), and the log file holds exactly the committed rows;
- the median throughput with logging on is at least 85% of the median with it off.

Command (see benchmarks/README.md): ``flock -x /tmp/aideploy-cpu.lock python benchmarks/monitoring.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import serving  # noqa: E402  (the serving benchmark's model, requests and load generator)

from aideploy.bench import cpu_model  # noqa: E402

TARGET_RATIO = 0.85


class Served(serving.ChildServer):
    """``aideploy serve`` in a child process, stopped by pid."""

    def __init__(self, repo: Path, log_dir: Path, *options: str) -> None:
        port = serving.free_port()
        command = [sys.executable, "-m", "aideploy.cli", "serve", str(repo), "--port", str(port), *options]
        super().__init__(command, port, log_dir / f"serve-{port}.log", "/v2/health/ready", "aideploy")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (those with these label values)."""
        total = 0.0
        for label_text, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", self.get("/metrics"), re.MULTILINE):
            if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
                total += float(value)
        return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Monitoring benchmark (see benchmarks/README.md).")
    parser.add_argument("--requests", type=int, default=5000, help="requests a round (default: 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (default: 32)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per setting (default: 20)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load generator even with wrk")
    parser.add_argument("--client-processes", type=int, default=2, help="Python load generator processes")
    args = parser.parse_args(argv)
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = "wrk -t1 (separate process)" if use_wrk else f"Python client, {args.client_processes} processes"

    with tempfile.TemporaryDirectory(prefix="aideploy-bench-monitor-") as folder:
        work = Path(folder)
        _, repo = serving.build_model(work)
        request = serving.requests_for(serving.test_images(1))["v2-json"]

        def load(port: int, count: int) -> dict[str, float]:
            if use_wrk:
                return serving.load_wrk(port, request, args.concurrency, 600.0, work, count=count)
            return serving.load_python(port, request, args.concurrency, 600.0, count=count,
                                       processes=args.client_processes)

        db = work / "predictions.db"
        # One ONNX Runtime thread, as in the serving benchmark: its default pool on this
        # machine's cores spins between calls and takes CPU from everything else.
        servers = {"off": Served(repo, work, "--no-log", "--num-threads", "1"),
                   "on": Served(repo, work, "--log-db", str(db), "--num-threads", "1")}
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        try:
            for server in servers.values():  # warm-up: the first requests of a process cost more
                load(server.port, 1000)
            for round_index in range(args.rounds):
                # Alternate which setting goes first, so neither always runs after the other.
                for setting in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
                    result = load(servers[setting].port, args.requests)
                    results[setting].append(result)
                    print(f"round {round_index + 1} log {setting:<3}: {result['rps']:8.0f} requests/s, "
                          f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                          f"{result['requests'] - result['non2xx']} answered", flush=True)
            on = servers["on"]
            # The server's own count of answered requests: wrk abandons the ones still in
            # flight when it stops, but the server answers (and logs) them.
            answered = on.metric("aideploy_requests_total", outcome="success")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the writer commits in the background
                rows = on.metric("aideploy_prediction_log_rows_total")
                dropped = on.metric("aideploy_prediction_log_dropped_total")
                if rows + dropped >= answered:
                    break
                time.sleep(0.2)
            failures = sum(r["non2xx"] + r.get("errors", 0) for runs in results.values() for r in runs)
        finally:
            for server in servers.values():
                server.stop()
        with sqlite3.connect(db) as connection:
            (in_file,) = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()

    median = {setting: statistics.median(r["rps"] for r in runs) for setting, runs in results.items()}
    ratio = median["on"] / median["off"]
    paired = [on["rps"] / off["rps"] for on, off in zip(results["on"], results["off"])]
    print()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load: {generator}; {args.rounds} rounds of "
          f"{args.requests:,} V2 JSON batch-1 requests at concurrency {args.concurrency} to each server "
          "(one ONNX Runtime thread each)")
    print("| prediction log | median requests/s | rounds' range | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for setting in ("off", "on"):
        runs = results[setting]
        low, high = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
        print(f"| {setting} | {median[setting]:,.0f} | {low:,.0f}-{high:,.0f} | "
              f"{statistics.median(r['p50'] for r in runs):.2f} | {statistics.median(r['p99'] for r in runs):.2f} |")
    print()
    counted = rows + dropped == answered and in_file == rows
    print(f"logging on: {answered:,.0f} answered = {rows:,.0f} rows committed + {dropped:,.0f} dropped "
          f"({'yes' if rows + dropped == answered else 'NO'}); {in_file:,} rows in the file; "
          f"{failures} non-2xx answers or socket errors")
    print(f"round by round, on / off: {', '.join(f'{r:.0%}' for r in paired)} (median {statistics.median(paired):.1%})")
    print(f"throughput with the log on: {ratio:.1%} of off (medians; target >= {TARGET_RATIO:.0%})")
    failed = not counted or failures or ratio < TARGET_RATIO
    print("MISSED a target" if failed else "all targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
