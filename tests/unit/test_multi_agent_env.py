"""The multi-agent env API: space fallbacks, make_multi_agent, the checks a runner calls on
every reset/step result (and their messages), and the exact dynamics of the example envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from tunerl.env.multi_agent_env import (
    ALL_AGENTS,
    MultiAgentEnv,
    MultiAgentEnvError,
    check_multi_agent_output,
    make_multi_agent,
    validate_spaces,
)
from tunerl.env.registry import EnvContext
from tunerl.examples.envs.classes.multi_agent import (
    AlternatingTurnsEnv,
    LateAndEarlyAgentsEnv,
    MultiAgentCartPole,
    MultiAgentPendulum,
    TruncatedAgentEnv,
)

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def play_episode(env: MultiAgentEnv, policy=lambda agent, obs: 1, seed: int = 0) -> dict:
    """Steps `env` to the end the way a runner does (only agents with an observation that are
    not done act), checking every result; returns what each agent saw."""
    validate_spaces(env)
    obs, infos = env.reset(seed=seed)
    check_multi_agent_output(env, "reset", obs, infos=infos)
    record = {"returns": {}, "agent_steps": {}, "env_steps": 0, "last_obs": dict(obs)}
    seen, done = set(obs), set()
    while True:
        actions = {a: policy(a, o) for a, o in obs.items() if a not in done}
        for agent in actions:
            record["agent_steps"][agent] = record["agent_steps"].get(agent, 0) + 1
        obs, rewards, terminateds, truncateds, infos = env.step(actions)
        check_multi_agent_output(
            env, "step", obs, rewards, terminateds, truncateds, infos, seen_agents=seen
        )
        record["env_steps"] += 1
        seen |= set(obs)
        record["last_obs"].update(obs)
        for agent, reward in rewards.items():
            record["returns"][agent] = record["returns"].get(agent, 0.0) + reward
        done |= {a for a in obs if terminateds.get(a) or truncateds.get(a)}
        if terminateds[ALL_AGENTS] or truncateds[ALL_AGENTS]:
            record["final"] = (terminateds, truncateds)
            return record


# The API and its fallbacks


class SharedSpaceEnv(MultiAgentEnv):
    """Spaces given the old way: one space for all, or a Dict keyed by agent."""

    def __init__(self, observation_space, action_space):
        super().__init__()
        self.possible_agents = ["a", "b"]
        self.agents = ["a"]
        self.observation_space = observation_space
        self.action_space = action_space


def test_space_fallbacks_dicts_then_dict_space_then_whole_space():
    env = SharedSpaceEnv(BOX, gym.spaces.Discrete(3))
    assert env.get_observation_space("a") is BOX
    assert env.get_action_space("b") == gym.spaces.Discrete(3)
    keyed = SharedSpaceEnv(
        gym.spaces.Dict({"a": BOX, "b": gym.spaces.Discrete(4)}), gym.spaces.Discrete(2)
    )
    assert keyed.get_observation_space("b") == gym.spaces.Discrete(4)
    keyed.observation_spaces = {"a": gym.spaces.Discrete(7), "b": BOX}
    assert keyed.get_observation_space("a") == gym.spaces.Discrete(7)
    assert (env.num_agents, env.max_num_agents) == (1, 2)


def test_possible_agents_default_to_agents_and_instances_do_not_share_lists():
    class Plain(MultiAgentEnv):
        agents = ["x", "y"]

    first, second = Plain(), Plain()
    assert first.possible_agents == ["x", "y"]
    first.agents.remove("x")
    assert second.agents == ["x", "y"] and Plain.agents == ["x", "y"]


def test_validate_spaces_names_the_agent_without_a_space():
    env = SharedSpaceEnv(BOX, gym.spaces.Discrete(2))
    env.observation_spaces = {"a": BOX}
    with pytest.raises(MultiAgentEnvError, match=r"observation_spaces has no entry for agent 'b'"):
        validate_spaces(env)
    env.observation_spaces = {"a": BOX, "b": BOX}
    env.action_space = None
    with pytest.raises(MultiAgentEnvError, match=r"no action space for agent 'a'"):
        validate_spaces(env)
    empty = SharedSpaceEnv(BOX, BOX)
    empty.possible_agents, empty.agents = [], []
    with pytest.raises(MultiAgentEnvError, match="possible_agents is empty"):
        validate_spaces(empty)
    stray = SharedSpaceEnv(BOX, BOX)
    stray.agents = ["c"]
    with pytest.raises(MultiAgentEnvError, match=r"agents has \['c'\]"):
        validate_spaces(stray)
    with pytest.raises(MultiAgentEnvError, match="not a tunerl.env.multi_agent_env"):
        validate_spaces(gym.make("CartPole-v1"))


# The per-step check and its messages


def step_result(**changes):
    result = {
        "obs": {"a": BOX.sample()},
        "rewards": {"a": 1.0},
        "terminateds": {"a": False, ALL_AGENTS: False},
        "truncateds": {"a": False, ALL_AGENTS: False},
        "infos": {"a": {}},
    }
    result.update(changes)
    return result


def check_step(env, seen_agents=None, **changes):
    check_multi_agent_output(env, "step", **step_result(**changes), seen_agents=seen_agents)


def test_a_valid_step_and_reset_pass():
    env = SharedSpaceEnv(BOX, BOX)
    check_step(env)
    check_step(env, seen_agents={"a"})
    check_multi_agent_output(env, "reset", {"a": BOX.sample()}, infos={})


@pytest.mark.parametrize("field", ["terminateds", "truncateds"])
def test_missing_all_names_the_env_and_the_dict(field):
    env = SharedSpaceEnv(BOX, BOX)
    with pytest.raises(MultiAgentEnvError) as error:
        check_step(env, **{field: {"a": False}})
    message = str(error.value)
    assert f"SharedSpaceEnv.step() returned {field} without the key '__all__'" in message
    assert "got keys ['a']" in message


def test_an_observed_agent_without_a_space_is_named_with_the_known_agents():
    env = SharedSpaceEnv(BOX, BOX)
    env.observation_spaces = {"a": BOX, "b": BOX}
    with pytest.raises(MultiAgentEnvError) as error:
        check_step(env, obs={"a": BOX.sample(), "zed": BOX.sample()})
    assert "observation for agent 'zed'" in str(error.value)
    assert "known agents are ['a', 'b']" in str(error.value)


@pytest.mark.parametrize("field", ["rewards", "terminateds", "truncateds"])
def test_a_value_for_an_agent_never_seen_is_named(field):
    env = SharedSpaceEnv(BOX, BOX)
    values = {"a": 0.0, "b": 1.0} if field == "rewards" else {"a": False, "b": False}
    if field != "rewards":
        values[ALL_AGENTS] = False
    with pytest.raises(MultiAgentEnvError) as error:
        check_step(env, seen_agents={"a"}, **{field: values})
    assert f"returned {field}['b'], but agent 'b' has had no observation" in str(error.value)
    # Without the episode's seen set, only agents without spaces are refused.
    check_step(env, **{field: values})
    env.observation_spaces = env.action_spaces = {"a": BOX, "b": BOX}
    values["zed"] = values.pop("b")
    with pytest.raises(MultiAgentEnvError) as error:
        check_step(env, **{field: values})
    assert f"{field}['zed'] for an agent with no spaces" in str(error.value)
    assert "known agents are ['a', 'b']" in str(error.value)


def test_an_agent_observed_in_the_same_step_may_get_a_reward():
    env = SharedSpaceEnv(BOX, BOX)
    check_step(
        env,
        seen_agents={"a"},
        obs={"a": BOX.sample(), "b": BOX.sample()},
        rewards={"a": 0.0, "b": 0.5},
    )


@pytest.mark.parametrize("field", ["obs", "rewards", "terminateds", "truncateds", "infos"])
def test_non_dict_returns_are_refused_with_the_field(field):
    env = SharedSpaceEnv(BOX, BOX)
    with pytest.raises(MultiAgentEnvError) as error:
        check_step(env, **{field: [1.0]})
    name = "observations" if field == "obs" else field
    assert f"returned list [1.0] as its {name}" in str(error.value)
    with pytest.raises(MultiAgentEnvError, match=r"returns \(observations, infos\)"):
        check_multi_agent_output(env, "reset", np.zeros(2), infos={})


def test_a_truncated_agent_needs_its_final_observation():
    env = SharedSpaceEnv(BOX, BOX)
    with pytest.raises(MultiAgentEnvError, match=r"truncateds\['a'\] = True without a final"):
        check_step(
            env, obs={}, truncateds={"a": True, ALL_AGENTS: True}, terminateds={ALL_AGENTS: True}
        )


def test_an_episode_that_goes_on_needs_an_agent_to_act():
    env = SharedSpaceEnv(BOX, BOX)
    with pytest.raises(MultiAgentEnvError, match="no observation and the episode is not over"):
        check_step(env, obs={}, rewards={}, terminateds={ALL_AGENTS: False}, infos={})
    check_step(env, obs={}, rewards={}, terminateds={ALL_AGENTS: True}, infos={})


# make_multi_agent


def test_multi_agent_cartpole_copies_act_independently_until_all_are_done():
    env = MultiAgentCartPole({"num_agents": 2})
    assert env.possible_agents == [0, 1] and type(env).__name__ == "MultiAgentCartPole"
    assert env.get_observation_space(1).shape == (4,) and env.get_action_space(0).n == 2
    obs, _ = env.reset(seed=3)
    assert not np.array_equal(obs[0], obs[1]), "copy i is seeded with seed + i"
    raw = gym.make("CartPole-v1")
    assert np.array_equal(raw.reset(seed=4)[0], obs[1])
    # Agent 0 pushes left every step and falls first; agent 1 balances (pole-angle rule).
    record = play_episode(env, lambda agent, o: 0 if agent == 0 else int(o[2] > 0), seed=3)
    steps = record["agent_steps"]
    assert steps[0] < steps[1] == record["env_steps"]
    assert record["returns"] == {0: float(steps[0]), 1: float(steps[1])}
    terminateds, truncateds = record["final"]
    assert terminateds == {1: True, ALL_AGENTS: True} and truncateds[ALL_AGENTS] is False
    with pytest.raises(MultiAgentEnvError, match="not active"):
        env.step({0: 0})


def test_make_multi_agent_with_a_creator_gets_the_config_without_num_agents():
    built = []

    def creator(config):
        built.append(config)
        return gym.make("Pendulum-v1", g=config["g"])

    cls = make_multi_agent(creator)
    env = cls(EnvContext({"num_agents": 3, "g": 9.0}, worker_index=2))
    assert len(env.envs) == 3 and env.possible_agents == [0, 1, 2]
    assert all(dict(c) == {"g": 9.0} and c.worker_index == 2 for c in built)
    obs, _ = env.reset(seed=0)
    _, rewards, terminateds, truncateds, _ = env.step({0: np.zeros(1, np.float32)})
    assert set(rewards) == {0} and terminateds == {0: False, ALL_AGENTS: False}
    assert MultiAgentPendulum({"num_agents": 2}).action_spaces[1].shape == (1,)


def test_make_multi_agent_all_truncated_sets_both_all_flags():
    env = make_multi_agent("CartPole-v1")({"num_agents": 2, "max_episode_steps": 3})
    record = play_episode(env, lambda agent, o: int(o[2] > 0))
    terminateds, truncateds = record["final"]
    assert record["env_steps"] == 3 and truncateds == {0: True, 1: True, ALL_AGENTS: True}
    assert terminateds[ALL_AGENTS]


def test_make_multi_agent_errors_name_the_setting():
    with pytest.raises(MultiAgentEnvError, match=r"num_agents'\] is 0"):
        MultiAgentCartPole({"num_agents": 0})
    with pytest.raises(MultiAgentEnvError, match=r"env_config keys \['colour'\]"):
        MultiAgentCartPole({"num_agents": 1, "colour": "red"})
    with pytest.raises(MultiAgentEnvError, match="got no action"):
        env = MultiAgentCartPole({"num_agents": 1})
        env.reset(seed=0)
        env.step({})


# The example envs' documented dynamics


def test_alternating_turns_only_the_mover_observes_and_returns_match_the_docstring():
    env = AlternatingTurnsEnv()
    obs, _ = env.reset()
    assert list(obs) == ["player_0"]
    obs, rewards, terminateds, _, _ = env.step({"player_0": 1})
    assert list(obs) == ["player_1"] and rewards == {"player_0": 1.0}
    assert terminateds == {ALL_AGENTS: False}
    with pytest.raises(MultiAgentEnvError, match="turn 1 is for 'player_1' alone"):
        env.step({"player_0": 1})
    record = play_episode(AlternatingTurnsEnv())
    assert record["returns"] == {"player_0": 2.5, "player_1": 3.0}
    assert record["agent_steps"] == {"player_0": 5, "player_1": 5}
    assert record["env_steps"] == 10
    assert set(record["final"][0]) == {"player_0", "player_1", ALL_AGENTS}
    # The formula for other actions: player_1 always 0, player_0 always 1, 6 turns.
    record = play_episode(
        AlternatingTurnsEnv({"num_turns": 6}), lambda agent, o: int(agent == "player_0")
    )
    assert record["returns"] == {"player_0": 3.0, "player_1": -1.0}


def test_late_and_early_agents_join_leave_and_keep_final_rewards():
    record = play_episode(LateAndEarlyAgentsEnv())
    assert record["returns"] == {"stayer": 6.0, "leaver": -3.0, "joiner": 8.0}
    assert record["agent_steps"] == {"stayer": 6, "leaver": 3, "joiner": 4}
    assert record["last_obs"]["leaver"][0] == 3.0
    env = LateAndEarlyAgentsEnv({"episode_len": 5, "join_step": 1, "leave_step": 4})
    obs, _ = env.reset()
    assert set(obs) == {"stayer", "leaver"}
    obs, *_ = env.step({"stayer": 0, "leaver": 0})
    assert set(obs) == {"stayer", "leaver", "joiner"} and env.agents[-1] == "joiner"
    assert play_episode(env)["returns"] == {"stayer": 5.0, "leaver": -4.0, "joiner": 8.0}
    with pytest.raises(MultiAgentEnvError, match="join_step 6"):
        LateAndEarlyAgentsEnv({"join_step": 6})


def test_truncated_agent_keeps_its_final_observation_and_reward():
    env = TruncatedAgentEnv()
    env.reset()
    for _ in range(2):
        env.step({"short": 0, "long": 0})
    obs, rewards, terminateds, truncateds, _ = env.step({"short": 0, "long": 0})
    assert truncateds == {"short": True, "long": False, ALL_AGENTS: False}
    assert rewards["short"] == 10.0 and obs["short"][0] == 3.0
    assert env.agents == ["long"]
    record = play_episode(TruncatedAgentEnv())
    assert record["returns"] == {"short": 12.0, "long": 14.0}
    terminateds, truncateds = record["final"]
    assert truncateds == {"long": True, ALL_AGENTS: True} and terminateds["long"] is False
