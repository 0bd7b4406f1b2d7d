"""External env figures: PPO CartPole-v1 to 450 in-process vs from a client process (both
inference modes), and server-side inference throughput and latency for 1 and 16 clients.

    python benchmarks/external_env.py [--skip-learning] [--seconds 10]

Prints the load average beside every figure (the machine is shared).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunerl.core import metrics as m  # noqa: E402
from tunerl.env.external import ExternalEnvRunner, RemoteInferenceClient  # noqa: E402
from tunerl.experiments import load_experiment  # noqa: E402

CARTPOLE = gym.make("CartPole-v1")


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def time_to_450(mode: str | None) -> tuple[float, int, float]:
    experiment = load_experiment(ROOT / "experiments" / "ppo_cartpole.yaml")
    config = experiment.algo_config()
    client = None
    start = time.perf_counter()
    if mode is not None:
        config = experiment.algo_config(num_envs_per_env_runner=1)
        config.environment(
            env=None,
            observation_space=CARTPOLE.observation_space,
            action_space=CARTPOLE.action_space,
            env_config={"port": 0},
        ).env_runners(env_runner_cls=ExternalEnvRunner)
    algo = config.build_algo()
    if mode is not None:
        port = algo.env_runner_group.local_env_runner.address[1]
        command = [sys.executable, "-m", "tunerl.examples.envs.external_cartpole_client"]
        command += ["--port", str(port), "--mode", mode, "--num-envs", "16"]
        client = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        while True:
            result = algo.train()
            value = result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
            steps = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
            if value >= 450 or steps >= 200_000:
                return time.perf_counter() - start, steps, value
    finally:
        algo.stop()
        if client is not None:
            client.wait(60)


def _client(port: int, seconds: float, queue) -> None:
    client = RemoteInferenceClient(port=port, timeout_s=30)
    obs = np.zeros(4, np.float32)
    latencies = []
    client.start(obs)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        client.step(obs, 1.0, False, False)
        latencies.append(time.perf_counter() - t0)
    client.close()
    queue.put(latencies)


def throughput(num_clients: int, seconds: float) -> tuple[float, float, float]:
    from tests.external.conftest import external_config, make_runner

    runner = make_runner(external_config(max_buffered_env_steps=10**9))
    queue = multiprocessing.get_context("spawn").Queue()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_client, args=(runner.address[1], seconds, queue))
        for _ in range(num_clients)
    ]
    for process in processes:
        process.start()
    # Generous: 16 fresh processes import torch first, slowly on a loaded machine.
    latencies = [queue.get(timeout=seconds + 600) for _ in processes]
    for process in processes:
        process.join(30)
    runner.stop()
    total = sum(len(one) for one in latencies)
    merged = np.concatenate(latencies)
    return total / seconds, 1e3 * np.percentile(merged, 50), 1e3 * np.percentile(merged, 99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for num_clients in (1, 16):
        rate, p50, p99 = throughput(num_clients, args.seconds)
        print(
            f"server-side inference, {num_clients:2d} clients (one obs per request): "
            f"{rate:8.0f} actions/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms  [{load()}]",
            flush=True,
        )
    if args.skip_learning:
        return
    for mode in (None, "remote", "local"):
        seconds, steps, value = time_to_450(mode)
        name = "in-process" if mode is None else f"external {mode}"
        print(
            f"PPO CartPole {name:16s}: {value:.1f} at {steps} env steps in {seconds:.1f} s  "
            f"[{load()}]",
            flush=True,
        )


if __name__ == "__main__":
    main()
