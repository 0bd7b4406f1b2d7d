"""`tunerl serve` requests/s and p50/p99 latency, single-observation and batched (32 per
request), over one keep-alive connection; beside the Ray Serve deployment of the same
module when ray[serve] is installed.

    python benchmarks/serve.py CHECKPOINT [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def measure(port: int, path: str, batch: int, seconds: float) -> tuple[float, float, float]:
    obs = np.random.default_rng(0).normal(0, 0.5, (batch, 4)).round(4).tolist()
    body = json.dumps({"observation": obs[0]} if batch == 1 else {"observations": obs})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        latencies.append(time.perf_counter() - t0)
    connection.close()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    return len(latencies) / seconds, p50, p99


def report(name: str, port: int, path: str, seconds: float) -> None:
    for batch in (1, 32):
        rate, p50, p99 = measure(port, path, batch, seconds)
        print(
            f"{name:12s} batch {batch:2d}: {rate:7.0f} req/s ({rate * batch:8.0f} obs/s), "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms  [{load()}]",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    command = [sys.executable, "-m", "tunerl", "serve", args.checkpoint, "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(server.stdout.readline().rsplit(":", 1)[1].split("/")[0])
        report("tunerl serve", port, "/v1/actions", args.seconds)
    finally:
        server.terminate()
        server.wait(30)
    try:
        from ray import serve

        from tunerl.serving.ray_serve import policy_app
    except ImportError:
        print("Ray Serve: not installed (pip install 'tunerl[serve]')")
        return
    serve.start(http_options={"host": "127.0.0.1", "port": 8766})
    try:
        serve.run(policy_app(args.checkpoint), route_prefix="/")
        report("Ray Serve", 8766, "/", args.seconds)
    finally:
        serve.shutdown()


if __name__ == "__main__":
    main()
