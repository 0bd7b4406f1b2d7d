"""The PettingZoo wrappers on real PettingZoo envs: each wrapped env passes PettingZoo's own
API test; stepped with random legal actions, the wrappers track `agents`, set `"__all__"`
right and deliver, agent by agent, the rewards the raw env gives for the same seed and
actions; every result passes the runner's check."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # mpe2 imports pygame at its top

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mpe2 import simple_spread_v3  # noqa: E402
from pettingzoo.classic import tictactoe_v3  # noqa: E402
from pettingzoo.test import api_test, parallel_api_test  # noqa: E402
from pettingzoo.test.example_envs import (  # noqa: E402
    generated_agents_env_v0,
    generated_agents_parallel_v0,
)

from tunerl.env.multi_agent_env import (  # noqa: E402
    ALL_AGENTS,
    MultiAgentEnvError,
    check_multi_agent_output,
    validate_spaces,
)
from tunerl.env.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv  # noqa: E402

# PettingZoo's API tests warn about the test envs' own quirks (no possible_agents, all-zero
# first observations); those are PettingZoo's findings about its fixtures, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pettingzoo.test")


def spread_aec():
    return simple_spread_v3.env(N=3, local_ratio=0.5, max_cycles=25)


def spread_parallel():
    return simple_spread_v3.parallel_env(N=3, local_ratio=0.5, max_cycles=25)


AEC_ENVS = {
    "tictactoe_v3": tictactoe_v3.env,
    "simple_spread_v3": spread_aec,
    "generated_agents_env_v0": generated_agents_env_v0.env,
}
PARALLEL_ENVS = {
    "simple_spread_v3": spread_parallel,
    "generated_agents_parallel_v0": generated_agents_parallel_v0.parallel_env,
}


@pytest.mark.parametrize("name", sorted(AEC_ENVS))
def test_each_wrapped_aec_env_passes_pettingzoos_api_test(name):
    api_test(AEC_ENVS[name](), num_cycles=100)


@pytest.mark.parametrize("name", sorted(PARALLEL_ENVS))
def test_each_wrapped_parallel_env_passes_pettingzoos_parallel_api_test(name):
    parallel_api_test(PARALLEL_ENVS[name](), num_cycles=100)


def legal_action(rng: np.random.Generator, space: gym.Space, obs) -> int:
    """A uniformly random legal action: from the action mask when the obs carries one."""
    if isinstance(obs, dict) and "action_mask" in obs:
        return int(rng.choice(np.flatnonzero(obs["action_mask"])))
    return int(rng.integers(space.n))


# Turn-based (AEC)


def play_aec(env: PettingZooEnv, seed: int, max_steps: int = 10_000) -> dict:
    """One episode through the wrapper, the way a runner steps it; returns the actions taken,
    who moved, the rewards delivered per agent and the agents after every step."""
    rng = np.random.default_rng(seed)
    validate_spaces(env)
    obs, infos = env.reset(seed=seed)
    check_multi_agent_output(env, "reset", obs, infos=infos)
    seen, done = set(obs), set()
    out = {"actions": [], "movers": [], "returns": {}, "agents": [], "final": {}}
    for _ in range(max_steps):
        (mover,) = [a for a in obs if a not in done]
        action = legal_action(rng, env.get_action_space(mover), obs[mover])
        out["actions"].append(action)
        out["movers"].append(mover)
        obs, rewards, terminateds, truncateds, infos = env.step({mover: action})
        check_multi_agent_output(
            env, "step", obs, rewards, terminateds, truncateds, infos, seen_agents=seen
        )
        seen |= set(obs)
        out["agents"].append(list(env.agents))
        for agent, reward in rewards.items():
            out["returns"][agent] = out["returns"].get(agent, 0.0) + reward
        for agent in obs:
            if terminateds.get(agent) or truncateds.get(agent):
                done.add(agent)
                out["final"][agent] = (obs[agent], terminateds[agent], truncateds[agent])
        live = [a for a in obs if a not in done]
        assert len(live) == (0 if terminateds[ALL_AGENTS] else 1), "one agent moves at a time"
        if terminateds[ALL_AGENTS]:
            out["truncated_all"] = truncateds[ALL_AGENTS]
            return out
    out["truncated_all"] = None
    return out


def replay_raw_aec(env, seed: int, actions: list) -> dict:
    """The same actions on the raw env in PettingZoo's own loop; the reward total per agent is
    summed from `env.rewards` after every step (PettingZoo's per-step rewards), not from
    `last()`, which is what the wrapper reads."""
    env.reset(seed=seed)
    actions = list(actions)
    out = {"movers": [], "returns": dict.fromkeys(env.agents, 0.0), "agents": []}
    for agent in env.agent_iter():
        _, _, terminated, truncated, _ = env.last()
        if terminated or truncated:
            env.step(None)
        else:
            if not actions:
                break
            out["movers"].append(agent)
            env.step(actions.pop(0))
            out["agents"].append(list(env.agents))
        for name, reward in env.rewards.items():
            out["returns"][name] = out["returns"].get(name, 0.0) + float(reward)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tictactoe_turns_masks_and_final_rewards(seed):
    env = PettingZooEnv(tictactoe_v3.env())
    assert env.possible_agents == ["player_1", "player_2"]
    assert isinstance(env.observation_spaces["player_1"], gym.spaces.Dict)
    assert set(env.observation_space.spaces) == {"player_1", "player_2"}
    obs, _ = env.reset(seed=seed)
    assert list(obs) == ["player_1"] and set(obs["player_1"]) == {"observation", "action_mask"}
    played = play_aec(env, seed)
    raw = replay_raw_aec(tictactoe_v3.env(), seed, played["actions"])
    assert played["movers"] == raw["movers"]
    assert played["returns"] == pytest.approx(raw["returns"])
    # Both players end with a final observation and `terminated`, whoever moved last.
    assert set(played["final"]) == {"player_1", "player_2"}
    flags = [(terminated, truncated) for _, terminated, truncated in played["final"].values()]
    assert flags == [(True, False), (True, False)]
    assert played["truncated_all"] is False and env.agents == []
    assert sorted(played["returns"].values()) in ([-1.0, 1.0], [0.0, 0.0])


def test_tictactoe_a_loss_reaches_the_player_that_did_not_move_last():
    decisive = []
    for seed in range(6):
        played = play_aec(PettingZooEnv(tictactoe_v3.env()), seed)
        if played["returns"]["player_1"] != 0.0:
            decisive.append(played)
    assert decisive, "six random games give at least one winner"
    for played in decisive:
        last_mover = played["movers"][-1]
        other = "player_2" if last_mover == "player_1" else "player_1"
        assert played["returns"] == {last_mover: 1.0, other: -1.0}


def test_aec_simple_spread_rewards_of_waiting_agents_are_delivered_and_sum_to_the_raw_env():
    env = PettingZooEnv(spread_aec())
    played = play_aec(env, seed=5)
    raw = replay_raw_aec(spread_aec(), 5, played["actions"])
    assert len(played["movers"]) == 75 == len(raw["movers"])  # 25 cycles x 3 agents
    assert played["movers"] == raw["movers"]
    assert played["agents"][:-1] == raw["agents"][:-1]
    assert played["returns"] == pytest.approx(raw["returns"], rel=1e-9)
    assert all(r < 0 for r in played["returns"].values())
    assert played["truncated_all"] is True
    assert {a for a, (_, _, truncated) in played["final"].items() if truncated} == set(
        env.possible_agents
    )


def test_aec_generated_agents_are_tracked_as_they_appear():
    env = PettingZooEnv(generated_agents_env_v0.env())
    initial = list(env.possible_agents)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    appeared = set()
    for _ in range(300):
        (mover,) = obs
        obs, rewards, terminateds, truncateds, infos = env.step(
            {mover: legal_action(rng, env.get_action_space(mover), obs[mover])}
        )
        check_multi_agent_output(env, "step", obs, rewards, terminateds, truncateds, infos)
        assert env.agents == list(env.env.agents)
        appeared |= set(env.agents) - set(initial)
        if terminateds[ALL_AGENTS]:
            break
    assert appeared, "agents appeared during play"
    newcomer = sorted(appeared)[0]
    assert env.get_observation_space(newcomer) == env.env.observation_space(newcomer)


def test_aec_step_names_whose_turn_it_is():
    env = PettingZooEnv(tictactoe_v3.env())
    env.reset(seed=0)
    with pytest.raises(MultiAgentEnvError) as error:
        env.step({"player_2": 0})
    assert "the agent to move is 'player_1'" in str(error.value)
    assert "got actions for ['player_2']" in str(error.value)


# Parallel


def play_parallel(env: ParallelPettingZooEnv, raw, seed: int, steps: int) -> dict:
    """The wrapper and the raw env side by side, same seed and actions, for up to `steps`
    steps; checks obs, agents and "__all__" at every step and sums rewards."""
    rng = np.random.default_rng(seed)
    validate_spaces(env)
    obs, infos = env.reset(seed=seed)
    raw_obs, _ = raw.reset(seed=seed)
    check_multi_agent_output(env, "reset", obs, infos=infos)
    assert env.agents == list(raw.agents)
    seen = set(obs)
    out = {"returns": {}, "raw_returns": {}, "left": set(), "joined": set(), "steps": 0}
    for _ in range(steps):
        actions = {a: legal_action(rng, env.get_action_space(a), obs[a]) for a in env.agents}
        before = set(env.agents)
        obs, rewards, terminateds, truncateds, infos = env.step(actions)
        raw_obs, raw_rewards, raw_terms, raw_truncs, _ = raw.step(actions)
        check_multi_agent_output(
            env, "step", obs, rewards, terminateds, truncateds, infos, seen_agents=seen
        )
        seen |= set(obs)
        out["steps"] += 1
        assert set(obs) == set(raw_obs)
        for agent in obs:
            np.testing.assert_array_equal(obs[agent], raw_obs[agent])
        assert env.agents == list(raw.agents), "agents tracked in PettingZoo's order"
        out["left"] |= {a for a in before if a not in env.agents}
        out["joined"] |= set(env.agents) - before
        for agent in before:
            done = terminateds[agent] or truncateds[agent]
            assert done == (agent not in env.agents), f"{agent} leaves exactly when done"
        for returns, step_rewards in ((out["returns"], rewards), (out["raw_returns"], raw_rewards)):
            for agent, reward in step_rewards.items():
                returns[agent] = returns.get(agent, 0.0) + float(reward)
        assert terminateds[ALL_AGENTS] == (not raw.agents)
        if terminateds[ALL_AGENTS]:
            out["truncated_all"] = truncateds[ALL_AGENTS]
            out["final_truncateds"] = {a: raw_truncs[a] for a in raw_truncs}
            return out
    return out


def test_parallel_simple_spread_matches_the_raw_env():
    env = ParallelPettingZooEnv(spread_parallel())
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.observation_spaces["agent_1"].shape == (18,)
    assert env.action_spaces["agent_2"] == gym.spaces.Discrete(5)
    assert env.get_observation_space("agent_0") is env.observation_space["agent_0"]
    played = play_parallel(env, spread_parallel(), seed=3, steps=100)
    assert played["steps"] == 25 and played["truncated_all"] is True
    assert played["returns"] == pytest.approx(played["raw_returns"], rel=1e-12)
    assert played["left"] == set(env.possible_agents) and env.agents == []
    # A second episode on the same wrapper starts with every agent again.
    assert set(env.reset(seed=4)[0]) == set(env.possible_agents)


def test_parallel_generated_agents_appear_and_vanish():
    # This env never ends by itself (its step counter never advances): 150 steps.
    env = ParallelPettingZooEnv(generated_agents_parallel_v0.parallel_env())
    assert len(env.possible_agents) == 5, "no possible_agents: the agents after one reset"
    played = play_parallel(env, generated_agents_parallel_v0.parallel_env(), seed=7, steps=150)
    assert played["steps"] == 150
    assert played["joined"] and played["left"], (played["joined"], played["left"])
    assert played["returns"] == played["raw_returns"]
    assert sum(played["returns"].values()) == 150.0  # one reward of 1 per step
    newcomer = sorted(played["joined"])[0]
    assert newcomer not in env.possible_agents
    assert env.get_action_space(newcomer) == env.par_env.action_space(newcomer)


def test_parallel_step_names_missing_and_extra_agents():
    env = ParallelPettingZooEnv(spread_parallel())
    env.reset(seed=0)
    with pytest.raises(MultiAgentEnvError) as error:
        env.step({"agent_0": 0, "agent_1": 0, "ghost": 1})
    assert "missing actions for ['agent_2']" in str(error.value)
    assert "['ghost']" in str(error.value)


def test_an_unknown_agent_space_is_a_clear_error():
    env = ParallelPettingZooEnv(spread_parallel())
    with pytest.raises(MultiAgentEnvError, match=r"no observation space for agent 'agent_9'"):
        env.get_observation_space("agent_9")
