"""Learning tests: each experiment in experiments/ must reach its target within its budget.

Seeded; the thresholds and budgets are read from the YAML files, never written here.
"""

from pathlib import Path

import pytest

from tunerl.experiments import load_experiment, lookup, run_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


# Offline experiments (with a `dataset`) record their data first: test_offline_learning.py.
ONLINE = sorted(
    path.stem for path in EXPERIMENTS.glob("*.yaml") if load_experiment(path).dataset is None
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ONLINE)
def test_experiment_reaches_its_target(name):
    path = EXPERIMENTS / f"{name}.yaml"
    experiment = load_experiment(path)
    result = run_experiment(path)
    value = lookup(result, experiment.target_metric)
    budget = experiment.stop["num_env_steps_sampled_lifetime"]
    assert result["num_env_steps_sampled_lifetime"] <= budget + experiment.config.get(
        "train_batch_size_per_learner", 0
    )
    assert value >= experiment.target_value, (
        f"{name}: {experiment.target_metric} = {value:.1f} after "
        f"{result['num_env_steps_sampled_lifetime']} env steps; the target is "
        f">= {experiment.target_value}"
    )
