"""An env whose legal actions change every step: RLlib's `ActionMaskEnv` (same place, same
observation keys, the same ValueError for an illegal action), with a reward to learn.

Every step draws a payoff in [0, 1) for each of `num_actions` actions and a random set of
legal actions (each legal with probability `legal_prob`, at least one). The observation is
`{"action_mask": 1.0 per legal action, "observations": the payoffs}`; the reward is the
chosen action's payoff; an illegal action raises ValueError, so a policy that ignores the
mask fails at once instead of scoring a little less. The best policy takes the legal action
with the largest payoff; one that picks a legal action at random scores 0.5 a step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ActionMaskEnv(gym.Env):
    """`config`: num_actions (6), episode_len (10), legal_prob (0.5)."""

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        self.num_actions = int(config.pop("num_actions", 6))
        self.episode_len = int(config.pop("episode_len", 10))
        self.legal_prob = float(config.pop("legal_prob", 0.5))
        if config:
            raise ValueError(
                f"ActionMaskEnv: env_config keys {sorted(config)} are unknown; it takes "
                "num_actions, episode_len and legal_prob."
            )
        if self.num_actions < 1 or self.episode_len < 1 or not 0.0 < self.legal_prob <= 1.0:
            raise ValueError(
                f"ActionMaskEnv: num_actions={self.num_actions} and episode_len="
                f"{self.episode_len} must be at least 1 and legal_prob={self.legal_prob} in "
                "(0, 1]."
            )
        n = self.num_actions
        self.action_space = gym.spaces.Discrete(n)
        self.observation_space = gym.spaces.Dict(
            {
                "action_mask": gym.spaces.Box(0.0, 1.0, (n,), np.float32),
                "observations": gym.spaces.Box(0.0, 1.0, (n,), np.float32),
            }
        )
        self._t = 0
        self._payoffs = np.zeros(n, np.float32)
        self._legal = np.ones(n, np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        rng = self.np_random
        self._payoffs = rng.random(self.num_actions, dtype=np.float32)
        legal = rng.random(self.num_actions) < self.legal_prob
        legal[rng.integers(self.num_actions)] = True
        self._legal = legal.astype(np.float32)
        return {"action_mask": self._legal.copy(), "observations": self._payoffs.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._observe(), {}

    def step(self, action):
        action = int(action)
        if not self._legal[action]:
            raise ValueError(
                f"ActionMaskEnv: action {action} is illegal in this step; the legal actions "
                f"were {np.flatnonzero(self._legal).tolist()}."
            )
        reward = float(self._payoffs[action])
        self._t += 1
        return self._observe(), reward, False, self._t >= self.episode_len, {}
