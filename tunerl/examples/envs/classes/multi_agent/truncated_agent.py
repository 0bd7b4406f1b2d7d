"""An env where agents are truncated with a final observation and a reward that must be kept."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tunerl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv, MultiAgentEnvError


class TruncatedAgentEnv(MultiAgentEnv):
    """Two agents with their own time limits (`env_config={"short_limit": 3, "long_limit": 5}`
    by default). Deterministic; rewards do not depend on the actions.

    - Both observe at reset and act every step while active; each gets +1.0 per step, except
      in the step that truncates it, where it gets +10.0.
    - `"short"` is truncated by step `short_limit` (3): that step returns its final observation
      `[3.0]`, its +10.0 and `truncateds["short"] = True`, while `"long"` goes on. Return 12.0.
    - `"long"` is truncated by step `long_limit` (5), which ends the episode with
      `truncateds["__all__"] = True` (and `terminateds["__all__"] = True`, as RLlib's rule
      for an episode that ended because every agent was truncated); its final observation is
      `[5.0]`. Return 14.0. No agent is ever terminated, so a runner bootstraps both.

    Observation (Box(0, long_limit, (1,))): env steps taken so far. Action: Discrete(2),
    ignored. The +10.0 lost with a dropped final transition is what the env makes visible.
    """

    FINAL_REWARD = 10.0

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = config or {}
        self.limits = {
            "short": int(config.get("short_limit", 3)),
            "long": int(config.get("long_limit", 5)),
        }
        if not 1 <= self.limits["short"] < self.limits["long"]:
            raise MultiAgentEnvError(
                f"TruncatedAgentEnv: need 1 <= short_limit < long_limit, got {self.limits}."
            )
        self.possible_agents = ["short", "long"]
        self.agents = ["short", "long"]
        space = gym.spaces.Box(0.0, float(self.limits["long"]), (1,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, space)
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps = 0
        self.agents = ["short", "long"]
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        if set(action_dict) != set(self.agents):
            raise MultiAgentEnvError(
                f"TruncatedAgentEnv step {self.steps + 1}: the agents to act are {self.agents}, "
                f"got actions for {sorted(action_dict)}."
            )
        self.steps += 1
        acted = list(self.agents)
        truncateds = {a: self.steps == self.limits[a] for a in acted}
        rewards = {a: self.FINAL_REWARD if truncateds[a] else 1.0 for a in acted}
        self.agents = [a for a in acted if not truncateds[a]]
        over = not self.agents
        obs = {a: np.array([self.steps], np.float32) for a in acted}
        return (
            obs,
            rewards,
            {**dict.fromkeys(acted, False), ALL_AGENTS: over},
            {**truncateds, ALL_AGENTS: over},
            {a: {} for a in acted},
        )
