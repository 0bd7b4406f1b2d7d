"""Environments (ids, registered creators, Env classes, continuous actions), the errors a
broken env gets, evaluation, and the keys of a result."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import tunerl
from tunerl import EnvError
from tunerl.core import columns as c
from tunerl.core.rl_module import UnsupportedSpaceError


class Corridor(gym.Env):
    """Reward 1 per step, truncated after `env_config["length"]` steps. Records the
    EnvContext it was built with."""

    observation_space = gym.spaces.Box(0.0, 1e4, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    built_with: list = []

    def __init__(self, env_config=None):
        env_config = env_config or {}
        self.length = env_config.get("length", 3)
        Corridor.built_with.append(env_config)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        return (np.array([self.steps], np.float32), 1.0, False, self.steps >= self.length, {})


class BrokenObservation(gym.Env):
    """Returns `self.bad` as observation on the second step."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, env_config=None):
        env_config = env_config or {}
        size = env_config.get("size", 3)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (size,), np.float32)
        self.bad = np.zeros(size, np.float32)
        self.bad[env_config.get("index", 1)] = env_config.get("value", np.nan)
        self.reward = env_config.get("reward", 0.0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        self.steps += 1
        obs = self.bad if self.steps == 2 else np.zeros_like(self.bad)
        reward = self.reward if self.steps == 2 else 0.0
        return obs, reward, False, self.steps >= 10, {}


class TextObservation(gym.Env):
    observation_space = gym.spaces.Text(8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "tunerl", {}

    def step(self, action):
        return "tunerl", 0.0, True, False, {}


class RecordActions(gym.ActionWrapper):
    """Pendulum that records every action it is given."""

    seen: list = []

    def action(self, action):
        RecordActions.seen.append(np.array(action, copy=True))
        return action


# ------------------------------------------------------------------------- env ids
def test_unknown_env_id_names_the_closest_match(tiny_config, build):
    with pytest.raises(EnvError, match="Unknown env 'CartPol-v1'") as error:
        build(tiny_config(env="CartPol-v1"))
    assert "Did you mean 'CartPole-v1'" in str(error.value)


def test_registered_creator_receives_env_config(tiny_config, build):
    Corridor.built_with.clear()
    tunerl.register_env("tunerl-test-corridor", lambda env_config: Corridor(env_config))
    config = tiny_config(env="tunerl-test-corridor").environment(env_config={"length": 7})
    result = build(config).train()

    assert result["env_runners"]["episode_len_mean"] == 7
    assert result["env_runners"]["episode_return_mean"] == 7
    runner_contexts = [
        ctx for ctx in Corridor.built_with if isinstance(ctx, dict) and hasattr(ctx, "vector_index")
    ]
    assert {ctx.vector_index for ctx in runner_contexts} == {0, 1}
    assert all(ctx["length"] == 7 and ctx.worker_index == 0 for ctx in runner_contexts)


def test_env_class_is_built_with_env_config(tiny_config, build):
    config = tiny_config(env=Corridor).environment(env_config={"length": 4})
    result = build(config).train()
    assert result["env_runners"]["episode_len_mean"] == 4
    assert result["env_runners"]["num_episodes"] > 0


def test_register_env_refuses_a_non_callable():
    with pytest.raises(TypeError, match="callable"):
        tunerl.register_env("tunerl-test-not-callable", "CartPole-v1")


def test_creator_that_returns_no_env_is_refused(tiny_config, build):
    tunerl.register_env("tunerl-test-returns-none", lambda env_config: None)
    with pytest.raises(EnvError, match="not a gym.Env"):
        build(tiny_config(env="tunerl-test-returns-none"))


# ------------------------------------------------------------------- broken envs
def test_nan_observation_raises_env_error_with_a_short_message(tiny_config, build):
    algo = build(tiny_config(env=BrokenObservation))
    with pytest.raises(EnvError, match="non-finite observation") as error:
        algo.train()
    assert len(str(error.value)) < 300


def test_nan_in_a_large_observation_still_gives_a_short_message(tiny_config, build):
    algo = build(tiny_config(env=BrokenObservation).environment(env_config={"size": 1000}))
    with pytest.raises(EnvError, match="non-finite observation") as error:
        algo.train()
    assert len(str(error.value)) < 300


def test_observation_outside_its_box_raises_env_error_naming_element_and_bounds(tiny_config, build):
    config = tiny_config(env=BrokenObservation).environment(
        env_config={"size": 4, "index": 2, "value": 5.0}
    )
    with pytest.raises(EnvError, match="outside its observation_space") as error:
        build(config).train()
    message = str(error.value)
    assert "element (2,) = 5" in message
    assert "allowed [-1, 1]" in message
    assert "disable_env_checking=True" in message
    assert len(message) < 400


def test_disable_env_checking_lets_an_out_of_bounds_env_run(tiny_config, build):
    config = tiny_config(env=BrokenObservation).environment(
        env_config={"index": 0, "value": 5.0}, disable_env_checking=True
    )
    result = build(config).train()
    assert result["num_env_steps_sampled_lifetime"] >= 256


def test_non_finite_reward_raises_env_error(tiny_config, build):
    config = tiny_config(env=BrokenObservation).environment(
        env_config={"value": 0.0, "reward": math.inf}
    )
    with pytest.raises(EnvError, match="non-finite reward"):
        build(config).train()


def test_an_unreadable_observation_space_is_refused_at_build_naming_algorithm_and_space(
    tiny_config, build
):
    with pytest.raises(UnsupportedSpaceError) as error:
        build(tiny_config(env=TextObservation))
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert message.startswith("PPO cannot train on env")
    assert "Text(" in message and "Dict or Tuple" in message and "FlattenObservation" in message


# ------------------------------------------------------------------ continuous actions
@pytest.mark.parametrize("normalize_actions", [True, False])
def test_continuous_actions_reach_the_env_within_bounds(tiny_config, build, normalize_actions):
    RecordActions.seen.clear()
    tunerl.register_env(
        "tunerl-test-pendulum", lambda env_config: RecordActions(gym.make("Pendulum-v1"))
    )
    config = tiny_config(env="tunerl-test-pendulum", train_batch_size_per_learner=400)
    config.environment(normalize_actions=normalize_actions)
    algo = build(config)
    result = algo.train()

    assert result["env_runners"]["num_episodes"] == 2
    actions = np.stack(RecordActions.seen)
    assert len(actions) >= 400 and actions.shape[1:] == (1,)
    assert actions.min() >= -2.0 and actions.max() <= 2.0
    # The policy does reach the bounds' neighbourhood, so the check is not vacuous.
    assert np.abs(actions).max() > 0.5
    assert math.isfinite(result["learners"][c.DEFAULT_MODULE_ID]["policy_loss"])


# ------------------------------------------------------------------------ evaluation
def test_evaluation_by_episodes_runs_exactly_that_many(tiny_config, build):
    config = (
        tiny_config()
        .env_runners(num_envs_per_env_runner=3)
        .evaluation(
            evaluation_interval=1, evaluation_duration_unit="episodes", evaluation_duration=7
        )
    )
    algo = build(config)
    for _ in range(2):
        result = algo.train()
        evaluation = result["evaluation"]["env_runners"]
        assert evaluation["num_episodes"] == 7
        assert evaluation["episode_return_mean"] == evaluation["episode_len_mean"] > 0


def test_evaluation_by_timesteps(tiny_config, build):
    config = tiny_config().evaluation(
        evaluation_interval=2, evaluation_duration_unit="timesteps", evaluation_duration=50
    )
    algo = build(config)
    assert "evaluation" not in algo.train()
    evaluation = algo.train()["evaluation"]["env_runners"]
    assert 50 <= evaluation["num_env_steps_sampled"] < 50 + 2


def test_evaluate_can_be_called_without_an_evaluation_interval(tiny_config, build):
    algo = build(tiny_config().evaluation(evaluation_duration=3))
    assert algo.evaluate()["env_runners"]["num_episodes"] == 3


# --------------------------------------------------------------------- result keys
def test_result_has_the_documented_keys(tiny_config, build):
    algo = build(tiny_config())
    first = algo.train()
    result = algo.train()

    for key in (
        "episode_return_mean",
        "episode_return_max",
        "episode_return_min",
        "episode_len_mean",
        "num_episodes",
        "num_env_steps_sampled",
    ):
        assert key in result["env_runners"], key
    stats = result["learners"][c.DEFAULT_MODULE_ID]
    for key in (
        "policy_loss",
        "vf_loss",
        "entropy",
        "mean_kl_loss",
        "curr_kl_coeff",
        "vf_explained_var",
        "grad_norm",
        "curr_lr",
    ):
        assert key in stats and math.isfinite(stats[key]), key
    for key in ("sample", "learn", "sync"):
        assert result["timers"][key] >= 0, key
    for key in (
        "env_steps_per_s",
        "num_env_steps_sampled_lifetime",
        "num_env_steps_trained_lifetime",
        "num_episodes_lifetime",
    ):
        assert key in result, key

    # The counters add up the per-iteration numbers.
    runners = [first["env_runners"], result["env_runners"]]
    assert result["num_env_steps_sampled_lifetime"] == sum(
        r["num_env_steps_sampled"] for r in runners
    )
    assert result["num_episodes_lifetime"] == sum(r["num_episodes"] for r in runners)
    assert result["num_env_steps_trained_lifetime"] == result["num_env_steps_sampled_lifetime"]
    assert first["num_env_steps_sampled_lifetime"] >= 256
    # CartPole pays 1 per step.
    assert result["env_runners"]["episode_return_mean"] == result["env_runners"]["episode_len_mean"]


def test_episode_statistics_before_any_episode_ends_are_nan(tiny_config, build):
    config = tiny_config(env=Corridor).environment(env_config={"length": 1000})
    result = build(config).train()
    assert result["env_runners"]["num_episodes"] == 0
    assert math.isnan(result["env_runners"]["episode_return_mean"])


def test_min_sample_timesteps_per_iteration_repeats_training_steps(tiny_config, build):
    algo = build(tiny_config().reporting(min_sample_timesteps_per_iteration=600))
    result = algo.train()
    assert result["env_runners"]["num_env_steps_sampled"] >= 600
    assert result["num_env_steps_trained_lifetime"] == result["num_env_steps_sampled_lifetime"]


class RecordingCallbacks(tunerl.Callbacks):
    def on_algorithm_init(self, *, algorithm, **kwargs):
        self.calls = ["init"]

    def on_sample_end(self, *, algorithm, samples, **kwargs):
        self.calls.append(("sample", len(samples)))

    def on_train_result(self, *, algorithm, result, **kwargs):
        self.calls.append("result")
        result["custom_metric"] = 42

    def on_checkpoint_loaded(self, *, algorithm, **kwargs):
        self.calls.append("loaded")


def test_callbacks_are_called_and_may_add_result_keys(tiny_config, build, tmp_path):
    algo = build(tiny_config().callbacks(RecordingCallbacks))
    result = algo.train()
    assert result["custom_metric"] == 42
    assert algo.callbacks.calls[0] == "init"
    assert algo.callbacks.calls[1][0] == "sample" and algo.callbacks.calls[1][1] >= 256
    assert algo.callbacks.calls[2] == "result"
    algo.restore_from_path(algo.save_to_path(tmp_path / "checkpoint"))
    assert algo.callbacks.calls[-1] == "loaded"
