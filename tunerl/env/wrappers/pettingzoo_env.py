"""PettingZoo envs as tunerl MultiAgentEnvs (RLlib's `ray.rllib.env.wrappers.pettingzoo_env`).

`PettingZooEnv(aec_env)` wraps a turn-based (AEC) env, `ParallelPettingZooEnv(par_env)` a
parallel one. Both, unlike RLlib's:
- keep `possible_agents` in PettingZoo's order and update `agents` after every reset and step
  (RLlib's takes the agent set once, as an unordered set, at construction);
- set the per-agent `observation_spaces` / `action_spaces` dicts and, as RLlib's, Dict
  `observation_space` / `action_space` keyed by agent; agents may have different spaces;
- keep the final observation and reward of every agent that terminates or is truncated.

Envs without `possible_agents` (agents generated as play goes on, such as PettingZoo's
`generated_agents_*` test envs) are reset once at construction; `possible_agents` and the
space dicts are then the agents present after the latest reset, and `get_observation_space`
/ `get_action_space` ask the PettingZoo env, which knows every agent it generated.

Action masks are left in the observation as the env gives them: PettingZoo's classic games
(tictactoe_v3, connect_four_v3) observe a Dict `{"observation": ..., "action_mask": ...}`,
and the RLModule reads the mask from it.

Neither wrapper imports PettingZoo: any object with PettingZoo's API works.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from tunerl.env.multi_agent_env import ALL_AGENTS, AgentID, MultiAgentEnv, MultiAgentEnvError


class _PettingZooBase(MultiAgentEnv):
    """What both wrappers share: agents and spaces read from the wrapped env."""

    def __init__(self, wrapped: Any):
        super().__init__()
        self._wrapped = wrapped
        self._any_terminated = False
        possible = getattr(wrapped, "possible_agents", None)
        # Without possible_agents, agents (and even their spaces) come and go with each reset.
        self._generates_agents = possible is None
        if possible is None:
            wrapped.reset()
            possible = wrapped.agents
        self._read_spaces(possible)

    def _read_spaces(self, possible: list) -> None:
        self.possible_agents = list(possible)
        self.agents = list(self.possible_agents)
        wrapped = self._wrapped
        self.observation_spaces = {a: wrapped.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: wrapped.action_space(a) for a in self.possible_agents}
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def _after_reset(self) -> None:
        self._any_terminated = False
        if self._generates_agents:
            self._read_spaces(self._wrapped.agents)
        self.agents = list(self._wrapped.agents)

    def get_observation_space(self, agent_id: AgentID) -> gym.Space:
        if agent_id in self.observation_spaces and not self._generates_agents:
            return self.observation_spaces[agent_id]
        return self._ask_space(agent_id, "observation")

    def get_action_space(self, agent_id: AgentID) -> gym.Space:
        if agent_id in self.action_spaces and not self._generates_agents:
            return self.action_spaces[agent_id]
        return self._ask_space(agent_id, "action")

    def _ask_space(self, agent_id: AgentID, kind: str) -> gym.Space:
        try:
            return getattr(self._wrapped, f"{kind}_space")(agent_id)
        except (KeyError, ValueError, AttributeError) as error:
            raise MultiAgentEnvError(
                f"{type(self).__name__}({self._wrapped}) has no {kind} space for agent "
                f"{agent_id!r} (possible_agents {self.possible_agents}): the PettingZoo env "
                f"raised {type(error).__name__}: {error}"
            ) from None

    def _all_flags(self, over: bool) -> tuple[bool, bool]:
        """`"__all__"` of terminateds and truncateds (multi_agent_env's rule): the episode is
        over; it is over and no agent was terminated in it."""
        return over, over and not self._any_terminated

    def render(self) -> Any:
        return self._wrapped.render()

    def close(self) -> None:
        self._wrapped.close()


class PettingZooEnv(_PettingZooBase):
    """A turn-based PettingZoo (AEC) env: each step returns the observation of the agent to
    move next (`agent_selection`) and takes the action of that agent alone.

    An agent's reward is what PettingZoo accumulated for it since it last moved, delivered
    with its next observation; an agent that terminates or is truncated gets its final
    observation and reward in the step that ends it (the wrapper steps PettingZoo's dead
    agents with `None` itself). `terminateds["__all__"]` is True when PettingZoo has no
    agents left. The rewards an episode delivers sum to PettingZoo's, agent by agent.
    """

    def __init__(self, env: Any):
        super().__init__(env)
        self.env = env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self._after_reset()
        agent = self.env.agent_selection
        obs, _, _, _, info = self.env.last()
        return {agent: obs}, {agent: info}

    def step(self, action_dict: dict):
        mover = self.env.agent_selection
        if len(action_dict) != 1 or mover not in action_dict:
            raise MultiAgentEnvError(
                f"PettingZooEnv({self.env}).step(): the agent to move is {mover!r} "
                f"(agent_selection), got actions for {list(action_dict)}; in a turn-based env "
                "only the agent with an observation acts."
            )
        self.env.step(action_dict[mover])
        obs, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
        # Agents that are done come first (PettingZoo's dead-step order); each gets its final
        # observation and reward, then leaves. The first live agent is the next to move.
        while self.env.agents:
            agent = self.env.agent_selection
            obs[agent], reward, terminated, truncated, infos[agent] = self.env.last()
            rewards[agent] = float(reward)
            terminateds[agent], truncateds[agent] = bool(terminated), bool(truncated)
            if not (terminated or truncated):
                break
            self._any_terminated = self._any_terminated or bool(terminated)
            self.env.step(None)
        self.agents = list(self.env.agents)
        terminateds[ALL_AGENTS], truncateds[ALL_AGENTS] = self._all_flags(not self.env.agents)
        return obs, rewards, terminateds, truncateds, infos


class ParallelPettingZooEnv(_PettingZooBase):
    """A parallel PettingZoo env: every agent in `agents` acts in every step.

    Rewards, flags and infos are PettingZoo's as they come (an agent that appears gets its
    first observation, and any reward PettingZoo gives it, in the step that adds it); an agent
    that terminates or is truncated gets its final observation and reward in that step and
    leaves `agents`. `terminateds["__all__"]` is True when no agent is left running.
    """

    def __init__(self, env: Any):
        super().__init__(env)
        self.par_env = env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self._after_reset()
        return dict(obs), dict(infos)

    def step(self, action_dict: dict):
        if set(action_dict) != set(self.agents):
            missing = [a for a in self.agents if a not in action_dict]
            extra = [a for a in action_dict if a not in self.agents]
            raise MultiAgentEnvError(
                f"ParallelPettingZooEnv({self.par_env}).step(): every active agent acts in a "
                f"parallel env; missing actions for {missing}, actions for agents not active "
                f"{extra} (active: {self.agents})."
            )
        obs, rewards, terminations, truncations, infos = self.par_env.step(action_dict)
        self.agents = list(self.par_env.agents)
        terminateds = {a: bool(flag) for a, flag in terminations.items()}
        truncateds = {a: bool(flag) for a, flag in truncations.items()}
        self._any_terminated = self._any_terminated or any(terminateds.values())
        running = [a for a in self.agents if not (terminateds.get(a) or truncateds.get(a))]
        terminateds[ALL_AGENTS], truncateds[ALL_AGENTS] = self._all_flags(not running)
        rewards = {a: float(r) for a, r in rewards.items()}
        return dict(obs), rewards, terminateds, truncateds, dict(infos)
