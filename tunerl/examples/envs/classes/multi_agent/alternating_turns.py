"""A turn-based env: two players alternate, and only the player with an observation acts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tunerl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv, MultiAgentEnvError


class AlternatingTurnsEnv(MultiAgentEnv):
    """Two players, `"player_0"` and `"player_1"`, take `num_turns` turns in alternation
    (`env_config={"num_turns": 10}` by default), `player_0` first. Deterministic.

    - Observation (Box(0, 1, (2,))): `[turn / num_turns, 1.0 if player_0 is to move else 0.0]`,
      given only to the player whose turn it is; `reset()` observes `player_0`.
    - Action: Discrete(2). `step()` takes exactly the mover's action (anything else raises).
    - Rewards of turn `t`: the mover gets `+action` at once (in a step where it has no
      observation: the other player moves next); the waiting player gets `-0.5 * action`,
      but only once it has moved at least once (before that it has not observed).
    - The last turn ends the episode: both players get their final observation, reward and
      `terminateds = True`; `terminateds["__all__"]` is True there and False before.

    Per-player return: `sum(own actions) - 0.5 * sum(the other's actions taken after this
    player's first move)`. With every action 1 and 10 turns: player_0 2.5 (5 - 0.5 * 5),
    player_1 3.0 (5 - 0.5 * 4); 10 env steps, 5 agent steps each.
    """

    PLAYERS = ("player_0", "player_1")

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.num_turns = int((config or {}).get("num_turns", 10))
        if self.num_turns < 2:
            raise MultiAgentEnvError(f"AlternatingTurnsEnv: num_turns {self.num_turns} < 2.")
        self.possible_agents = list(self.PLAYERS)
        self.agents = list(self.PLAYERS)
        self.observation_spaces = {
            p: gym.spaces.Box(0.0, 1.0, (2,), np.float32) for p in self.PLAYERS
        }
        self.action_spaces = {p: gym.spaces.Discrete(2) for p in self.PLAYERS}
        self.turn = 0
        self.has_moved: set[str] = set()

    def _obs(self) -> np.ndarray:
        to_move = 1.0 if self.turn % 2 == 0 else 0.0
        return np.array([self.turn / self.num_turns, to_move], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.turn = 0
        self.has_moved = set()
        self.agents = list(self.PLAYERS)
        return {"player_0": self._obs()}, {"player_0": {}}

    def step(self, action_dict: dict):
        mover = self.PLAYERS[self.turn % 2]
        waiter = self.PLAYERS[(self.turn + 1) % 2]
        if set(action_dict) != {mover}:
            raise MultiAgentEnvError(
                f"AlternatingTurnsEnv: turn {self.turn} is for {mover!r} alone, got actions for "
                f"{sorted(action_dict)}."
            )
        action = int(action_dict[mover])
        rewards = {mover: float(action)}
        if waiter in self.has_moved:
            rewards[waiter] = -0.5 * action
        self.has_moved.add(mover)
        self.turn += 1
        if self.turn == self.num_turns:
            self.agents = []
            obs = {p: self._obs() for p in self.PLAYERS}
            done = dict.fromkeys(self.PLAYERS, True)
            not_truncated = dict.fromkeys(self.PLAYERS, False)
            return (
                obs,
                rewards,
                {**done, ALL_AGENTS: True},
                {**not_truncated, ALL_AGENTS: False},
                {p: {} for p in self.PLAYERS},
            )
        return (
            {waiter: self._obs()},
            rewards,
            {ALL_AGENTS: False},
            {ALL_AGENTS: False},
            {waiter: {}},
        )
