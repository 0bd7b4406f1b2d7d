"""Evaluation: its own runner group, exactly the episodes asked (split over the runners, also
when one is killed), `evaluation_config` applied, the interval, and evaluation in parallel to
training, which evaluates the weights from the start of the iteration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import ray

from tunerl import ConfigError
from tunerl.core import columns as c
from tunerl.core import metrics as m


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def eval_config(tiny_config, num_runners: int, episodes: int = 5, **evaluation):
    settings = {
        "evaluation_interval": 1,
        "evaluation_num_env_runners": num_runners,
        "evaluation_duration": episodes,
        "evaluation_config": {"explore": False},
        **evaluation,
    }
    return tiny_config().evaluation(**settings)


@pytest.mark.parametrize("num_runners", [0, 2])
def test_evaluation_runs_exactly_the_episodes_asked(local_ray, tiny_config, build, num_runners):
    algo = build(eval_config(tiny_config, num_runners))
    for _ in range(2):
        evaluation = algo.train()[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS]
        assert evaluation[m.NUM_EPISODES] == 5
        assert np.isfinite(evaluation[m.EPISODE_RETURN_MEAN])
        # CartPole pays 1 per step: the mean length and return agree, over the same episodes.
        assert evaluation[m.EPISODE_LEN_MEAN] == evaluation[m.EPISODE_RETURN_MEAN]
        assert evaluation[m.NUM_ENV_STEPS_SAMPLED] == pytest.approx(
            5 * evaluation[m.EPISODE_LEN_MEAN]
        )
    group = algo.eval_env_runner_group
    assert group is not algo.env_runner_group
    assert group.num_remote_env_runners == num_runners
    assert group.foreach_env_runner(lambda runner: runner.config.explore) == [False] * max(
        1, num_runners
    )


def test_evaluation_episodes_are_split_over_the_runners(local_ray, tiny_config, build):
    algo = build(eval_config(tiny_config, 2))
    batch = algo.eval_env_runner_group.sample(num_episodes=5)[c.DEFAULT_MODULE_ID]
    algo.eval_env_runner_group.pop_metrics()
    episodes = {int(eps_id) for eps_id in batch[c.EPS_ID]}
    per_runner = Counter(eps_id >> 40 for eps_id in episodes)
    assert per_runner == {1: 3, 2: 2}
    # Every episode is complete: it ends with a termination or a truncation.
    ends = batch[c.TERMINATEDS] | batch[c.TRUNCATEDS]
    assert {int(eps_id) for eps_id in batch[c.EPS_ID][ends]} == episodes


def test_evaluation_with_a_killed_runner_still_runs_the_episodes_asked(
    local_ray, tiny_config, build
):
    algo = build(eval_config(tiny_config, 2))
    ray.get([actor.ping.remote() for actor in algo.eval_env_runner_group.remote_workers()])
    ray.kill(algo.eval_env_runner_group.remote_runners()[2], no_restart=True)

    evaluation = algo.evaluate()[m.ENV_RUNNER_RESULTS]

    assert evaluation[m.NUM_EPISODES] == 5
    assert algo.eval_env_runner_group.num_restarts == 1


def test_evaluation_in_timesteps(tiny_config, build):
    algo = build(eval_config(tiny_config, 0, episodes=300, evaluation_duration_unit="timesteps"))
    evaluation = algo.train()[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS]
    assert evaluation[m.NUM_ENV_STEPS_SAMPLED] >= 300


def test_evaluation_interval_and_the_last_evaluation_carried_over(tiny_config, build):
    algo = build(eval_config(tiny_config, 0, episodes=2, evaluation_interval=2))
    results = [algo.train() for _ in range(3)]
    assert m.EVALUATION_RESULTS not in results[0]
    assert results[1][m.EVALUATION_RESULTS] == results[2][m.EVALUATION_RESULTS]
    assert m.EVALUATION_TIMER in results[1][m.TIMERS]
    assert m.EVALUATION_TIMER not in results[2][m.TIMERS]


def test_parallel_evaluation_evaluates_the_weights_from_the_start_of_the_iteration(
    local_ray, tiny_config, build
):
    """A parallel run and a sequential twin (same seeds, so the same training and the same
    deterministic evaluation episodes): the parallel evaluation of iteration i equals the
    twin's evaluation just before its iteration i trained."""
    parallel = build(eval_config(tiny_config, 1, evaluation_parallel_to_training=True))
    twin = build(eval_config(tiny_config, 1, evaluation_interval=1000))
    for _ in range(2):
        before_training = twin.evaluate()
        twin.train()
        result = parallel.train()
        assert result[m.EVALUATION_RESULTS] == before_training
        assert result[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS][m.NUM_EPISODES] == 5
    assert parallel.get_module().get_state().keys() == twin.get_module().get_state().keys()
    for name, value in parallel.get_module().get_state().items():
        assert np.array_equal(value.numpy(), twin.get_module().get_state()[name].numpy()), name


def test_parallel_evaluation_needs_remote_evaluation_runners(tiny_config):
    config = eval_config(tiny_config, 0, evaluation_parallel_to_training=True)
    with pytest.raises(ConfigError) as caught:
        config.validate()
    message = str(caught.value)
    assert "evaluation_parallel_to_training=True" in message
    assert "evaluation_num_env_runners=0" in message
    assert "evaluation_num_env_runners=1" in message  # what to do instead
