"""Offline evaluation measured: BC trains on CartPole-v1 data (half an expert PPO's, half an
untrained policy's, recorded once into the folder given as the first argument), and each
iteration prints the return its (stochastic) policy gets in the env beside the estimates
of IS, WIS, PDIS and FQE from the recorded episodes, and the seconds they took.

    python benchmarks/offline_evaluation.py /tmp/tunerl-datasets [iterations] [fqe_updates]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tunerl.algorithms.bc import BCConfig
from tunerl.core import metrics as m
from tunerl.offline.recording import record_dataset

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
ESTIMATORS = ["wis", "is", "pdis", "fqe"]


def main(cache: Path, iterations: int, fqe_updates: int) -> None:
    folder = record_dataset(
        EXPERIMENTS / "ppo_cartpole.yaml", cache / "ppo_cartpole-50000-0.5", 50_000, 0.5
    )
    config = (
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=str(folder))
        .training(lr=1e-3, train_batch_size_per_learner=512)
        .reporting(min_train_timesteps_per_iteration=25_600)
        .evaluation(
            evaluation_interval=1,
            evaluation_duration=20,
            offline_evaluation_interval=1,
            offline_evaluation_type=ESTIMATORS,
            offline_evaluation_fqe_updates=fqe_updates,
        )
        .debugging(seed=1)
    )
    algo = config.build_algo()
    try:
        for _ in range(iterations):
            start = time.perf_counter()
            result = algo.train()
            evaluation = result[m.EVALUATION_RESULTS]
            offline = evaluation[m.OFFLINE_EVAL_RUNNER_RESULTS]
            estimates = ", ".join(
                f"{name} {offline[name][m.EPISODE_RETURN_MEAN]:.1f}" for name in ESTIMATORS
            )
            env_return = evaluation[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
            print(
                f"iteration {result['training_iteration']}: env return "
                f"{env_return:.1f}; offline {estimates} "
                f"(data's own {offline['behavior_episode_return_mean']:.1f}, "
                f"{offline['num_episodes']} episodes, "
                f"{result[m.TIMERS][m.OFFLINE_EVALUATION_TIMER]:.2f} s of "
                f"{time.perf_counter() - start:.2f} s)",
                flush=True,
            )
    finally:
        algo.stop()


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else 5,
        int(sys.argv[3]) if len(sys.argv) > 3 else 500,
    )
