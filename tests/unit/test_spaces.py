"""Every space an algorithm takes gets legal actions and readable observations; every space
it does not take is refused by build_algo() with the algorithm, the space and what is
supported. Tiny envs record what they receive and are checked with `space.contains`."""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import tunerl
from tunerl import DQNConfig, PPOConfig, SACConfig
from tunerl.algorithms.appo import APPOConfig
from tunerl.algorithms.impala import IMPALAConfig
from tunerl.core import columns as c
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.env_runner import EnvActions
from tunerl.core.rl_module import (
    DefaultRLModule,
    RLModule,
    UnsupportedSpaceError,
    flatten_observations,
)
from tunerl.core.spaces_json import space_from_json, space_to_json

Box, Discrete, MultiDiscrete, MultiBinary = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
)
INF = np.inf
EPISODE_STEPS = 8


class SpaceEnv(gym.Env):
    """Random observations of `env_config["observation_space"]`, episodes of 8 steps,
    reward 0. Records every action it is given and every observation it returns."""

    actions: list = []
    observations: list = []

    def __init__(self, env_config: dict):
        self.observation_space = space_from_json(env_config["observation_space"])
        self.action_space = space_from_json(env_config["action_space"])

    def _observe(self) -> Any:
        obs = self.observation_space.sample()
        SpaceEnv.observations.append(obs)
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.steps = 0
        return self._observe(), {}

    def step(self, action):
        SpaceEnv.actions.append(action)
        self.steps += 1
        return self._observe(), 0.0, False, self.steps >= EPISODE_STEPS, {}


def on(config: Any, obs_space: gym.Space, action_space: gym.Space) -> Any:
    SpaceEnv.actions.clear()
    SpaceEnv.observations.clear()
    env_config = {
        "observation_space": space_to_json(obs_space),
        "action_space": space_to_json(action_space),
    }
    return config.environment(SpaceEnv, env_config=env_config)


def tiny(algo: str) -> Any:
    """Iterations of a few dozen env steps over two sub-envs, one hidden layer of 8."""
    if algo in ("PPO", "IMPALA", "APPO"):
        config_class = {"PPO": PPOConfig, "IMPALA": IMPALAConfig, "APPO": APPOConfig}[algo]
        config = config_class().training(train_batch_size_per_learner=32, minibatch_size=16)
    elif algo == "DQN":
        config = DQNConfig().training(
            num_steps_sampled_before_learning_starts=16,
            train_batch_size_per_learner=16,
            replay_buffer_config={"type": "ReplayBuffer", "capacity": 500},
            training_intensity=1.0,
        )
    else:
        config = SACConfig().training(
            num_steps_sampled_before_learning_starts=16,
            train_batch_size_per_learner=16,
            replay_buffer_config={"type": "ReplayBuffer", "capacity": 500},
            n_step=1,
            training_intensity=1.0,
        )
    if algo in ("DQN", "SAC"):
        config.env_runners(rollout_fragment_length=8).reporting(
            min_sample_timesteps_per_iteration=32
        )
    return (
        config.env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .debugging(seed=0)
    )


def train(algo: Any, iterations: int = 3) -> dict:
    for _ in range(iterations):
        result = algo.train()
    return result


def assert_learned_finite(result: dict) -> None:
    stats = result["learners"][c.DEFAULT_MODULE_ID]
    assert stats and all(math.isfinite(v) for v in stats.values() if isinstance(v, float))


# ------------------------------------------------------------------------ actions
ON_POLICY = ("PPO", "IMPALA", "APPO")
ON_POLICY_ACTIONS = {
    "discrete_start_1": Discrete(3, start=1),
    "discrete_start_negative": Discrete(4, start=-2),
    "multi_discrete_with_start": MultiDiscrete([3, 2], start=[1, -1]),
    "multi_discrete_2d": MultiDiscrete([[2, 3], [2, 2]]),
    "multi_binary": MultiBinary(3),
    "multi_binary_2d": MultiBinary([2, 2]),
    "box_bounded": Box(-2.0, 3.0, (2,), np.float32),
    "box_unbounded": Box(-INF, INF, (2,), np.float32),
    "box_half_bounded": Box(np.array([0.0, -INF], np.float32), np.array([INF, 1.0], np.float32)),
    "box_2x3": Box(-1.0, 1.0, (2, 3), np.float32),
    "box_float64": Box(-0.5, 0.5, (1,), np.float64),
}
CASES = [(algo, name) for algo in ON_POLICY for name in ON_POLICY_ACTIONS]
SAC_ACTIONS = ("discrete_start_1", "box_bounded", "box_2x3", "box_float64")
CASES += [("DQN", "discrete_start_1"), ("DQN", "discrete_start_negative")]
CASES += [("SAC", name) for name in SAC_ACTIONS]
OBS = Box(-1.0, 1.0, (3,), np.float32)


