"""Every registered algorithm trains with tiny settings, with the local runner and with a
remote one; evaluation runs exactly the episodes asked; reset_config equals a fresh build."""

from __future__ import annotations

import math

import pytest

from tunerl.core import columns as c
from tunerl.core import metrics as m

from .helpers import (
    ALGORITHM_NAMES,
    assert_same_weights,
    comparable,
    same_numbers,
    tiny_config,
    trains_offline,
    weights,
)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_two_tiny_iterations_sample_train_and_report(name, num_env_runners, build):
    if num_env_runners and trains_offline(name):
        pytest.skip(f"{name} builds no training runners: the local case is the whole case")
    algo = build(tiny_config(name, num_env_runners=num_env_runners))
    before = weights(algo)
    results = [algo.train() for _ in range(2)]

    last = results[-1]
    assert [r["training_iteration"] for r in results] == [1, 2]
    if trains_offline(name):
        # Its sampling-free variant: recorded rows, no env step (the runners evaluate only).
        assert last[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0
        assert last[m.NUM_ENV_STEPS_TRAINED_LIFETIME] >= 2 * 128
        assert algo.env_runner_group is None
    else:
        assert last[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 2 * 64
        assert last[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == sum(
            r[m.ENV_RUNNER_RESULTS][m.NUM_ENV_STEPS_SAMPLED] for r in results
        )
        assert 0 < last[m.NUM_ENV_STEPS_TRAINED_LIFETIME]
        assert last[m.NUM_EPISODES_LIFETIME] > 0
        assert math.isfinite(last[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN])
    # The learner reported finite statistics under the module's id, and trained the weights.
    reported = [r[m.LEARNER_RESULTS] for r in results if r[m.LEARNER_RESULTS]]
    assert reported and all(set(stats) == {c.DEFAULT_MODULE_ID} for stats in reported)
    for stats in reported:
        assert stats[c.DEFAULT_MODULE_ID]
        for key, value in stats[c.DEFAULT_MODULE_ID].items():
            assert math.isfinite(value), key
    after = weights(algo)
    assert any(not after[k].equal(before[k]) for k in before)
    if num_env_runners and not trains_offline(name):
        assert last[m.FAULT_TOLERANCE][m.NUM_HEALTHY_ENV_RUNNERS] == 1


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_evaluation_returns_exactly_the_episodes_asked(name, build):
    config = tiny_config(name).evaluation(evaluation_interval=1, evaluation_duration=3)
    algo = build(config)
    evaluation = algo.train()[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS]
    assert evaluation[m.NUM_EPISODES] == 3
    assert evaluation[m.NUM_ENV_STEPS_SAMPLED] >= 3 * 8  # CartPole's shortest episode
    assert algo.evaluate()[m.ENV_RUNNER_RESULTS][m.NUM_EPISODES] == 3


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_reset_config_gives_the_results_of_a_fresh_build(name, build):
    """Tune's reuse_actors and PBT (`Trainable.reset`, which calls `reset_config`): an
    algorithm reset to a new config trains as one built with it (same results, same
    weights), whatever it trained before."""
    reused = build(tiny_config(name, seed=1, model_config={"fcnet_hiddens": [8]}))
    reused.train()
    new = tiny_config(name, seed=2)
    assert reused.reset(new.to_dict()) is True
    fresh = build(new)

    assert reused.config == fresh.config
    for _ in range(2):
        assert same_numbers(comparable(reused.train()), comparable(fresh.train()))
    assert_same_weights(weights(reused), weights(fresh))
