"""Offline learning tests: each experiment with a `dataset` first records it on this machine
(its expert experiment trained to its stop criteria, then rows sampled by it and by an
untrained policy; once per test session), then must reach its target. Seeded; thresholds
and budgets are read from the YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunerl.experiments import load_experiment, lookup, run_experiment
from tunerl.offline.recording import record_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
OFFLINE = sorted(
    path.stem for path in EXPERIMENTS.glob("*.yaml") if load_experiment(path).dataset is not None
)


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("offline-datasets")


def recorded(dataset: dict, cache: Path) -> Path:
    expert = EXPERIMENTS / dataset["expert"]
    folder = cache / f"{expert.stem}-{dataset['rows']}-{dataset['random_fraction']}"
    return record_dataset(expert, folder, dataset["rows"], dataset["random_fraction"])


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFLINE)
def test_offline_experiment_reaches_its_target(name, dataset_cache):
    path = EXPERIMENTS / f"{name}.yaml"
    experiment = load_experiment(path)
    folder = recorded(experiment.dataset, dataset_cache)
    result = run_experiment(path, input_=str(folder))
    value = lookup(result, experiment.target_metric)
    assert result["num_env_steps_sampled_lifetime"] == 0
    assert value >= experiment.target_value, (
        f"{name}: {experiment.target_metric} = {value:.1f} after {result['training_iteration']} "
        f"iterations; the target is >= {experiment.target_value}"
    )