def assert_actions_cover(space: gym.Space, received: list) -> None:
    """Beyond legality: the received actions use the space (so scaling or offsets that
    squeeze actions into a corner, or pass them unscaled where bounds are finite, fail)."""
    actions = np.stack([np.asarray(a) for a in received])
    if isinstance(space, Discrete):
        assert set(actions.tolist()) == set(range(space.start, space.start + space.n))
    elif isinstance(space, MultiDiscrete):
        for index in np.ndindex(space.shape):
            values = set(actions[(slice(None), *index)].tolist())
            start, n = int(space.start[index]), int(space.nvec[index])
            assert values == set(range(start, start + n))
    elif isinstance(space, MultiBinary):
        assert set(np.unique(actions).tolist()) == {0, 1}
    else:
        assert np.isfinite(actions).all()
        for index in np.ndindex(space.shape):
            column = actions[(slice(None), *index)]
            low, high = space.low[index], space.high[index]
            if np.isfinite(low) and np.isfinite(high):  # scaled to the bounds: reaches both
                margin = 0.2 * (high - low)
                assert column.min() < low + margin and column.max() > high - margin
            else:  # passed on unscaled: a unit Gaussian's samples leave [-1, 1]
                assert np.abs(column).max() > 1.0


@pytest.mark.parametrize(("algo_name", "space_name"), CASES)
def test_the_env_receives_only_actions_of_its_space(build, algo_name, space_name):
    space = ON_POLICY_ACTIONS[space_name]
    algo = build(on(tiny(algo_name), OBS, space))
    result = train(algo)

    assert len(SpaceEnv.actions) >= 64
    outside = [a for a in SpaceEnv.actions if not space.contains(a)]
    assert not outside, f"{len(outside)} actions outside {space}, e.g. {outside[0]!r}"
    assert_actions_cover(space, SpaceEnv.actions)
    assert_learned_finite(result)


@pytest.mark.parametrize("normalize_actions", [True, False])
def test_clip_actions_applies_only_the_finite_bounds(build, normalize_actions):
    space = ON_POLICY_ACTIONS["box_half_bounded"]
    config = on(tiny("PPO"), OBS, space).environment(
        normalize_actions=normalize_actions, clip_actions=True
    )
    train(build(config), iterations=2)

    actions = np.stack(SpaceEnv.actions)
    assert all(space.contains(a) for a in SpaceEnv.actions)
    assert actions[:, 0].min() == 0.0 and actions[:, 0].max() > 1.0  # clipped below only
    assert actions[:, 1].max() == 1.0 and actions[:, 1].min() < -1.0  # clipped above only


def test_without_normalizing_or_clipping_an_unbounded_box_gets_the_raw_actions(build):
    config = on(tiny("PPO"), OBS, ON_POLICY_ACTIONS["box_unbounded"])
    algo = build(config.environment(normalize_actions=False, clip_actions=False))
    batch = algo.env_runner_group.local_env_runner.sample(num_timesteps=16)[c.DEFAULT_MODULE_ID]
    sent = np.stack(SpaceEnv.actions[-16:])
    np.testing.assert_array_equal(np.sort(sent.ravel()), np.sort(batch[c.ACTIONS].ravel()))


