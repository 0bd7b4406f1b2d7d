"""Soak: clients connect, play CartPole, drop mid-episode at random and reconnect, while PPO
trains from them; checks exact counts (every finished episode trained on, every step
either trained on or dropped with its client's open episode) and prints memory (RSS) and
open file descriptors over time.

    python benchmarks/soak_external.py [--minutes 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.external.test_training import external  # noqa: E402
from tunerl import PPOConfig  # noqa: E402
from tunerl.core import metrics as m  # noqa: E402
from tunerl.env.external import RemoteInferenceClient  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def churn(port: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    env = gym.make("CartPole-v1")
    while not stop.is_set():
        try:
            with RemoteInferenceClient(port=port, timeout_s=60) as client:
                for _ in range(rng.randint(1, 5)):  # episodes on this connection
                    obs, _ = env.reset(seed=rng.randint(0, 10**6))
                    action = client.start(obs)
                    drop_at = rng.randint(1, 200) if rng.random() < 0.3 else None
                    t = 0
                    while action is not None and not stop.is_set():
                        obs, reward, terminated, truncated, _ = env.step(action)
                        t += 1
                        if t == drop_at:
                            raise ConnectionAbortedError  # drop mid-episode
                        action = client.step(obs, reward, terminated, truncated)
        except (ConnectionError, OSError):
            pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    config = external(
        PPOConfig().training(train_batch_size_per_learner=1000, minibatch_size=250, num_epochs=2)
    )
    algo = config.build_algo()
    runner = algo.env_runner_group.local_env_runner
    stop = threading.Event()
    threads = [
        threading.Thread(target=churn, args=(runner.address[1], stop, seed), daemon=True)
        for seed in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    trained_steps = trained_episodes = 0
    while time.perf_counter() - start < 60 * args.minutes:
        result = algo.train()
        trained_steps = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        trained_episodes = result[m.NUM_EPISODES_LIFETIME]
        stats = runner.server_stats()
        mean_return = result[m.ENV_RUNNER_RESULTS].get(m.EPISODE_RETURN_MEAN, float("nan"))
        print(
            f"{time.perf_counter() - start:6.0f} s  rss {rss_mb():6.1f} MB  fds {open_fds():3d}  "
            f"connections {stats['connections']:5d}  dropped episodes "
            f"{stats['episodes_dropped']:4d}  return {mean_return:.1f}",
            flush=True,
        )
    stop.set()
    for thread in threads:
        thread.join(60)
    time.sleep(0.5)
    stats = runner.server_stats()
    algo.stop()
    balance = stats["steps_taken"] + stats["steps_dropped"] + stats["steps_buffered"]
    print(f"final: {stats}")
    print(
        f"steps: added {stats['steps_added']} = taken {stats['steps_taken']} + dropped "
        f"{stats['steps_dropped']} + buffered {stats['steps_buffered']}: "
        f"{'exact' if balance == stats['steps_added'] else 'MISMATCH'}; trained on "
        f"{trained_steps} (= taken: {trained_steps == stats['steps_taken']}); episodes "
        f"trained {trained_episodes} = taken {stats['episodes_taken']}: "
        f"{trained_episodes == stats['episodes_taken']}"
    )


if __name__ == "__main__":
    main()
