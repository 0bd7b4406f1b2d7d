"""Every registered algorithm trains multi-agent: two agents of MultiAgentCartPole, each with
its own module, with the local runner and a remote one; both modules are trained and
reported, and a checkpoint restores both and continues identically."""

from __future__ import annotations

import math

import pytest

from tunerl import ALGORITHMS
from tunerl.core import metrics as m
from tunerl.env.registry import register_env
from tunerl.examples.envs.classes.multi_agent import MultiAgentCartPole

from .helpers import (
    ALGORITHM_NAMES,
    comparable,
    recorded_input,
    same_numbers,
    tiny_config,
    trains_offline,
)

# The algorithms that sample; the offline ones train both modules from data two modules
# recorded (test_offline_algorithms_train_two_modules_from_multi_agent_data).
SAMPLING_NAMES = [name for name in ALGORITHM_NAMES if not trains_offline(name)]
OFFLINE_NAMES = [name for name in ALGORITHM_NAMES if trains_offline(name)]

ENV = "contract_multi_agent_cartpole"
register_env(ENV, lambda config: MultiAgentCartPole({"num_agents": 2, **config}))
MODULES = ("p0", "p1")


# Agent i acts with module p{i}. A lambda: Ray pickles it by value for remote runners (a
# function of this test module would be pickled by reference, which remote workers cannot
# import).
by_agent = lambda agent_id, episode, **kwargs: f"p{agent_id}"  # noqa: E731


def multi_agent_config(name: str, num_env_runners: int = 0, seed: int = 0):
    return tiny_config(name, env=ENV, num_env_runners=num_env_runners, seed=seed).multi_agent(
        policies=set(MODULES), policy_mapping_fn=by_agent
    )


def module_weights(algo) -> dict:
    return {
        mid: {k: v.clone() for k, v in algo.get_module(mid).get_state().items()} for mid in MODULES
    }


@pytest.mark.parametrize("name", SAMPLING_NAMES)
def test_two_modules_train_on_two_agents(name, num_env_runners, build):
    algo = build(multi_agent_config(name, num_env_runners))
    before = module_weights(algo)
    results = [algo.train() for _ in range(2)]
    last = results[-1]
    assert last[m.NUM_AGENT_STEPS_SAMPLED_LIFETIME] > last[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
    assert set(last[m.NUM_MODULE_STEPS_SAMPLED_LIFETIME]) == set(MODULES)
    runners = last[m.ENV_RUNNER_RESULTS]
    assert set(runners[m.MODULE_EPISODE_RETURNS_MEAN]) == set(MODULES)
    assert math.isfinite(runners[m.EPISODE_RETURN_MEAN])
    trained = set().union(*(r[m.LEARNER_RESULTS] for r in results))
    assert trained == set(MODULES)
    for result in results:
        for stats in result[m.LEARNER_RESULTS].values():
            assert all(math.isfinite(value) for value in stats.values())
    after = module_weights(algo)
    for mid in MODULES:
        assert any(not after[mid][k].equal(before[mid][k]) for k in before[mid]), mid


@pytest.mark.parametrize("name", SAMPLING_NAMES)
def test_two_restores_of_a_multi_agent_checkpoint_continue_identically(name, build, tmp_path):
    algo = build(multi_agent_config(name, seed=3))
    algo.train()
    path = algo.save_to_path(tmp_path / "checkpoint")
    saved = module_weights(algo)
    runs = []
    for _ in range(2):
        restored = ALGORITHMS[name].from_checkpoint(
            path, config_overrides={"policy_mapping_fn": by_agent}
        )
        try:
            restored_weights = module_weights(restored)
            for mid in MODULES:
                assert all(restored_weights[mid][k].equal(v) for k, v in saved[mid].items())
            runs.append([comparable(restored.train()) for _ in range(2)])
        finally:
            restored.stop()
    for a, b in zip(*runs, strict=True):
        assert same_numbers(a, b)


@pytest.mark.parametrize("name", OFFLINE_NAMES)
def test_offline_algorithms_train_two_modules_from_multi_agent_data(name, build):
    continuous = getattr(ALGORITHMS[name], "continuous_actions_only", False)
    env = "MultiAgentPendulum" if continuous else ENV
    env_config = {"num_agents": 2}
    data = recorded_input(env, env_config, policies=MODULES, policy_mapping_fn=by_agent)
    config = tiny_config(name, env=env, input_=data, env_config=env_config).multi_agent(
        policies=set(MODULES), policy_mapping_fn=by_agent
    )
    algo = build(config)
    before = module_weights(algo)
    result = algo.train()
    assert set(result[m.LEARNER_RESULTS]) == set(MODULES)
    assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] == 0
    after = module_weights(algo)
    for mid in MODULES:
        assert any(not after[mid][k].equal(before[mid][k]) for k in before[mid]), mid