def test_env_actions_map_module_actions_to_the_space():
    to_env = EnvActions(Discrete(3, start=5), normalize_actions=True, clip_actions=True)
    np.testing.assert_array_equal(to_env(np.array([0, 2])), [5, 7])

    space = MultiDiscrete([[2, 3]], start=[[1, -1]])
    sent = EnvActions(space, True, True)(np.array([[0, 0], [1, 2]]))
    assert sent.shape == (2, 1, 2) and all(space.contains(a) for a in sent)
    np.testing.assert_array_equal(sent[:, 0], [[1, -1], [2, 1]])

    space = MultiBinary([2, 2])
    sent = EnvActions(space, True, True)(np.array([[0.0, 1.0, 1.0, 0.0]]))
    assert sent.dtype == space.dtype and space.contains(sent[0])

    space = Box(np.array([-2.0, -INF, 0.0], np.float32), np.array([2.0, INF, INF], np.float32))
    sent = EnvActions(space, normalize_actions=True, clip_actions=False)(
        np.array([[-1.0, -5.0, -3.0], [0.5, 7.0, 4.0], [3.0, 0.0, 0.0]], np.float32)
    )
    # Scaled dimension: [-1, 1] -> [-2, 2], and kept inside; unscaled ones pass unchanged.
    np.testing.assert_allclose(sent, [[-2.0, -5.0, -3.0], [1.0, 7.0, 4.0], [2.0, 0.0, 0.0]])
    assert np.isfinite(sent).all()


# -------------------------------------------------------------------- observations
OBS_SPACES = {
    "box_2x3": Box(-1.0, 1.0, (2, 3), np.float32),
    "discrete_start_2": Discrete(4, start=2),
    "multi_discrete_with_start": MultiDiscrete([3, 4], start=[1, 0]),
    "multi_binary": MultiBinary(3),
    "dict": gym.spaces.Dict({"pos": Box(-1.0, 1.0, (2,)), "key": Discrete(3, start=1)}),
    "tuple": gym.spaces.Tuple((Box(0.0, 1.0, (2,)), MultiBinary(2), MultiDiscrete([2, 3]))),
}


@pytest.mark.parametrize("algo_name", ["PPO", "IMPALA", "APPO", "DQN", "SAC"])
@pytest.mark.parametrize("space_name", list(OBS_SPACES))
def test_every_algorithm_trains_on_every_observation_space(build, algo_name, space_name):
    space = OBS_SPACES[space_name]
    algo = build(on(tiny(algo_name), space, Discrete(2)))
    result = train(algo)

    assert result["num_env_steps_trained_lifetime"] > 0
    assert_learned_finite(result)
    assert all(a in (0, 1) for a in SpaceEnv.actions)


@pytest.mark.parametrize("space_name", ["dict", "tuple"])
def test_dict_and_tuple_observations_reach_the_module_flattened(build, space_name):
    space = OBS_SPACES[space_name]
    algo = build(on(tiny("PPO"), space, Discrete(2)))
    batch = algo.env_runner_group.local_env_runner.sample(num_timesteps=20)[c.DEFAULT_MODULE_ID]

    returned = {tuple(gym.spaces.utils.flatten(space, obs)) for obs in SpaceEnv.observations}
    assert batch[c.OBS].shape == (20, gym.spaces.utils.flatdim(space))
    assert batch[c.OBS].dtype == np.float32
    assert all(tuple(row) in returned for row in batch[c.OBS])


@pytest.mark.parametrize(
    "space_name", ["box_2x3", "discrete_start_2", "multi_discrete_with_start", "multi_binary"]
)
def test_modules_flatten_observations_as_gymnasium_does(space_name):
    space = OBS_SPACES[space_name]
    space.seed(0)
    samples = [space.sample() for _ in range(20)]
    ours = flatten_observations(space, torch.as_tensor(np.stack(samples)))
    expected = np.stack([gym.spaces.utils.flatten(space, s) for s in samples])
    np.testing.assert_array_equal(ours.numpy(), expected.astype(np.float32))


def test_an_observation_outside_a_dict_space_is_an_env_error(build):
    class Outside(SpaceEnv):
        def _observe(self):
            return {"pos": np.full(2, 5.0, np.float32), "key": 1}

    config = on(tiny("PPO"), OBS_SPACES["dict"], Discrete(2)).environment(Outside)
    with pytest.raises(tunerl.EnvError, match="outside its observation_space Dict"):
        build(config).train()


