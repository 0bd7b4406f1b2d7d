"""Env runners as Ray actors (the only unit-test module besides the Tune one that starts
Ray): training, weight sync, stopping, and the resources a trial asks for."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from ray import tune

import tunerl
from tunerl import PPO, Algorithm, EnvError
from tunerl.core import columns as c


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def remote_algo(local_ray, tiny_config) -> Iterator[tuple[Algorithm, list[dict]]]:
    algo = tiny_config(seed=5).env_runners(num_env_runners=1).build_algo()
    results = [algo.train() for _ in range(2)]
    yield algo, results
    algo.stop()


def test_training_with_a_remote_runner(remote_algo):
    algo, results = remote_algo
    assert algo.env_runner_group.local_env_runner is None
    assert len(algo.env_runner_group.remote_workers()) == 1
    last = results[-1]
    assert last["training_iteration"] == 2
    assert last["num_env_steps_sampled_lifetime"] >= 2 * 256
    assert last["num_env_steps_trained_lifetime"] == last["num_env_steps_sampled_lifetime"]
    assert last["num_episodes_lifetime"] > 0
    assert np.isfinite(last["env_runners"]["episode_return_mean"])
    assert np.isfinite(last["learners"][c.DEFAULT_MODULE_ID]["vf_loss"])


def test_remote_runner_acts_with_the_learners_weights(remote_algo):
    algo, _ = remote_algo
    (weights,) = algo.env_runner_group.foreach_env_runner(lambda runner: runner.get_weights())
    assert list(weights) == [c.DEFAULT_MODULE_ID]
    weights = weights[c.DEFAULT_MODULE_ID]
    learner_weights = algo.get_module().get_state()
    assert set(weights) == set(learner_weights)
    for name, value in learner_weights.items():
        assert torch.equal(weights[name], value), name


def test_remote_samples_carry_the_runners_episode_ids(remote_algo):
    algo, _ = remote_algo
    batch = algo.env_runner_group.sample(num_timesteps=50)[c.DEFAULT_MODULE_ID]
    assert len(batch) >= 50
    # Episode ids hold the runner's index in their high bits: runner 1, not the local 0.
    assert (batch[c.EPS_ID] >> 40 == 1).all()


def test_stop_kills_the_runner_actors(local_ray, tiny_config):
    algo = tiny_config().env_runners(num_env_runners=1).build_algo()
    actors = algo.env_runner_group.remote_workers()
    assert ray.get([actor.ping.remote() for actor in actors]) == [True]

    algo.stop()

    assert algo.env_runner_group.remote_workers() == []
    for actor in actors:
        assert actor_dies(actor)


def actor_dies(actor, attempts: int = 300) -> bool:
    """True once a call on `actor` fails because it is dead. `ray.kill` is asynchronous: a
    call made just after it may still be served, so ask again (a deadline, not a timing
    assertion)."""
    for _ in range(attempts):
        try:
            ray.get(actor.ping.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.1)
    return False


def test_a_killed_runner_is_restarted_and_the_iteration_still_trains(local_ray, tiny_config):
    algo = tiny_config().env_runners(num_env_runners=1).build_algo()
    try:
        algo.train()
        ray.kill(algo.env_runner_group.remote_workers()[0], no_restart=True)
        result = algo.train()
        assert algo.env_runner_group.num_restarts == 1
        assert result["env_runners"]["num_env_steps_sampled"] >= 256
    finally:
        algo.stop()


def test_env_error_in_a_remote_runner_reaches_the_user(local_ray, tiny_config):
    tunerl.register_env(
        "tunerl-test-nan-cartpole",
        lambda env_config: gym.wrappers.TransformObservation(
            gym.make("CartPole-v1"), lambda obs: obs * np.nan, None
        ),
    )
    algo = tiny_config(env="tunerl-test-nan-cartpole").env_runners(num_env_runners=1)
    algo = algo.build_algo()
    try:
        with pytest.raises(EnvError, match="non-finite observation"):
            algo.train()
    finally:
        algo.stop()


@pytest.mark.parametrize("num_env_runners", [0, 1, 3])
def test_default_resource_request_reserves_the_learner_and_every_runner(
    tiny_config, num_env_runners
):
    config = tiny_config().env_runners(num_env_runners=num_env_runners)
    for given in (config, config.to_dict()):
        request = PPO.default_resource_request(given)
        assert isinstance(request, tune.PlacementGroupFactory)
        assert len(request.bundles) == 1 + num_env_runners
        assert request.bundles == [{"CPU": 1}] * (1 + num_env_runners)
        assert request.strategy == "PACK"


def test_default_resource_request_follows_the_resource_settings(tiny_config):
    config = (
        tiny_config()
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
        .resources(num_cpus_for_main_process=2, placement_strategy="SPREAD")
        .evaluation(evaluation_interval=1, evaluation_num_env_runners=1)
    )
    request = PPO.default_resource_request(config)
    assert request.bundles == [{"CPU": 2}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]
    assert request.strategy == "SPREAD"
