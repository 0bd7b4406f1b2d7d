"""Offline evaluation: FQE against the exact value of a tiny MDP, the estimates an algorithm
reports under evaluation/offline_eval_runners/ against the env's own return on the same
MDP, and Tune stopping and ranking on them. The MDP: three steps, the reward is the action
(0 or 1), so a policy's value is sum_t gamma^t pi(1 | s_t), exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from ray import tune

from tunerl import PPOConfig
from tunerl.algorithms.bc import BCConfig
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.config import ConfigError
from tunerl.core.rl_module import RLModuleSpec
from tunerl.core.rl_module.default_rl_module import DefaultRLModule
from tunerl.env.registry import register_env
from tunerl.offline.estimators import FittedQEvaluation
from tunerl.offline.offline_data import OfflineDataError

HORIZON = 3
OFFLINE = f"{m.EVALUATION_RESULTS}/{m.OFFLINE_EVAL_RUNNER_RESULTS}"


class RewardIsTheAction(gym.Env):
    """States 0, 1, 2 (one-hot); any action moves on; the reward is the action."""

    observation_space = gym.spaces.Discrete(HORIZON)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config: dict | None = None):
        self.state = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return self.state, {}

    def step(self, action):
        reward = float(action)
        self.state += 1
        return min(self.state, HORIZON - 1), reward, self.state == HORIZON, False, {}


register_env("RewardIsTheAction", RewardIsTheAction)


def exact_value(module, gamma: float) -> float:
    """sum_t gamma^t pi(1 | s_t) of `module`'s exploration policy."""
    with torch.no_grad():
        inputs = module.forward_exploration({c.OBS: torch.arange(HORIZON)})
        dist = module.get_action_dist_cls()(inputs[c.ACTION_DIST_INPUTS])
        p_one = dist.logp(torch.ones(HORIZON, dtype=torch.long)).exp().numpy()
    return float(sum(gamma**t * p_one[t] for t in range(HORIZON)))


