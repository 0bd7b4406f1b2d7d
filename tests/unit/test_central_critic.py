"""The centralised critic (MAPPO): the critic reads the global state (env.state(), else every
agent's latest observation), the runner records `state`/`new_state`, GAE bootstraps on
`new_state`, and PPO trains such modules on a real PettingZoo env."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tunerl.algorithms.ppo import PPOConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.core.postprocessing import add_gae
from tunerl.core.rl_module import DefaultRLModule, RLModule
from tunerl.core.rl_module.central_critic import (
    GLOBAL_STATE_DIM,
    CentralCriticRLModule,
    GlobalState,
)
from tunerl.core.rl_module.rl_module import RLModuleSpec
from tunerl.core.sample_batch import SampleBatch
from tunerl.examples.envs.classes.multi_agent import LateAndEarlyAgentsEnv, MultiAgentCartPole

TINY = {"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1}


class StatefulLateAndEarly(LateAndEarlyAgentsEnv):
    """LateAndEarlyAgentsEnv with a global state of its own: [10 * steps taken]."""

    state_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)

    def state(self) -> np.ndarray:
        return np.array([10.0 * self.steps], np.float32)


def central_config(env, **training):
    return (
        PPOConfig()
        .environment(env)
        .training(central_critic=True, **{**TINY, **training})
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .debugging(seed=0)
    )


def rows_of(batch, agent_id):
    rows = batch[c.DEFAULT_MODULE_ID]
    return rows.select_rows(rows[c.AGENT_ID] == agent_id)


def test_the_critic_reads_the_state_and_the_policy_the_observation():
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    module = CentralCriticRLModule(
        obs_space, gym.spaces.Discrete(2), {"fcnet_hiddens": [16], GLOBAL_STATE_DIM: 7}
    )
    assert module.vf_encoder.layers[0].in_features == 7
    assert module.pi_encoder.layers[0].in_features == 3
    obs, state = torch.zeros(5, 3), torch.randn(5, 7)
    out = module.forward_train({c.OBS: obs, c.STATE: state})
    assert out[c.ACTION_DIST_INPUTS].shape == (5, 2) and out[c.VF_PREDS].shape == (5,)
    # The value changes with the state alone; acting needs no state.
    other = module.compute_values({c.OBS: obs, c.STATE: state + 1.0})
    assert not torch.allclose(out[c.VF_PREDS].detach(), other)
    assert set(module.forward_inference({c.OBS: obs})) == {c.ACTION_DIST_INPUTS}


def test_a_missing_or_shared_state_size_is_refused():
    spaces = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="global_state_dim"):
        CentralCriticRLModule(*spaces)
    with pytest.raises(ValueError, match="vf_share_layers"):
        CentralCriticRLModule(*spaces, {GLOBAL_STATE_DIM: 4, "vf_share_layers": True})


def test_fallback_state_is_every_agents_latest_observation_zeros_when_absent(build):
    algo = build(central_config(LateAndEarlyAgentsEnv))
    runner = algo.env_runner_group.local_env_runner
    batch = runner.sample(num_episodes=1)
    stayer = rows_of(batch, "stayer")
    # Agents stayer, leaver, joiner: the joiner observes from step 2, the leaver's final
    # observation (3) counts in the step it leaves and is zero after it.
    states = [[0, 0, 0], [1, 1, 0], [2, 2, 2], [3, 3, 3], [4, 0, 4], [5, 0, 5], [6, 0, 6]]
    np.testing.assert_array_equal(stayer[c.STATE], states[:-1])
    np.testing.assert_array_equal(stayer[c.NEW_STATE], states[1:])
    joiner = rows_of(batch, "joiner")
    np.testing.assert_array_equal(joiner[c.STATE], states[2:-1])
    leaver = rows_of(batch, "leaver")
    np.testing.assert_array_equal(leaver[c.NEW_STATE][-1], [3, 3, 3])
    assert algo.get_module(c.DEFAULT_MODULE_ID).global_state_dim == 3


def test_env_state_is_used_when_the_env_has_one(build):
    algo = build(central_config(StatefulLateAndEarly))
    batch = algo.env_runner_group.local_env_runner.sample(num_episodes=1)
    stayer = rows_of(batch, "stayer")
    np.testing.assert_array_equal(stayer[c.STATE][:, 0], 10.0 * np.arange(6))
    np.testing.assert_array_equal(stayer[c.NEW_STATE][:, 0], 10.0 * np.arange(1, 7))
    assert algo.get_module(c.DEFAULT_MODULE_ID).global_state_dim == 1


def test_state_tracks_multi_agent_cartpole_observations():
    env = MultiAgentCartPole({"num_agents": 2})
    tracker = GlobalState(env)
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(tracker.reset(obs), np.concatenate([obs[0], obs[1]]))
    obs, _, terminateds, truncateds, _ = env.step({0: 0, 1: 1})
    np.testing.assert_allclose(
        tracker.step(obs, terminateds, truncateds), np.concatenate([obs[0], obs[1]])
    )


def test_value_targets_bootstrap_on_new_state_at_fragment_ends():
    # No hidden layers: V(s) = w . s + b with w = 1 and b = 0, so V(s) = sum(s).
    module = CentralCriticRLModule(
        gym.spaces.Box(-10.0, 10.0, (1,), np.float32),
        gym.spaces.Discrete(2),
        {"fcnet_hiddens": [], GLOBAL_STATE_DIM: 2},
    )
    with torch.no_grad():
        module.vf_head.weight.fill_(1.0)
        module.vf_head.bias.zero_()
    gamma, lambda_ = 0.9, 0.5
    batch = SampleBatch(
        {
            c.OBS: np.array([[0.0], [1.0], [2.0]], np.float32),
            c.NEW_OBS: np.array([[1.0], [2.0], [9.0]], np.float32),
            c.STATE: np.array([[1, 1], [2, 2], [3, 3]], np.float32),
            c.NEW_STATE: np.array([[2, 2], [3, 3], [4, 5]], np.float32),
            c.REWARDS: np.array([1.0, 2.0, 3.0], np.float32),
            c.VF_PREDS: np.array([2.0, 4.0, 6.0], np.float32),  # V of each state
            c.TERMINATEDS: np.zeros(3, bool),
            c.TRUNCATEDS: np.zeros(3, bool),
            c.EPS_ID: np.zeros(3, np.int64),
            c.T: np.arange(3),
        }
    )
    add_gae(batch, module, gamma, lambda_)
    # The fragment ends after row 2: its next value is V(new_state) = 4 + 5 = 9.
    deltas = [1 + gamma * 4 - 2, 2 + gamma * 6 - 4, 3 + gamma * 9 - 6]
    a2 = deltas[2]
    a1 = deltas[1] + gamma * lambda_ * a2
    a0 = deltas[0] + gamma * lambda_ * a1
    np.testing.assert_allclose(batch[c.ADVANTAGES], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(batch[c.VALUE_TARGETS], [a0 + 2, a1 + 4, a2 + 6], rtol=1e-6)
    del batch[c.NEW_STATE]
    with pytest.raises(KeyError, match="new_state"):
        add_gae(batch, module, gamma, lambda_)


def test_central_critic_needs_a_multi_agent_env_and_a_module_that_reads_the_state():
    with pytest.raises(ConfigError, match="MultiAgentEnv"):
        central_config("CartPole-v1").build_algo()
    config = central_config(LateAndEarlyAgentsEnv).rl_module(
        rl_module_spec=RLModuleSpec(module_class=DefaultRLModule)
    )
    with pytest.raises(ConfigError, match="uses_global_state"):
        config.build_algo()


def test_the_module_class_alone_gives_mappo_and_its_checkpoint_loads(build, tmp_path):
    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=CentralCriticRLModule))
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .training(**TINY)
        .debugging(seed=0)
    )
    algo = build(config)
    result = algo.train()
    assert set(result[m.LEARNER_RESULTS]) == {"p0", "p1"}
    module = algo.get_module("p1")
    assert module.vf_encoder.layers[0].in_features == 8  # two CartPole observations
    path = module.save_to_path(tmp_path / "p1")
    loaded = RLModule.from_checkpoint(path)
    assert isinstance(loaded, CentralCriticRLModule) and loaded.global_state_dim == 8
    assert all(torch.equal(loaded.get_state()[k], v) for k, v in module.get_state().items())


def test_mappo_trains_on_simple_spread(build):
    simple_spread_v3 = pytest.importorskip("mpe2.simple_spread_v3")
    from tunerl.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    def simple_spread(config):
        return ParallelPettingZooEnv(
            simple_spread_v3.parallel_env(N=3, local_ratio=0.5, max_cycles=25)
        )

    algo = build(
        central_config(simple_spread, train_batch_size_per_learner=200, minibatch_size=100)
    )
    assert algo.get_module(c.DEFAULT_MODULE_ID).global_state_dim == 54
    for _ in range(2):
        result = algo.train()
    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    assert all(math.isfinite(value) for value in stats.values())
    assert math.isfinite(result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN])
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] >= 400
