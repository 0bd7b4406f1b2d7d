"""tunerl's Adam step with torch's fused kernel against its foreach formulation, in one process
(interleaved, so machine load hits both alike): CPU milliseconds per learner update of the
small tasks' experiments and of SAC at 256x256 on Hopper-v5 (if `mujoco` is installed).

    python benchmarks/fused_adam.py [--rounds 3] [--updates 100]

PPO and APPO: one update is all epochs over one train batch; DQN and SAC: one replayed batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch

import tunerl.core.optim as optim
from tunerl.experiments import load_experiment

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
NAMES = ["ppo_cartpole", "dqn_cartpole", "sac_pendulum", "mujoco/sac_hopper"]


def batch_for(algo, config):
    """A batch as training_step hands it to the learner."""
    if hasattr(algo, "replay"):
        return algo.replay.sample(config.train_batch_size_per_learner)[0]
    return algo.sample_from_runners(config.train_batch_size_per_learner)


def cpu_ms(update, count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        update()
    return (time.process_time() - start) * 1e3 / count


def measure(name: str, rounds: int, updates: int) -> dict:
    config = load_experiment(EXPERIMENTS / f"{name}.yaml").algo_config(seed=1)
    config.update_from_dict({"num_env_runners": 0})
    algo = config.build_algo()
    while algo.counters["num_env_steps_sampled_lifetime"] < 2000:
        algo.train()
    batch = batch_for(algo, config)
    count = max(3, updates // 20) if not hasattr(algo, "replay") else updates

    def update() -> None:
        algo.learner.update(batch, 2000)

    figures: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(rounds):
        for kind in figures:
            optim._FUSED_ADAM_CPU = kind == "fused"
            cpu_ms(update, max(1, count // 10))  # warm-up
            figures[kind].append(cpu_ms(update, count))
    optim._FUSED_ADAM_CPU = True
    algo.stop()
    return {kind: statistics.median(values) for kind, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in NAMES if not n.startswith("mujoco") or importlib.util.find_spec("mujoco")]
    print(f"{'experiment':20s} {'foreach ms':>10s} {'fused ms':>10s}")
    for name in names:
        result = measure(name, args.rounds, args.updates)
        print(f"{name:20s} {result['foreach']:10.2f} {result['fused']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
