"""Probe environments with known answers (as in Stable-Baselines3's tests): they catch
silent math bugs in the value targets and the policy gradient. The truncated constant-reward
env (V = 1 / (1 - gamma)) runs for every registered algorithm in tests/contract/test_probe.py."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl.core import columns as c

GAMMA = 0.9
HORIZON = 5


class TimeTerminated(gym.Env):
    """Reward 1 per step, terminated after HORIZON steps; the observation is the step index
    (an episode that ends is a different state at each step). The value of the first state
    is sum_{k < HORIZON} gamma^k = (1 - gamma^HORIZON) / (1 - gamma)."""

    observation_space = gym.spaces.Discrete(HORIZON)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return 0, {}

    def step(self, action):
        self.steps += 1
        terminated = self.steps >= HORIZON
        return (0 if terminated else self.steps), 1.0, terminated, False, {}


class Identity(gym.Env):
    """One step: the observation names the action that is rewarded (reward 1, else 0)."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(2))
        return self.target, {}

    def step(self, action):
        return self.target, float(action == self.target), True, False, {}


def probe_config(tiny_config, env, **training):
    settings = {
        "gamma": GAMMA,
        "train_batch_size_per_learner": 500,
        "minibatch_size": 64,
        "num_epochs": 2,
        "lr": 1e-2,
        **training,
    }
    return tiny_config(env=env, seed=0, **settings).env_runners(num_envs_per_env_runner=4)


def values(algo, obs) -> np.ndarray:
    return algo.get_module().compute_values({c.OBS: torch.as_tensor(obs)}).numpy()


def test_termination_is_not_bootstrapped_value_is_the_finite_sum(tiny_config, build):
    algo = build(probe_config(tiny_config, TimeTerminated))
    for _ in range(10):
        algo.train()
    expected = [(1 - GAMMA ** (HORIZON - t)) / (1 - GAMMA) for t in range(HORIZON)]
    assert expected[0] == pytest.approx(4.0951)
    np.testing.assert_allclose(values(algo, np.arange(HORIZON)), expected, rtol=0.05)


def test_identity_env_is_solved(tiny_config, build):
    algo = build(probe_config(tiny_config, Identity, gamma=0.99))
    for _ in range(8):
        result = algo.train()
    assert result["env_runners"]["episode_return_mean"] >= 0.95
    out = algo.get_module().forward_inference({c.OBS: torch.tensor([0, 1])})
    assert out[c.ACTION_DIST_INPUTS].argmax(-1).tolist() == [0, 1]
