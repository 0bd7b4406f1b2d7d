"""An env whose agent set changes within an episode: one agent joins late, one leaves early."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tunerl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv, MultiAgentEnvError


class LateAndEarlyAgentsEnv(MultiAgentEnv):
    """Three agents over an episode of `episode_len` env steps (defaults in brackets:
    `env_config={"episode_len": 6, "join_step": 2, "leave_step": 3}`). Deterministic; rewards
    do not depend on the actions.

    - `"stayer"` acts in every step (6) and gets +1.0 per step: return 6.0.
    - `"leaver"` acts in steps 1..leave_step (3) and gets -1.0 per step; the step `leave_step`
      returns its final observation, its last reward and `terminateds["leaver"] = True` while
      the episode goes on: return -3.0.
    - `"joiner"` has no observation until the result of step `join_step` (2); it acts in steps
      join_step+1..episode_len (4) and gets +2.0 per step: return 8.0.
    - Step `episode_len` terminates `stayer` and `joiner` (final observations included) and
      sets `terminateds["__all__"] = True`. Sum over agents: 11.0 per episode.

    Observation (Box(0, episode_len, (1,))): the number of env steps taken so far. Action:
    Discrete(2), ignored. `step()` needs an action from exactly the agents that observed.
    """

    REWARD_PER_STEP = {"stayer": 1.0, "leaver": -1.0, "joiner": 2.0}

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = config or {}
        self.episode_len = int(config.get("episode_len", 6))
        self.join_step = int(config.get("join_step", 2))
        self.leave_step = int(config.get("leave_step", 3))
        if not (1 <= self.join_step < self.episode_len and 1 <= self.leave_step < self.episode_len):
            raise MultiAgentEnvError(
                f"LateAndEarlyAgentsEnv: join_step {self.join_step} and leave_step "
                f"{self.leave_step} must lie in 1..episode_len-1 ({self.episode_len - 1})."
            )
        self.possible_agents = ["stayer", "leaver", "joiner"]
        self.agents = ["stayer", "leaver"]
        space = gym.spaces.Box(0.0, float(self.episode_len), (1,), np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, space)
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.steps], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps = 0
        self.agents = ["stayer", "leaver"]
        return {a: self._obs() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        if set(action_dict) != set(self.agents):
            raise MultiAgentEnvError(
                f"LateAndEarlyAgentsEnv step {self.steps + 1}: the agents to act are "
                f"{self.agents}, got actions for {sorted(action_dict)}."
            )
        self.steps += 1
        acted = list(self.agents)
        rewards = {a: self.REWARD_PER_STEP[a] for a in acted}
        terminateds = {a: False for a in acted}
        if self.steps == self.leave_step:
            terminateds["leaver"] = True
        if self.steps == self.episode_len:
            terminateds = dict.fromkeys(acted, True)
        self.agents = [a for a in acted if not terminateds[a]]
        if self.steps == self.join_step:
            self.agents.append("joiner")
        observed = acted + (["joiner"] if self.steps == self.join_step else [])
        terminateds[ALL_AGENTS] = self.steps == self.episode_len
        return (
            {a: self._obs() for a in observed},
            rewards,
            terminateds,
            {ALL_AGENTS: False},
            {a: {} for a in observed},
        )
