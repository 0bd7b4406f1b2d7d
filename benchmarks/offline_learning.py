"""Offline experiments measured: records each experiment's dataset (cached in a folder given
as the first argument), then trains to the experiment's stop criteria and prints the
evaluation return, iterations and wall seconds of training (recording not counted).

    python benchmarks/offline_learning.py /tmp/tunerl-datasets bc_cartpole marwil_cartpole
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tunerl.experiments import load_experiment, lookup, run_experiment
from tunerl.offline.recording import record_dataset

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def main(cache: Path, names: list[str]) -> None:
    for name in names:
        path = EXPERIMENTS / f"{name}.yaml"
        experiment = load_experiment(path)
        dataset = experiment.dataset
        expert = EXPERIMENTS / dataset["expert"]
        folder = cache / f"{expert.stem}-{dataset['rows']}-{dataset['random_fraction']}"
        start = time.perf_counter()
        record_dataset(expert, folder, dataset["rows"], dataset["random_fraction"])
        recorded_s = time.perf_counter() - start
        start = time.perf_counter()
        result = run_experiment(path, input_=str(folder))
        train_s = time.perf_counter() - start
        value = lookup(result, experiment.target_metric)
        print(
            f"{name}: {experiment.target_metric} = {value:.1f} (target {experiment.target_value})"
            f" after {result['training_iteration']} iterations, "
            f"{result['num_env_steps_trained_lifetime']} rows trained, {train_s:.1f} s "
            f"(dataset {(folder / 'dataset.json').read_text()}, recorded in {recorded_s:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