def uniform_episodes(num_episodes: int, seed: int) -> tuple[dict, np.ndarray]:
    """Rows of episodes by a uniform policy, and the index of each episode's first row."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(2, size=(num_episodes, HORIZON))
    steps = np.tile(np.arange(HORIZON), num_episodes)
    rows = {
        c.OBS: steps.copy(),
        c.NEW_OBS: np.minimum(steps + 1, HORIZON - 1),
        c.ACTIONS: actions.reshape(-1),
        c.REWARDS: actions.reshape(-1).astype(np.float32),
        c.TERMINATEDS: steps == HORIZON - 1,
        c.TRUNCATEDS: np.zeros(len(steps), bool),
    }
    return rows, np.flatnonzero(steps == 0)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_fqe_finds_the_exact_value_of_the_tiny_mdp(gamma):
    module = RLModuleSpec(
        module_class=DefaultRLModule,
        observation_space=RewardIsTheAction.observation_space,
        action_space=RewardIsTheAction.action_space,
        model_config={"fcnet_hiddens": [8], "fcnet_activation": "tanh"},
    ).build()
    with torch.no_grad():  # a policy far from the data's uniform one
        module.pi_head.bias.copy_(torch.tensor([-1.0, 1.0]))
    rows, first = uniform_episodes(500, seed=0)
    fqe = FittedQEvaluation(
        RewardIsTheAction.observation_space, RewardIsTheAction.action_space, gamma, seed=0
    )
    estimate = fqe.estimate(module, rows, first, num_updates=600)
    exact = exact_value(module, gamma)
    uniform = sum(gamma**t * 0.5 for t in range(HORIZON))
    assert abs(exact - uniform) > 0.5  # far from the value of the data's own policy
    assert estimate == pytest.approx(exact, abs=0.05)
    # Warm-started: more updates keep it there.
    assert fqe.estimate(module, rows, first, num_updates=100) == pytest.approx(exact, abs=0.05)


def record(env: str, steps: int, folder) -> str:
    """`steps` env steps of an untrained PPO on `env`, recorded into `folder`."""
    algo = (
        PPOConfig()
        .environment(env)
        .training(train_batch_size_per_learner=steps, minibatch_size=steps, num_epochs=1, lr=1e-9)
        .env_runners(rollout_fragment_length=steps, num_envs_per_env_runner=1)
        .offline_data(output=str(folder), output_max_rows_per_file=steps // 2)
        .debugging(seed=0)
        .build_algo()
    )
    try:
        algo.train()
    finally:
        algo.stop()
    return str(folder)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> str:
    """2,400 steps (800 complete episodes) of an untrained PPO on the tiny MDP."""
    return record("RewardIsTheAction", 2400, tmp_path_factory.mktemp("reward-is-the-action"))


def bc_with_offline_evaluation(data: str, env: str = "RewardIsTheAction", **evaluation) -> BCConfig:
    return (
        BCConfig()
        .environment(env)
        .offline_data(input_=data)
        .training(train_batch_size_per_learner=256, lr=1e-3)
        .reporting(min_train_timesteps_per_iteration=512)
        .evaluation(**evaluation)
        .debugging(seed=0)
    )


def test_an_algorithm_reports_each_estimate_beside_the_env_return(recorded):
    config = bc_with_offline_evaluation(
        recorded,
        offline_evaluation_interval=1,
        offline_evaluation_type=["wis", "is", "pdis", "fqe"],
        offline_evaluation_fqe_updates=300,
        evaluation_interval=2,
        evaluation_duration=400,
    )
    algo = config.build_algo()
    try:
        first = algo.train()
        second = algo.train()
        module = algo.get_module()
        exact = exact_value(module, 1.0)
    finally:
        algo.stop()
    offline = second[m.EVALUATION_RESULTS][m.OFFLINE_EVAL_RUNNER_RESULTS]
    table = pq.read_table(recorded)
    episodes = {}
    for eps, reward in zip(table[c.EPS_ID].to_pylist(), table[c.REWARDS].to_pylist()):
        episodes.setdefault(eps, []).append(reward)
    complete = [rewards for rewards in episodes.values() if len(rewards) == HORIZON]
    assert offline["num_episodes"] == len(complete) >= 790
    assert offline["behavior_episode_return_mean"] == pytest.approx(np.mean(np.sum(complete, 1)))
    assert offline["episode_return_mean"] == offline["wis"]["episode_return_mean"]
    for name in ("wis", "is", "pdis", "fqe"):
        assert offline[name]["episode_return_mean"] == pytest.approx(exact, abs=0.15), name
    # The env's return agrees (400 episodes of the same policy), and each part keeps its
    # latest result: the first iteration had the offline estimates only.
    env_return = second[m.EVALUATION_RESULTS][m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN]
    assert env_return == pytest.approx(exact, abs=0.15)
    assert m.ENV_RUNNER_RESULTS not in first[m.EVALUATION_RESULTS]
    assert second[m.TIMERS][m.OFFLINE_EVALUATION_TIMER] > 0
    assert second[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0


def test_offline_evaluation_without_data_or_logp_is_refused_by_name(recorded, tmp_path):
    with pytest.raises(ConfigError, match="offline_evaluation_input is None"):
        PPOConfig().environment("CartPole-v1").evaluation(offline_evaluation_interval=1).validate()
    with pytest.raises(ConfigError, match="offline_evaluation_type"):
        bc_with_offline_evaluation(recorded, offline_evaluation_type="dr").validate()
    table = pq.read_table(recorded).drop_columns([c.ACTION_LOGP])
    pq.write_table(table, tmp_path / "no_logp.parquet")
    config = bc_with_offline_evaluation(
        recorded, offline_evaluation_interval=1, offline_evaluation_type="is",
        offline_evaluation_input=str(tmp_path / "no_logp.parquet"),
    )  # fmt: skip
    with pytest.raises(OfflineDataError, match="no 'action_logp' column"):
        config.build_algo()


def test_tune_stops_and_ranks_on_the_offline_estimate(tmp_path, ray_session):
    # CartPole: Tune's trials are other processes, which know Gymnasium's ids (not the MDP
    # this file registers).
    data = record("CartPole-v1", 1000, tmp_path / "data")
    config = bc_with_offline_evaluation(
        data, "CartPole-v1", offline_evaluation_interval=1, offline_evaluation_type="wis"
    ).training(lr=tune.grid_search([1e-2, 1e-6]))
    key = f"{OFFLINE}/{m.EPISODE_RETURN_MEAN}"
    tuner = tune.Tuner(
        "BC",
        param_space=config,
        tune_config=tune.TuneConfig(metric=key, mode="max"),
        run_config=tune.RunConfig(
            stop={key: 1e6, "training_iteration": 2},
            storage_path=str(tmp_path),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=key, checkpoint_frequency=1
            ),
        ),
    )
    results = tuner.fit()
    assert not results.errors
    assert len(results) == 2
    estimates = []
    for result in results:
        assert result.metrics["training_iteration"] == 2
        offline = result.metrics[m.EVALUATION_RESULTS][m.OFFLINE_EVAL_RUNNER_RESULTS]
        estimates.append(offline[m.EPISODE_RETURN_MEAN])
        assert 5 < estimates[-1] < 500
        assert result.checkpoint is not None
    best = results.get_best_result()
    best_offline = best.metrics[m.EVALUATION_RESULTS][m.OFFLINE_EVAL_RUNNER_RESULTS]
    assert best_offline[m.EPISODE_RETURN_MEAN] == max(estimates)
