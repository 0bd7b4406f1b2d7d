"""The probe env with a known value, for every registered algorithm (SB3's probe envs): reward
1 every step, truncated (not terminated) after HORIZON steps, one observation. Only
bootstrapping at truncation learns the true value 1 / (1 - gamma); a value target that
treats the time limit as the end would learn the finite sum (4.1 for gamma 0.9, HORIZON 5).
Each family's estimate is read where it lives: V (vf_preds) for actor-critics, max Q for
Q-learning, the critics' Q for SAC; replay algorithms also with n-step returns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.rl_module import UnsupportedSpaceError

from .helpers import ALGORITHM_NAMES, declares, tiny_config

GAMMA = 0.9
HORIZON = 5
TRUE_VALUE = 1 / (1 - GAMMA)
TRUNCATION_AS_END = (1 - GAMMA**HORIZON) / (1 - GAMMA)
# Env steps of training: replay algorithms update once per sampled step; on-policy ones move
# their value target one GAE pass per batch of 500, so they need more batches.
REPLAY_ENV_STEPS = 3000
ON_POLICY_ENV_STEPS = 8000

# Applied where the config declares the field: batches big enough for a steady value target,
# fast value learning, targets that follow within a few hundred updates, one update per
# sampled step, and an entropy temperature too small to add to SAC's soft value.
PROBE_FIELDS = {
    "gamma": GAMMA,
    "lr": 1e-2,
    "critic_lr": 1e-2,
    "actor_lr": 1e-3,
    "initial_alpha": 1e-4,
    "alpha_lr": 1e-9,
    "train_batch_size_per_learner": 500,
    "minibatch_size": 64,
    "num_epochs": 2,
    "min_sample_timesteps_per_iteration": 500,
    "training_intensity": 64.0,
    "tau": 0.1,
    "target_network_update_freq": 1,
}


class ConstantTruncated(gym.Env):
    """Always the same observation, reward 1 per step, never terminated, truncated after
    HORIZON steps (the time limit is not part of the task)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)

    def __init__(self, config: dict | None = None):
        continuous = (config or {}).get("continuous", False)
        self.action_space = (
            gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.ones(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.ones(1, np.float32), 1.0, False, self.steps >= HORIZON, {}


def value_estimate(module, action_space: gym.Space) -> float:
    """The module's estimate of the value of the probe's one state: the mean over the twin
    critics' minimum of Q (SAC, at a few actions), the greedy Q (DQN), or V."""
    obs = torch.ones((1, 1))
    with torch.no_grad():
        if hasattr(module, "q_values"):  # twin critics
            if isinstance(action_space, gym.spaces.Discrete):
                q = module.all_q_values(obs)  # (2, 1, actions)
            else:
                actions = torch.linspace(-0.9, 0.9, 5).reshape(5, 1)
                q = module.q_values(obs.expand(5, 1), actions)  # (2, 5)
            return float(q.min(dim=0).values.mean())
        out = module.forward_train({c.OBS: obs})
        if "q_values" in out:
            return float(out["q_values"].max())
        return float(module.compute_values({c.OBS: obs})[0])


def learns_values(name: str) -> bool:
    """A critic's weight (actor-critic) or a replay buffer (Q-learning): an algorithm without
    either (VPG, REINFORCE) learns no value to probe."""
    return declares(name, "vf_loss_coeff") or declares(name, "replay_buffer_config")


def probe_cases() -> list:
    cases = []
    for name in filter(learns_values, ALGORITHM_NAMES):
        for n_step in (1, 3) if declares(name, "n_step") else (None,):
            for continuous in (False, True):
                case_id = f"{name}-{'box' if continuous else 'discrete'}"
                if n_step is not None:
                    case_id += f"-n_step={n_step}"
                cases.append(pytest.param(name, n_step, continuous, id=case_id))
    return cases


@pytest.mark.parametrize("name, n_step, continuous", probe_cases())
def test_value_of_the_truncated_constant_reward_env_is_one_over_one_minus_gamma(
    name, n_step, continuous, build
):
    overrides = {k: v for k, v in PROBE_FIELDS.items() if declares(name, k)}
    if n_step is not None:
        overrides["n_step"] = n_step
    config = tiny_config(name, env=ConstantTruncated, seed=0, **overrides).environment(
        env_config={"continuous": continuous}
    )
    try:
        algo = build(config)
    except UnsupportedSpaceError:
        pytest.skip(f"{name} does not take this action space")
    env_steps = REPLAY_ENV_STEPS if declares(name, "replay_buffer_config") else ON_POLICY_ENV_STEPS
    while algo.train()[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] < env_steps:
        pass
    value = value_estimate(algo.get_module(), algo.get_module().action_space)
    assert abs(value - TRUNCATION_AS_END) > 2  # the two answers are far apart
    assert value == pytest.approx(TRUE_VALUE, rel=0.05)
