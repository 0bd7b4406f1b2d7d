"""Multi-agent learning test: two modules on MultiAgentCartPole reach the experiment's
combined return within its env-step budget, each module learning on its own agent's steps.

Seeded; the threshold and budget are read from
experiments/multi_agent/ppo_multi_agent_cartpole.yaml."""

from pathlib import Path

import pytest

from tunerl.core import metrics as m
from tunerl.experiments import load_experiment, lookup, train_until

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "multi_agent"
EXPERIMENT = EXPERIMENTS / "ppo_multi_agent_cartpole.yaml"


@pytest.mark.slow
def test_two_modules_reach_the_combined_return_of_multi_agent_cartpole():
    experiment = load_experiment(EXPERIMENT)
    result = train_until(experiment.algo_config(), experiment.stop).result
    value = lookup(result, experiment.target_metric)
    steps = result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert value >= experiment.target_value, (
        f"{experiment.target_metric} = {value:.1f} after {steps} env steps; the target is "
        f">= {experiment.target_value}"
    )
    assert steps <= experiment.stop[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] + experiment.config.get(
        "train_batch_size_per_learner", 0
    )
    # Both modules trained, and each agent's return is its own module's.
    assert set(result[m.LEARNER_RESULTS]) == {"p0", "p1"}
    per_module = result[m.ENV_RUNNER_RESULTS][m.MODULE_EPISODE_RETURNS_MEAN]
    assert min(per_module.values()) > 0.25 * experiment.target_value
