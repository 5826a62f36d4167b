"""Serving benchmark: aideploy's server against a naive FastAPI + ONNX Runtime server and the HTTP limit.

One model (a 784-64-64-10 MLP built with ``onnx.helper``, random weights with a fixed
seed, no TensorFlow), one run, batch-1 requests at concurrency 1, 8, 32 and 64, against:

- aideploy's server (``aideploy.serve``): KServe V2 JSON, V2 binary tensors, TF Serving JSON;
- ``naive``: FastAPI + pydantic + one ``session.run`` per request (``benchmarks/naive_server.py``);
- ``echo``: a bare JSON echo route on the same FastAPI + uvicorn stack (the HTTP limit);
- ``echo JSON``: aideploy's own request path (direct dispatch, body reader) parsing the body
  with orjson and answering it as JSON, no model (the HTTP+JSON limit).

Every server is a child process with the same uvicorn options and ONNX Runtime threads,
bound to 127.0.0.1, and is killed (by pid) at the end. All of them run for the whole
benchmark; each of ``--rounds`` rounds measures every point once, in a freshly shuffled
order, and the table shows the medians. Requests carry real Fashion-MNIST test images. The load comes from another
process: ``wrk`` when installed, else Python client processes (raw HTTP/1.1 keep-alive
connections over asyncio). Prints requests/s, p50, p99 and the ratios, the CPU and the
thread settings, checks the issue's targets at concurrency 32, and exits 1 if one is missed.

``--soak``: 10,000 valid V2 requests at concurrency 64 in rounds of 1,000: zero non-2xx
answers, ``/metrics``' request count equal to the requests sent, resident memory growth
under 10% from the first round to the last.

Command (see benchmarks/README.md): ``flock -x /tmp/aideploy-cpu.lock python benchmarks/serving.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL_NAME = "mlp"
CONCURRENCIES = (1, 8, 32, 64)
TARGET_CONCURRENCY = 32


# --- the model -------------------------------------------------------------------------


def build_model(folder: Path) -> tuple[Path, Path]:
    """The MLP as an ONNX export with its manifest, published into a repository under ``folder``.

    Returns:
        The ``.onnx`` file and the repository folder.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from aideploy import artifacts, registry

    rng = np.random.default_rng(0)
    sizes = (784, 64, 64, 10)
    nodes, initializers, last = [], [], "input"
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2 / fan_in)).astype(np.float32)
        initializers += [numpy_helper.from_array(weights, f"W{index}"),
                         numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{index}")]
        nodes += [helper.make_node("MatMul", [last, f"W{index}"], [f"mm{index}"]),
                  helper.make_node("Add", [f"mm{index}", f"b{index}"], [f"z{index}"])]
        last = f"z{index}"
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"a{index}"]))
            last = f"a{index}"
    nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / "mlp.onnx"
    signature = {
        "inputs": [{"name": "input", "shape": [None, 784], "dtype": "float32"}],
        "outputs": [{"name": "probabilities", "shape": [None, 10], "dtype": "float32"}],
    }
    artifacts.save_artifact(
        path, lambda temporary: temporary.write_bytes(model.SerializeToString()),
        kind="onnx-model", produced_by="benchmarks/serving.py", extra={"format": "onnx", "signature": signature},
    )
    repo = folder / "repo"
    registry.publish(path, repo, MODEL_NAME)
    return path, repo


# --- requests --------------------------------------------------------------------------


