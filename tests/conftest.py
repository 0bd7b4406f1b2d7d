"""Shared fixtures: tiny PPO configs, algorithms that are stopped after the test, and a
per-session directory for the logdir every Trainable creates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import ray.tune.trainable.trainable as trainable_module
import torch

from tunerl import Algorithm, PPOConfig
from tunerl.core.rl_module import DefaultRLModule

TINY_MODEL = {"fcnet_hiddens": [16]}


def tiny_ppo_config(env: Any = "CartPole-v1", seed: int | None = 0, **training: Any) -> PPOConfig:
    """A PPOConfig that trains one iteration in well under a second: 256 env steps over two
    sub-envs, minibatches of 64, one epoch, one hidden layer of 16 units."""
    settings = {
        "train_batch_size_per_learner": 256,
        "minibatch_size": 64,
        "num_epochs": 1,
        "lr": 1e-3,
        **training,
    }
    return (
        PPOConfig()
        .environment(env)
        .env_runners(num_envs_per_env_runner=2)
        .training(**settings)
        .rl_module(model_config=dict(TINY_MODEL))
        .debugging(seed=seed)
    )


@pytest.fixture(autouse=True, scope="session")
def _trainable_logdirs_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Trainable built outside Tune makes a logdir under ~/ray_results; keep those in the
    session's temporary directory instead."""
    with pytest.MonkeyPatch.context() as patch:
        logdir_root = tmp_path_factory.mktemp("ray_results")
        patch.setattr(trainable_module, "DEFAULT_STORAGE_PATH", str(logdir_root))
        yield


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., PPOConfig]:
    return tiny_ppo_config


@pytest.fixture
def build() -> Iterator[Callable[[Any], Algorithm]]:
    """`build(config)` builds an algorithm that is stopped when the test ends."""
    algos: list[Algorithm] = []

    def _build(config: Any) -> Algorithm:
        algo = config.build_algo()
        algos.append(algo)
        return algo

    yield _build
    for algo in algos:
        algo.stop()


@pytest.fixture
def discrete_module() -> DefaultRLModule:
    """A seeded default module: 3 observations, 2 discrete actions, one hidden layer of 16."""
    torch.manual_seed(0)
    return DefaultRLModule(
        gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
        gym.spaces.Discrete(2),
        model_config={"fcnet_hiddens": [16]},
    )