# ---------------------------------------------------------------------- refusals
REFUSED = [
    ("DQN", OBS, MultiDiscrete([3, 2]), ["MultiDiscrete(", "Discrete action space", "PPO"]),
    ("DQN", OBS, MultiBinary(2), ["MultiBinary(", "Discrete action space"]),
    ("DQN", OBS, Box(-1.0, 1.0, (1,)), ["Box(", "Discrete action space", "SAC"]),
    ("SAC", OBS, MultiDiscrete([3, 2]), ["MultiDiscrete(", "float Box or a Discrete"]),
    ("SAC", OBS, Box(-INF, INF, (2,)), ["infinite bounds", "TransformAction", "PPO"]),
    ("PPO", OBS, Box(0, 3, (2,), np.int64), ["int64", "float Box", "TransformAction"]),
    ("APPO", OBS, Box(0, 3, (2,), np.int64), ["int64", "float Box"]),
    (
        "IMPALA",
        gym.spaces.Dict({"name": gym.spaces.Text(4)}),
        Discrete(2),
        ["Dict(", "Text(", "Dict or Tuple", "FlattenObservation"],
    ),
    ("DQN", gym.spaces.Text(4), Discrete(2), ["Text(", "MultiBinary", "FlattenObservation"]),
]


@pytest.mark.parametrize(("algo_name", "obs_space", "action_space", "phrases"), REFUSED)
def test_unsupported_spaces_are_refused_at_build(
    build, algo_name, obs_space, action_space, phrases
):
    config = tiny(algo_name)
    # The Text space has no JSON form, so this env is given its spaces directly.
    env = type("Fixed", (SpaceEnv,), {"__init__": lambda self, env_config=None: None})
    env.observation_space, env.action_space = obs_space, action_space
    SpaceEnv.actions.clear()
    with pytest.raises(UnsupportedSpaceError) as error:
        build(config.environment(env))
    message = str(error.value)
    assert message.startswith(f"{algo_name} cannot train on env")
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert not SpaceEnv.actions


# ------------------------------------------------------------------- checkpoints
CHECKPOINT_SPACES = [
    Box(-INF, INF, (2, 3), np.float32),
    Box(np.array([0.0, -INF]), np.array([1.0, 2.0]), dtype=np.float64),
    Discrete(4, start=-2),
    MultiDiscrete([[3, 2], [4, 5]], start=[[1, 0], [0, -1]]),
    MultiBinary([2, 3]),
    gym.spaces.Dict(
        {"z": Discrete(2), "a": gym.spaces.Tuple([MultiBinary(2), Box(0.0, 1.0, (1,))])}
    ),
]


@pytest.mark.parametrize("space", CHECKPOINT_SPACES, ids=lambda s: type(s).__name__)
def test_spaces_round_trip_through_checkpoint_json(space):
    text = json.dumps(space_to_json(space))
    back = space_from_json(json.loads(text))
    assert back == space and type(back) is type(space)


def test_unknown_or_malformed_spaces_are_checkpoint_errors_naming_what_is_wrong():
    with pytest.raises(CheckpointError, match="Text space"):
        space_to_json(gym.spaces.Text(5))
    with pytest.raises(CheckpointError, match="unknown space type 'Graph'"):
        space_from_json({"type": "Dict", "spaces": [["a", {"type": "Graph"}]]})
    with pytest.raises(CheckpointError, match=r"space\.n = '3'"):
        space_from_json({"type": "Discrete", "n": "3", "start": 0})
    with pytest.raises(CheckpointError, match="'object'"):
        space_from_json({"type": "Box", "low": [0], "high": [1], "shape": [1], "dtype": "object"})


def test_a_module_on_dict_observations_and_multi_discrete_actions_round_trips(tmp_path):
    torch.manual_seed(0)
    obs_space, action_space = OBS_SPACES["dict"], MultiDiscrete([3, 2], start=[1, -1])
    module = DefaultRLModule(obs_space, action_space, model_config={"fcnet_hiddens": [8]})
    module.save_to_path(tmp_path / "module")

    loaded = RLModule.from_checkpoint(tmp_path / "module")

    assert loaded.observation_space == obs_space and loaded.action_space == action_space
    obs = torch.rand(4, gym.spaces.utils.flatdim(obs_space))
    expected = module.forward_inference({c.OBS: obs})[c.ACTION_DIST_INPUTS]
    torch.testing.assert_close(
        loaded.forward_inference({c.OBS: obs})[c.ACTION_DIST_INPUTS], expected
    )
