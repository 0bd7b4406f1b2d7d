"""The multi-agent env runner and what the algorithm builds around it: each agent's steps as
its own trajectory (turns, late and early agents, truncation with a final observation), the
policy mapping, parameter sharing, policies_to_train, per-agent and per-module metrics,
checkpoints per module, remote runners."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch

from tunerl.algorithms.dqn import DQNConfig
from tunerl.algorithms.ppo import PPOConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.multi_agent import MultiAgentError
from tunerl.core.rl_module import RLModule
from tunerl.core.rl_module.multi_rl_module import MultiRLModuleSpec
from tunerl.core.rl_module.rl_module import RLModuleSpec
from tunerl.env.multi_agent_env import MultiAgentEnv
from tunerl.env.multi_agent_env_runner import MultiAgentEnvRunner
from tunerl.env.registry import register_env
from tunerl.examples.envs.classes.multi_agent import MultiAgentCartPole
from tunerl.policy.policy import PolicySpec

TINY = {"train_batch_size_per_learner": 128, "minibatch_size": 64, "num_epochs": 1}


class Turns(MultiAgentEnv):
    """Agents "a" and "b" move in turns, a first, for 6 env steps. Each step the mover gets
    +1 and the waiting agent +10, so a's transitions hold 1 + 10 (its own step and b's), b's
    10 + 1; the episode truncates after step 6. The observation is the step count."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = ["a", "b"]
        self.agents = list(self.possible_agents)
        space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.observation_spaces = {"a": space, "b": space}
        self.action_spaces = {"a": gym.spaces.Discrete(2), "b": gym.spaces.Discrete(2)}

    def _obs(self):
        return np.array([self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"a": self._obs()}, {}

    def step(self, action_dict):
        mover = "a" if self.t % 2 == 0 else "b"
        assert set(action_dict) == {mover}, action_dict
        waiting = "b" if mover == "a" else "a"
        self.t += 1
        rewards = {mover: 1.0, waiting: 10.0}
        done = self.t >= 6
        obs = {"a": self._obs(), "b": self._obs()} if done else {waiting: self._obs()}
        return obs, rewards, {"__all__": False}, {"__all__": done}, {}


class Comings(MultiAgentEnv):
    """ "stay" acts every step for 5 steps (reward 1 each); "late" appears at step 2 and acts
    until the end (reward 2 each); "early" acts at steps 0-1 and is terminated after step 1
    with a final observation [9] and reward 5. The episode terminates after step 5."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = ["stay", "late", "early"]
        space = gym.spaces.Box(-1.0, 10.0, (1,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, space)
        self.action_spaces = dict.fromkeys(self.possible_agents, gym.spaces.Discrete(2))

    def reset(self, *, seed=None, options=None):
        self.t = 0
        self.agents = ["stay", "early"]
        obs = np.zeros(1, np.float32)
        return {"stay": obs, "early": obs}, {}

    def step(self, action_dict):
        self.t += 1
        t = np.array([self.t], np.float32)
        obs, rewards, terminateds = {"stay": t}, {"stay": 1.0}, {}
        if "early" in action_dict:
            rewards["early"] = 5.0 if self.t == 2 else 0.0
            if self.t == 2:
                obs["early"] = np.array([9.0], np.float32)
                terminateds["early"] = True
                self.agents.remove("early")
            else:
                obs["early"] = t
        if "late" in action_dict:
            rewards["late"] = 2.0
        if self.t >= 2:
            obs["late"] = t
            if "late" not in self.agents:
                self.agents.append("late")
        terminateds["__all__"] = self.t >= 5
        return obs, rewards, terminateds, {"__all__": False}, {}


def of_agent(rows, agent_id):
    """The rows of one agent."""
    return rows.select_rows(rows[c.AGENT_ID] == agent_id)


def test_turns_close_each_transition_when_the_agent_next_observes(build):
    algo = build(PPOConfig().environment(Turns).training(**TINY).debugging(seed=0))
    runner = algo.env_runner_group.local_env_runner
    assert isinstance(runner, MultiAgentEnvRunner)
    batch = runner.sample(num_episodes=1)
    rows = batch[c.DEFAULT_MODULE_ID]
    assert batch.env_steps == 6 and len(rows) == 6  # every env step one agent acted
    for agent, reward in (("a", 11.0), ("b", 11.0)):
        mine = of_agent(rows, agent)
        assert len(mine) == 3
        assert len(set(mine[c.EPS_ID])) == 1  # one trajectory per agent
        assert mine[c.T].tolist() == [0, 1, 2]
        # Rewards earned while the other moved are summed into the waiting transition.
        assert mine[c.REWARDS][:-1].tolist() == [reward, reward]
        # new_obs of one row is obs of the next (the agent's own chain of observations).
        np.testing.assert_array_equal(mine[c.NEW_OBS][:-1], mine[c.OBS][1:])
        assert mine[c.TRUNCATEDS][-1] and not mine[c.TERMINATEDS].any()
    assert set(of_agent(rows, "a")[c.EPS_ID]) != set(of_agent(rows, "b")[c.EPS_ID])
    metrics = runner.get_metrics()
    assert metrics["episode_returns"] == [66.0]  # a: 3 + 30, b: 3 + 30
    assert metrics["agent_episode_returns"] == [{"a": 33.0, "b": 33.0}]
    assert metrics["num_agent_steps"] == 6


def test_late_and_early_agents_keep_their_final_observation_and_reward(build):
    config = (
        PPOConfig()
        .environment(Comings)
        .multi_agent(
            policies={"p_stay", "p_other"},
            policy_mapping_fn=lambda aid, ep, **kw: "p_stay" if aid == "stay" else "p_other",
        )
        .training(**TINY)
        .debugging(seed=0)
    )
    algo = build(config)
    batch = algo.env_runner_group.local_env_runner.sample(num_episodes=1)
    stay, other = batch["p_stay"], batch["p_other"]
    assert len(stay) == 5 and stay[c.TERMINATEDS].tolist() == [False] * 4 + [True]
    early = of_agent(other, "early")
    assert early[c.REWARDS].tolist() == [0.0, 5.0]
    assert early[c.TERMINATEDS].tolist() == [False, True]
    np.testing.assert_array_equal(early[c.NEW_OBS][-1], [9.0])
    late = of_agent(other, "late")
    assert late[c.OBS][:, 0].tolist() == [2.0, 3.0, 4.0]
    assert late[c.REWARDS].tolist() == [2.0, 2.0, 2.0]
    assert late[c.TERMINATEDS][-1]  # ended by "__all__"
    metrics = algo.env_runner_group.local_env_runner.get_metrics()
    assert metrics["agent_episode_returns"] == [{"stay": 5.0, "early": 5.0, "late": 6.0}]
    assert metrics["module_episode_returns"] == [{"p_stay": 5.0, "p_other": 11.0}]


def test_a_mapping_to_an_unknown_module_names_agent_id_and_known_ids():
    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"q{aid}")
    )
    with pytest.raises(MultiAgentError, match=r"agent 0 to the module id 'q0'.*\['p0', 'p1'\]"):
        config.build_algo()


def test_policies_on_a_single_agent_env_are_refused():
    config = PPOConfig().environment("CartPole-v1").multi_agent(policies={"p0"})
    with pytest.raises(MultiAgentError, match="single-agent"):
        config.build_algo()


def test_policies_to_train_naming_an_unknown_module_is_refused():
    config = (
        PPOConfig()
        .environment(MultiAgentCartPole)
        .multi_agent(policies={"p0", "p1"}, policies_to_train=["p2"])
    )
    with pytest.raises(ValueError, match=r"\['p2'\].*\['p0', 'p1'\]"):
        config.validate()


# Registered so that checkpoints name it (a class is never imported from a checkpoint).
register_env("multi_agent_cartpole", lambda config: MultiAgentCartPole(config))


def two_module_cartpole(**multi_agent):
    return (
        PPOConfig()
        .environment("multi_agent_cartpole", env_config={"num_agents": 2})
        .env_runners(num_envs_per_env_runner=2)
        .multi_agent(
            policies={"p0", "p1"},
            policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}",
            **multi_agent,
        )
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .training(**TINY)
        .debugging(seed=0)
    )


def test_two_modules_train_and_report_per_agent_and_per_module(build):
    algo = build(two_module_cartpole())
    result = algo.train()
    runners = result[m.ENV_RUNNER_RESULTS]
    assert set(result[m.LEARNER_RESULTS]) == {"p0", "p1"}
    assert set(runners[m.AGENT_EPISODE_RETURNS_MEAN]) == {"0", "1"}
    assert set(runners[m.MODULE_EPISODE_RETURNS_MEAN]) == {"p0", "p1"}
    # The episode return is the sum over agents; each agent's is its module's here.
    per_module = runners[m.MODULE_EPISODE_RETURNS_MEAN]
    assert math.isclose(runners[m.EPISODE_RETURN_MEAN], per_module["p0"] + per_module["p1"])
    module_steps = result[m.NUM_MODULE_STEPS_SAMPLED_LIFETIME]
    assert sum(module_steps.values()) == result[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME]
    assert result[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME] > result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]


def test_policies_to_train_freezes_the_others_in_learner_and_runners(build):
    algo = build(two_module_cartpole(policies_to_train=["p0"]).env_runners(num_env_runners=0))
    frozen = {k: v.clone() for k, v in algo.get_module("p1").get_state().items()}
    trained = {k: v.clone() for k, v in algo.get_module("p0").get_state().items()}
    result = algo.train()
    assert set(result[m.LEARNER_RESULTS]) == {"p0"}
    after = algo.get_module("p1").get_state()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(not torch.equal(trained[k], v) for k, v in algo.get_module("p0").get_state().items())


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_frozen_snapshot_set_by_the_user_reaches_remote_runners_and_stays(build, ray_local):
    algo = build(two_module_cartpole(policies_to_train=["p0"]).env_runners(num_env_runners=1))
    algo.train()
    snapshot = algo.get_weights(["p0"])["p0"]
    algo.set_weights({"p1": snapshot})
    algo.train()  # syncs only p0 now
    remote = algo.env_runner_group.foreach_env_runner(lambda r: r.get_weights()["p1"])[0]
    assert all(torch.equal(remote[k], snapshot[k]) for k in snapshot)


def test_parameter_sharing_without_policies_trains_one_module_on_every_agent(build):
    config = (
        PPOConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 3})
        .training(**TINY)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )
    algo = build(config)
    batch = algo.env_runner_group.local_env_runner.sample(num_timesteps=50)
    rows = batch[c.DEFAULT_MODULE_ID]
    assert set(rows[c.AGENT_ID]) == {"0", "1", "2"}
    assert len(rows) > 50
    assert set(algo.train()[m.LEARNER_RESULTS]) == {c.DEFAULT_MODULE_ID}


def test_agent_steps_count_the_batch_with_count_steps_by_agent_steps(build):
    algo = build(two_module_cartpole(count_steps_by="agent_steps"))
    batch = algo.env_runner_group.local_env_runner.sample(num_timesteps=40)
    assert batch.agent_steps() >= 40
    assert batch.env_steps < 40


def test_per_module_specs_and_policy_spec_overrides(build):
    config = (
        two_module_cartpole()
        .multi_agent(
            policies={
                "p0": PolicySpec(config={"model_config": {"fcnet_hiddens": [8]}}),
                "p1": None,
            },
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    "p0": RLModuleSpec(),
                    "p1": RLModuleSpec(model_config={"fcnet_hiddens": [24]}),
                }
            )
        )
    )
    algo = build(config)
    widths = {
        mid: algo.get_module(mid).spec().model_config["fcnet_hiddens"] for mid in ("p0", "p1")
    }
    assert widths == {"p0": [8], "p1": [24]}


def test_checkpoint_has_a_folder_per_module_and_restores(build, tmp_path):
    algo = build(two_module_cartpole())
    algo.train()
    path = algo.save_to_path(tmp_path / "ckpt")
    modules = tmp_path / "ckpt" / "learner_group" / "learner" / "rl_module"
    assert sorted(p.name for p in modules.iterdir()) == ["p0", "p1"]
    p1 = RLModule.from_checkpoint(modules / "p1")
    expected = algo.get_module("p1").get_state()
    assert all(torch.equal(p1.get_state()[k], expected[k]) for k in expected)
    with pytest.raises(Exception, match="policy_mapping_fn"):
        type(algo).from_checkpoint(path)
    restored = type(algo).from_checkpoint(
        path, config_overrides={"policy_mapping_fn": lambda aid, ep, **kw: f"p{aid}"}
    )
    try:
        got = restored.get_module("p0").get_state()
        assert all(torch.equal(got[k], v) for k, v in algo.get_module("p0").get_state().items())
        assert restored.train()[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] > 128
    finally:
        restored.stop()


def test_dqn_trains_two_modules_from_their_own_replay(build):
    config = (
        DQNConfig()
        .environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}")
        .training(num_steps_sampled_before_learning_starts=32, train_batch_size_per_learner=32)
        .reporting(min_sample_timesteps_per_iteration=64)
        .debugging(seed=0)
    )
    algo = build(config)
    result = algo.train()
    assert set(result[m.LEARNER_RESULTS]) == {"p0", "p1"}
    assert set(algo.replay.buffers) == {"p0", "p1"}


def test_a_policy_spec_config_overrides_training_fields_for_its_module(build):
    config = two_module_cartpole().multi_agent(
        policies={"p0": PolicySpec(), "p1": PolicySpec(config={"lr": 1e-9, "clip_param": 0.05})}
    )
    algo = build(config)
    assert algo.learner.get_optimizer("p1").param_groups[0]["lr"] == 1e-9
    assert algo.learner.get_optimizer("p0").param_groups[0]["lr"] == algo.config.lr
    result = algo.train()[m.LEARNER_RESULTS]
    assert result["p1"][m.CURR_LR] == 1e-9 and result["p0"][m.CURR_LR] == algo.config.lr
    with algo.learner.module_scope("p1"):
        assert algo.learner.config.clip_param == 0.05
    assert algo.learner.config is algo.config  # outside a module's scope: the algorithm's


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train_batch_size_per_learner": 64}, "is shared by all modules"),
        ({"num_env_runners": 2}, "is shared by all modules"),
        ({"lrr": 1.0}, "is not a field of this config; a module may override model_config"),
        ({"lr": -1.0}, r"config\['lr'\]=-1.0"),
    ],
)
def test_a_policy_spec_config_that_cannot_apply_per_module_is_refused(override, message):
    config = two_module_cartpole().multi_agent(
        policies={"p0": None, "p1": PolicySpec(config=override)}
    )
    with pytest.raises(ValueError, match=message):
        config.validate()


class FailsOnce(MultiAgentEnv):
    """Two agents, 10-step episodes; while `armed`, a step 4 raises (and disarms)."""

    armed = False

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = self.agents = ["a", "b"]
        space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, space)
        self.action_spaces = dict.fromkeys(self.possible_agents, gym.spaces.Discrete(2))

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {}

    def step(self, action_dict):
        self.t += 1
        if FailsOnce.armed and self.t == 4:
            FailsOnce.armed = False
            raise RuntimeError("simulator crashed")
        obs = {a: np.array([self.t], np.float32) for a in self.agents}
        done = self.t >= 10
        return obs, dict.fromkeys(self.agents, 1.0), {"__all__": done}, {"__all__": False}, {}


def test_a_sub_env_that_raises_is_recreated_and_its_episode_not_counted(build):
    config = (
        PPOConfig()
        .environment(FailsOnce)
        .env_runners(num_envs_per_env_runner=1)
        .fault_tolerance(restart_failed_sub_environments=True)
        .training(**TINY)
        .debugging(seed=0)
    )
    algo = build(config)
    runner = algo.env_runner_group.local_env_runner
    FailsOnce.armed = True
    batch = runner.sample(num_timesteps=25)
    assert runner.num_sub_env_restarts == 1
    metrics = runner.get_metrics()
    assert metrics["episode_returns"] == [20.0, 20.0]  # the lost episode is not counted
    # 25 env steps: 3 of the lost episode (kept, a piece that ends there), 10 + 10, 2; the
    # failed step is not one.
    assert batch.env_steps == metrics["num_env_steps"] == 25
    rows = batch[c.DEFAULT_MODULE_ID]
    assert len(of_agent(rows, "a")) == len(of_agent(rows, "b")) == 25
    strict = build(config.copy().fault_tolerance(restart_failed_sub_environments=False))
    FailsOnce.armed = True
    with pytest.raises(RuntimeError, match="simulator crashed"):
        strict.env_runner_group.local_env_runner.sample(num_timesteps=5)


def test_a_module_of_one_run_starts_another_as_its_frozen_opponent(build, tmp_path):
    first = build(two_module_cartpole())
    first.train()
    first.save_to_path(tmp_path / "first")
    trained_p0 = tmp_path / "first" / "learner_group" / "learner" / "rl_module" / "p0"
    config = two_module_cartpole(policies_to_train=["p0"]).rl_module(
        rl_module_spec=MultiRLModuleSpec(
            rl_module_specs={"p0": RLModuleSpec(), "p1": RLModuleSpec(load_state_path=trained_p0)}
        )
    )
    second = build(config)
    expected = first.get_module("p0").get_state()
    for _ in range(2):
        got = second.get_module("p1").get_state()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        second.train()  # p1 is not trained: it stays the first run's p0
    runner_p1 = second.env_runner_group.local_env_runner.module["p1"].get_state()
    assert all(torch.equal(runner_p1[k], expected[k]) for k in expected)


def test_a_load_state_path_that_does_not_fit_names_module_and_spaces(build, tmp_path):
    pendulum = build(PPOConfig().environment("Pendulum-v1").training(**TINY))
    pendulum.save_to_path(tmp_path / "pendulum")
    path = tmp_path / "pendulum" / "learner_group" / "learner" / "rl_module" / "default_policy"
    config = two_module_cartpole().rl_module(
        rl_module_spec=MultiRLModuleSpec(
            rl_module_specs={"p0": RLModuleSpec(), "p1": RLModuleSpec(load_state_path=path)}
        )
    )
    with pytest.raises(Exception, match=r"module 'p1'.*do not fit.*Box"):
        config.build_algo()


def test_count_steps_by_agent_steps_sizes_the_train_batch_in_agent_steps(build):
    algo = build(two_module_cartpole(count_steps_by="agent_steps"))
    batch = algo.env_runner_group.sample(num_timesteps=TINY["train_batch_size_per_learner"])
    assert batch.agent_steps() >= TINY["train_batch_size_per_learner"]
    assert batch.env_steps < TINY["train_batch_size_per_learner"]
