"""Monitoring benchmark: serving throughput with the prediction log on versus off, in one run.

Two ``aideploy serve`` child processes on the same repository (the serving benchmark's
784-64-64-10 MLP, built with ``onnx.helper``, no TensorFlow): one with ``--log-db``, one
with ``--no-log``. Rounds of batch-1 KServe V2 JSON requests (5,000 a round at concurrency
32 by default) go to each in turn (off, on, off, on, ...), so both see the same machine
state; the load comes from Python client processes (``benchmarks/serving.py``'s generator),
which send an exact number of requests.

Checks the issue's targets and exits 1 if one is missed:

- with logging on, rows committed (``aideploy_prediction_log_rows_total``) plus rows dropped
  (``aideploy_prediction_log_dropped_total``) equal the requests answered, and the log file
  holds exactly the committed rows;
- the median throughput with logging on is at least 85% of the median with it off.

Command (see benchmarks/README.md): ``flock -x /tmp/aideploy-cpu.lock python benchmarks/monitoring.py``.
"""

from __future__ import annotations

import argparse
import os
import re
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

    def metric(self, name: str) -> float:
        return sum(float(value) for value in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", self.get("/metrics"),
                                                           re.MULTILINE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Monitoring benchmark (see benchmarks/README.md).")
    parser.add_argument("--requests", type=int, default=5000, help="requests a round (default: 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (default: 32)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per setting (default: 5)")
    parser.add_argument("--client-processes", type=int, default=2, help="load generator processes")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aideploy-bench-monitor-") as folder:
        work = Path(folder)
        _, repo = serving.build_model(work)
        request = serving.requests_for(serving.test_images(1))["v2-json"]
        db = work / "predictions.db"
        servers = {"off": Served(repo, work, "--no-log"), "on": Served(repo, work, "--log-db", str(db))}
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        try:
            for round_index in range(args.rounds):
                for setting in ("off", "on"):
                    result = serving.load_python(servers[setting].port, request, args.concurrency, 600.0,
                                                 count=args.requests, processes=args.client_processes)
                    results[setting].append(result)
                    print(f"round {round_index + 1} log {setting:<3}: {result['rps']:8.0f} requests/s, "
                          f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                          f"{result['requests'] - result['non2xx']} answered", flush=True)
            answered = sum(r["requests"] - r["non2xx"] for r in results["on"])
            on = servers["on"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the writer commits in the background
                rows = on.metric("aideploy_prediction_log_rows_total")
                dropped = on.metric("aideploy_prediction_log_dropped_total")
                if rows + dropped >= answered:
                    break
                time.sleep(0.2)
        finally:
            for server in servers.values():
                server.stop()
        with sqlite3.connect(db) as connection:
            (in_file,) = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()

    median = {setting: statistics.median(r["rps"] for r in runs) for setting, runs in results.items()}
    ratio = median["on"] / median["off"]
    print()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; "
          f"Python client, {args.client_processes} processes; {args.rounds} rounds of {args.requests:,} "
          f"V2 JSON batch-1 requests at concurrency {args.concurrency}")
    print("| prediction log | median requests/s | rounds' range | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for setting in ("off", "on"):
        runs = results[setting]
        low, high = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
        print(f"| {setting} | {median[setting]:,.0f} | {low:,.0f}-{high:,.0f} | "
              f"{statistics.median(r['p50'] for r in runs):.2f} | {statistics.median(r['p99'] for r in runs):.2f} |")
    print()
    counted = rows + dropped == answered and in_file == rows
    print(f"logging on: {answered:,} answered = {rows:,.0f} rows committed + {dropped:,.0f} dropped "
          f"({'yes' if rows + dropped == answered else 'NO'}); {in_file:,} rows in the file")
    print(f"throughput with the log on: {ratio:.1%} of off (target >= {TARGET_RATIO:.0%})")
    failed = not counted or ratio < TARGET_RATIO
    print("MISSED a target" if failed else "all targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
