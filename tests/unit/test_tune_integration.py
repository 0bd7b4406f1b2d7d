"""Algorithms as Tune Trainables: grid search by name, checkpoints Tune writes, and actor
reuse (`reset_config`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray import tune
from ray.tune.registry import get_trainable_cls

from tunerl import PPO
from tunerl.core import columns as c

LRS = [1e-3, 3e-4]


# ------------------------------------------------------- reset_config, without Tune
def test_reset_config_rebuilds_runners_when_the_env_changes(tiny_config, build):
    algo = build(tiny_config(seed=1))
    algo.train()
    algo.reset_config(tiny_config(seed=1, env="Pendulum-v1").to_dict())
    batch = algo.env_runner_group.sample(num_timesteps=20)[c.DEFAULT_MODULE_ID]
    assert batch[c.OBS].shape[1:] == (3,)
    assert batch[c.ACTIONS].dtype == np.float32


def test_reset_config_applies_explore_to_the_runners(tiny_config, build):
    algo = build(tiny_config(seed=1))
    algo.reset_config(tiny_config(seed=1).env_runners(explore=False).to_dict())
    batch = algo.env_runner_group.sample(num_timesteps=200)[c.DEFAULT_MODULE_ID]
    np.testing.assert_array_equal(batch[c.ACTIONS], batch[c.ACTION_DIST_INPUTS].argmax(-1))


def test_trainable_reset_takes_a_new_config(tiny_config, build):
    algo = build(tiny_config(seed=1))
    algo.train()
    assert algo.reset(tiny_config(seed=2, lr=3e-4).to_dict()) is True
    assert algo.config.lr == 3e-4
    assert algo.iteration == 0
    assert algo.train()["training_iteration"] == 1


# ---------------------------------------------------------------------- with Tune
@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def run_config(storage: Path, **kwargs) -> tune.RunConfig:
    return tune.RunConfig(
        stop={"training_iteration": 2}, storage_path=str(storage), verbose=0, **kwargs
    )


@pytest.fixture(scope="module")
def grid_results(local_ray, tiny_config, tmp_path_factory) -> tune.ResultGrid:
    """Two trials found by the registered name, checkpointed every iteration."""
    param_space = tiny_config(seed=1).training(lr=tune.grid_search(LRS))
    tuner = tune.Tuner(
        "PPO",
        param_space=param_space,
        run_config=run_config(
            tmp_path_factory.mktemp("tune"),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
        ),
    )
    return tuner.fit()


def test_grid_search_by_name_runs_every_trial(grid_results):
    assert grid_results.errors == []
    assert len(grid_results) == 2
    assert sorted(result.config["lr"] for result in grid_results) == sorted(LRS)
    for result in grid_results:
        assert result.metrics["training_iteration"] == 2
        assert math.isfinite(result.metrics["env_runners"]["episode_return_mean"])
    frame = grid_results.get_dataframe()
    assert "env_runners/episode_return_mean" in frame.columns
    assert "learners/default_policy/vf_loss" in frame.columns
    assert frame["env_runners/episode_return_mean"].notna().all()


def test_checkpoints_written_by_tune_load_with_from_checkpoint(grid_results):
    for result in grid_results:
        checkpoints = [checkpoint for checkpoint, _ in result.best_checkpoints]
        assert len(checkpoints) == 2
        algo = PPO.from_checkpoint(result.checkpoint.path)
        try:
            assert algo.iteration == 2
            assert algo.config.lr == result.config["lr"]
            assert (
                algo.counters["num_env_steps_sampled_lifetime"]
                == (result.metrics["num_env_steps_sampled_lifetime"])
            )
            assert algo.train()["training_iteration"] == 3
        finally:
            algo.stop()


def test_trials_with_different_lr_train_different_weights(grid_results):
    weights = []
    for result in grid_results:
        algo = PPO.from_checkpoint(result.checkpoint.path)
        weights.append(algo.get_module().get_state()["pi_head.weight"])
        algo.stop()
    assert not torch.equal(weights[0], weights[1])


def test_reuse_actors_runs_trials_one_after_another_in_one_actor(local_ray, tiny_config, tmp_path):
    param_space = tiny_config().debugging(seed=tune.grid_search([1, 2]))
    tuner = tune.Tuner(
        PPO,
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=run_config(tmp_path),
    )
    results = tuner.fit()

    assert results.errors == []
    assert [result.metrics.get("training_iteration") for result in results] == [2, 2]
    assert len({result.metrics["pid"] for result in results}) == 1  # the actor was reused


def test_trainable_name_survives_a_ray_restart(local_ray):
    # Runs last in this module: it restarts the module's Ray.
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False)
    assert get_trainable_cls("PPO") is PPO