def test_images(count: int) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images as the MLP takes them: (count, 784) float32 in [0, 1].

    Requests carry real images: pixel noise would put a 17-digit number in every pixel,
    where a real image has about half its pixels at 0 (``0.0`` in JSON).
    """
    from aideploy import data

    return data.preprocess(data.load_fashion_mnist().x_test[:count], "mlp")



def requests_for(x: np.ndarray) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """Each contender's request for the same one-row input: (path, body, headers)."""
    rows = x.tolist()
    json_headers = {"Content-Type": "application/json"}
    v2_json = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                      "data": x.ravel().tolist()}]}).encode()
    raw = x.astype("<f4").tobytes()
    v2_header = json.dumps({
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return {
        "v2-json": (f"/v2/models/{MODEL_NAME}/infer", v2_json, json_headers),
        "v2-binary": (f"/v2/models/{MODEL_NAME}/infer", v2_header + raw,
                      {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(len(v2_header))}),
        "tfserving": (f"/v1/models/{MODEL_NAME}:predict", json.dumps({"instances": rows}).encode(), json_headers),
        "naive": ("/predict", json.dumps({"data": rows}).encode(), json_headers),
        "echo": ("/echo", v2_json, json_headers),
        "echo-json": ("/echo-json", v2_json, json_headers),
    }


# --- servers ---------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ChildServer:
    """A server child process on a loopback port: started, waited for, stopped by pid.

    Args:
        command: The command line; it must listen on ``port``.
        port: The loopback port it listens on.
        log: Where its output goes.
        health: A path that answers 200 once it is ready.
        what: Its name in error messages.
    """

    def __init__(self, command: list[str], port: int, log: Path, health: str, what: str) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{health}", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{what} server not ready after 120 s: {self.log.read_text()[-2000:]}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
            return answer.read().decode()

    def rss(self) -> int:
        """Resident memory of the server process in bytes."""
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


class Server(ChildServer):
    """One server child process (``benchmarks/naive_server.py KIND``), stopped by pid."""

    def __init__(self, kind: str, threads: int, *, model: Path, repo: Path, log_dir: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.kind = kind
        port = free_port()
        command = [sys.executable, str(HERE / "naive_server.py"), kind, "--port", str(port),
                   "--threads", str(threads)]
        command += ["--repo", str(repo), *extra] if kind == "aideploy" else ["--model", str(model)]
        health = "/v2/health/ready" if kind == "aideploy" else "/health"
        super().__init__(command, port, log_dir / f"{kind}.log", health, kind)


# --- load generators -------------------------------------------------------------------

_WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
for k, v in string.gmatch(os.getenv("BENCH_HEADERS"), "([^\\n:]+):([^\\n]*)") do wrk.headers[k] = v end
local target = tonumber(os.getenv("BENCH_COUNT") or "0")
if target > 0 then  -- stop after that many answers (the requests still in flight are abandoned)
  local seen = 0
  response = function(status, headers, body)
    seen = seen + 1
    if seen == target then
      wrk.thread:stop()
      io.write("BENCH_TARGET\\n")  -- load_wrk then interrupts wrk, which ends the run early
      io.flush()
    end
  end
end
done = function(summary, latency, requests)
  io.write(string.format('BENCH {"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "non2xx": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def load_wrk(port: int, request: tuple[str, bytes, dict[str, str]], concurrency: int, seconds: float,
             work: Path, count: int | None = None) -> dict[str, float]:
    """Drive one route with wrk (one thread) for ``seconds``, or until ``count`` answers came back."""
    path, body, headers = request
    (work / "body.bin").write_bytes(body)
    (work / "script.lua").write_text(_WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODY": str(work / "body.bin"), "BENCH_COUNT": str(count or 0),
           "BENCH_HEADERS": "\n".join(f"{k}:{v}" for k, v in headers.items())}
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(work / "script.lua"), f"http://127.0.0.1:{port}{path}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as wrk:
        output = []
        for row in wrk.stdout:  # wrk's SIGINT handler stops the run and still prints its summary
            output.append(row)
            if row.startswith("BENCH_TARGET"):
                wrk.send_signal(signal.SIGINT)
        errors = wrk.stderr.read()
        wrk.wait(60)
    line = next((row for row in output if row.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {''.join(output)[-1000:]} {errors[-1000:]}")
    result = json.loads(line[6:])
    return {"rps": result["requests"] / result["seconds"], "p50": result["p50"], "p99": result["p99"],
            "requests": result["requests"], "non2xx": result["non2xx"], "errors": result["errors"]}


def _http_request(port: int, request: tuple[str, bytes, dict[str, str]]) -> bytes:
    path, body, headers = request
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _connection(port: int, message: bytes, deadline: float, count: int | None, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        while (count is None or sent < count) and time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(message)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - started)
            out["non2xx"] += not 200 <= status < 300
            sent += 1
    finally:
        writer.close()


def _client_process(port: int, message: bytes, connections: int, seconds: float,
                    count: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "non2xx": 0}

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        shares = [None] * connections if count is None else [count // connections + (i < count % connections)
                                                              for i in range(connections)]
        await asyncio.gather(*(_connection(port, message, deadline, share, out) for share in shares))
        return time.perf_counter() - started

    out["seconds"] = asyncio.run(main())
    return out


def load_python(port: int, request: tuple[str, bytes, dict[str, str]], concurrency: int, seconds: float,
                count: int | None = None, processes: int = 2) -> dict[str, float]:
    """Drive one route from ``processes`` client processes with ``concurrency`` connections in all."""
    processes = max(1, min(processes, concurrency))
    message = _http_request(port, request)
    connections = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    counts = [None] * processes if count is None else [count * c // concurrency for c in connections]
    if count is not None:
        counts[0] += count - sum(counts)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(_client_process, [(port, message, c, seconds, n)
                                                 for c, n in zip(connections, counts)])
    latencies = np.concatenate([np.asarray(r["latencies"]) for r in results]) * 1000
    return {"rps": sum(len(r["latencies"]) / r["seconds"] for r in results),
            "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "requests": int(latencies.size), "non2xx": sum(r["non2xx"] for r in results), "errors": 0}


# --- the benchmark ---------------------------------------------------------------------

CONTENDERS = (  # (row label, server kind, request)
    ("aideploy V2 JSON", "aideploy", "v2-json"),
    ("aideploy V2 binary", "aideploy", "v2-binary"),
    ("aideploy TF Serving JSON", "aideploy", "tfserving"),
    ("naive FastAPI+ORT", "naive", "naive"),
    ("echo (HTTP limit)", "echo", "echo"),
    ("echo JSON (HTTP+JSON)", "echo-json", "echo-json"),
)



def settings_line(generator: str, threads: int, seconds: float, rounds: int) -> str:
    import uvicorn

    from aideploy.serve.app import UVICORN_OPTIONS

    def chosen(kind: str, names: tuple[str, ...]) -> str:
        for name in names:
            try:
                __import__(name)
                return name
            except ImportError:
                continue
        return kind

    loop = chosen("asyncio", ("uvloop",)) if UVICORN_OPTIONS["loop"] == "auto" else UVICORN_OPTIONS["loop"]
    http = chosen("h11", ("httptools",)) if UVICORN_OPTIONS["http"] == "auto" else UVICORN_OPTIONS["http"]
    from aideploy.bench import cpu_model

    return (f"CPU: {cpu_model()} ({os.cpu_count()} logical cores) | uvicorn {uvicorn.__version__}, one worker, "
            f"loop={loop}, http={http}, access log off | ONNX Runtime intra-op threads={threads} | "
            f"load: {generator}, batch-1 requests | {rounds} rounds of {seconds:g} s a point, each round "
            f"in a shuffled order, after a 1 s warm-up; medians over the rounds")


def run_benchmark(args: argparse.Namespace, work: Path, model: Path, repo: Path) -> int:
    requests = requests_for(test_images(1))
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = "wrk -t1 (separate process)" if use_wrk else f"{args.client_processes} Python client processes"

    def load(port: int, request: Any, concurrency: int, seconds: float) -> dict[str, float]:
        if use_wrk:
            return load_wrk(port, request, concurrency, seconds, work)
        return load_python(port, request, concurrency, seconds, processes=args.client_processes)

    # Every server runs for the whole benchmark (an idle one costs nothing), and each round
    # measures every contender once at each concurrency, in a freshly shuffled order: a
    # machine that is busier in one stretch of the run, or a server still warming up,
    # cannot favour whoever happens to come first.
    extra = () if args.inline_below_ms is None else ("--inline-below-ms", str(args.inline_below_ms))
    servers: dict[str, Server] = {}
    rounds: dict[tuple[str, int], list[dict[str, float]]] = {}
    order = random.Random(args.seed)
    try:
        for kind in ("aideploy", "naive", "echo", "echo-json"):
            servers[kind] = Server(kind, args.threads, model=model, repo=repo, log_dir=work, extra=extra)
        for round_index in range(args.rounds):
            points = [(label, kind, key, c) for label, kind, key in CONTENDERS for c in args.concurrency]
            order.shuffle(points)
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            for label, kind, request_key, concurrency in points:
                port = servers[kind].port
                if round_index == 0:
                    load(port, requests[request_key], concurrency, 1.0)  # warm-up
                result = load(port, requests[request_key], concurrency, args.seconds)
                rounds.setdefault((label, concurrency), []).append(result)
                print(f"  {label:26s} c={concurrency:<3d} {result['rps']:8.0f} req/s", flush=True)
        batch_line = [line for line in servers["aideploy"].get("/metrics").splitlines()
                      if line.startswith("aideploy_batch_size_") and not line.startswith("#")]
    finally:
        for server in servers.values():
            server.stop()
    results = {point: _median_result(measured) for point, measured in rounds.items()}

    print()
    print(settings_line(generator, args.threads, args.seconds, args.rounds))
    header = (f"{'server':26s} {'conc':>4s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'x naive':>8s} "
              f"{'% echo':>7s} {'% echoJ':>7s} {'non-2xx':>7s}")
    print(header)
    print("-" * len(header))
    for label, _, _ in CONTENDERS:
        for concurrency in args.concurrency:
            r = results[label, concurrency]
            naive, echo = results["naive FastAPI+ORT", concurrency], results["echo (HTTP limit)", concurrency]
            echo_json = results["echo JSON (HTTP+JSON)", concurrency]
            print(f"{label:26s} {concurrency:4d} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                  f"{r['rps'] / naive['rps']:8.2f} {100 * r['rps'] / echo['rps']:6.0f}% "
                  f"{100 * r['rps'] / echo_json['rps']:6.0f}% {r['non2xx'] + r['errors']:7d}")
    count = sum(float(line.rsplit(" ", 1)[1]) for line in batch_line if line.startswith("aideploy_batch_size_count"))
    total = sum(float(line.rsplit(" ", 1)[1]) for line in batch_line if line.startswith("aideploy_batch_size_sum"))
    if count:
        print(f"aideploy batches: {int(count)} predictor calls for {int(total)} rows "
              f"(mean batch {total / count:.2f})")

    failures = []
    if TARGET_CONCURRENCY in args.concurrency:
        naive, echo = results["naive FastAPI+ORT", TARGET_CONCURRENCY], results["echo (HTTP limit)", TARGET_CONCURRENCY]
        echo_json = results["echo JSON (HTTP+JSON)", TARGET_CONCURRENCY]
        print(f"\nTargets at concurrency {TARGET_CONCURRENCY}: >= 1.5x naive req/s, >= 70% of the echo "
              "(and, shown, of the JSON echo), p99 below naive's")
        for label, kind, _ in CONTENDERS:
            if kind != "aideploy":
                continue
            r = results[label, TARGET_CONCURRENCY]
            checks = [r["rps"] >= 1.5 * naive["rps"], r["rps"] >= 0.7 * echo["rps"], r["p99"] < naive["p99"]]
            verdict = "met" if all(checks) else "MISSED"
            print(f"  {label:26s} {r['rps'] / naive['rps']:.2f}x naive, {100 * r['rps'] / echo['rps']:.0f}% of echo "
                  f"({100 * r['rps'] / echo_json['rps']:.0f}% of the JSON echo), "
                  f"p99 {r['p99']:.1f} vs {naive['p99']:.1f} ms: {verdict}")
            shares = [100 * mine["rps"] / theirs["rps"] for mine, theirs in
                      zip(rounds[label, TARGET_CONCURRENCY], rounds["echo (HTTP limit)", TARGET_CONCURRENCY])]
            print(f"  {'':26s} % of echo round by round: {', '.join(f'{share:.0f}%' for share in shares)}")
            if not all(checks):
                failures.append(label)
    if any(r["non2xx"] + r["errors"] for r in results.values()):
        failures.append("non-2xx answers or socket errors")
    print(json.dumps({"results": {f"{label}@{c}": r for (label, c), r in results.items()}, "missed": failures}))
    return 1 if failures else 0


def _median_result(measured: list[dict[str, float]]) -> dict[str, float]:
    """One point's rounds as one: the median of each figure, and every non-2xx answer and error counted."""
    return {"rps": float(np.median([r["rps"] for r in measured])),
            "p50": float(np.median([r["p50"] for r in measured])),
            "p99": float(np.median([r["p99"] for r in measured])),
            "requests": int(sum(r["requests"] for r in measured)),
            "non2xx": int(sum(r["non2xx"] for r in measured)), "errors": int(sum(r["errors"] for r in measured))}


def run_soak(args: argparse.Namespace, work: Path, repo: Path) -> int:
    """10,000 valid V2 JSON requests at concurrency 64, in rounds of 1,000."""
    request = requests_for(test_images(2)[1:])["v2-json"]
    server = Server("aideploy", args.threads, model=Path(), repo=repo, log_dir=work)
    try:
        rss, non2xx, sent = [], 0, 0
        for round_index in range(args.soak_requests // 1000):
            result = load_python(server.port, request, 64, 300.0, count=1000, processes=args.client_processes)
            sent += result["requests"]
            non2xx += result["non2xx"]
            rss.append(server.rss())
            print(f"  round {round_index + 1}: {result['requests']} requests, {result['rps']:.0f} req/s, "
                  f"p99 {result['p99']:.1f} ms, RSS {rss[-1] / 2**20:.1f} MiB", flush=True)
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in server.get("/metrics").splitlines()
                      if line.startswith("aideploy_requests_total{"))
    finally:
        server.stop()
    growth = rss[-1] / rss[0] - 1
    checks = {"zero non-2xx": non2xx == 0, "metrics count == sent": int(counted) == sent,
              "RSS growth < 10%": growth < 0.10}
    print(f"\nsent {sent}, non-2xx {non2xx}, /metrics counted {int(counted)}, RSS first round "
          f"{rss[0] / 2**20:.1f} MiB, last {rss[-1] / 2**20:.1f} MiB ({100 * growth:+.1f}%)")
    for name, ok in checks.items():
        print(f"  {name}: {'met' if ok else 'MISSED'}")
    print(json.dumps({"sent": sent, "non2xx": non2xx, "counted": int(counted), "rss_growth": growth,
                      "missed": [name for name, ok in checks.items() if not ok]}))
    return 0 if all(checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serving benchmark (see benchmarks/README.md).")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds a point a round (default: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each in a shuffled order (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled orders")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of every server")
    parser.add_argument("--inline-below-ms", type=float, default=None,
                        help="aideploy's ServerSettings.inline_below_ms (0: every batch in the model's thread)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load generator even with wrk")
    parser.add_argument("--client-processes", type=int, default=2, help="Python load generator processes")
    parser.add_argument("--soak", action="store_true", help="the 10,000-request soak test instead")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aideploy-servebench-") as folder:
        work = Path(folder)
        model, repo = build_model(work)
        if args.soak:
            return run_soak(args, work, repo)
        return run_benchmark(args, work, model, repo)


if __name__ == "__main__":
    sys.exit(main())
