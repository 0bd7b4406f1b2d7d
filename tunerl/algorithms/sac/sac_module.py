"""SAC's module: a squashed-Gaussian actor, twin Q critics with target copies, and the
entropy temperature log(alpha), all in one module so they travel with checkpoints."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import torch
from torch import nn

from tunerl.core import columns as c
from tunerl.core.distributions import TanhGaussian
from tunerl.core.rl_module import MLP, RLModule, UnsupportedSpaceError, _head


class QNet(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hiddens: list[int], activation: str):
        super().__init__()
        self.encoder = MLP([obs_dim + action_dim, *hiddens], activation)
        self.head = _head(hiddens[-1], 1, gain=1.0)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(torch.cat([obs, actions], dim=-1))).squeeze(-1)


class SACModule(RLModule):
    """`model_config`: fcnet_hiddens, fcnet_activation, initial_alpha (default 1.0)."""

    def setup(self) -> None:
        if not (
            isinstance(self.action_space, gym.spaces.Box) and len(self.action_space.shape) == 1
        ):
            raise UnsupportedSpaceError(
                f"SAC needs a 1-D Box action space, got {self.action_space}; use DQN or PPO "
                "for discrete actions."
            )
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise UnsupportedSpaceError(
                f"SAC's default module needs a Box observation space, got {self.observation_space}."
            )
        obs_dim = int(torch.tensor(self.observation_space.shape).prod())
        action_dim = self.action_space.shape[0]
        hiddens = list(self.model_config["fcnet_hiddens"])
        activation = self.model_config["fcnet_activation"]
        self.actor_encoder = MLP([obs_dim, *hiddens], activation)
        self.actor_head = _head(hiddens[-1], 2 * action_dim, gain=0.01)
        self.q1, self.q2 = (QNet(obs_dim, action_dim, hiddens, activation) for _ in range(2))
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)
        initial_alpha = float(self.model_config.get("initial_alpha", 1.0))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))

    def get_action_dist_cls(self):
        return TanhGaussian

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(obs.shape[0], -1).float()

    def _forward(self, batch):
        obs = self._flat(batch[c.OBS])
        return {c.ACTION_DIST_INPUTS: self.actor_head(self.actor_encoder(obs))}

    def actor_parameters(self) -> list[nn.Parameter]:
        return [*self.actor_encoder.parameters(), *self.actor_head.parameters()]

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.q1.parameters(), *self.q2.parameters()]

    def q_values(self, obs, actions) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self._flat(self._preprocess({c.OBS: obs})[c.OBS])
        return self.q1(obs, actions), self.q2(obs, actions)

    def target_min_q(self, obs, actions) -> torch.Tensor:
        with torch.no_grad():
            obs = self._flat(self._preprocess({c.OBS: obs})[c.OBS])
            return torch.min(self.target_q1(obs, actions), self.target_q2(obs, actions))

    def update_targets(self, tau: float) -> None:
        """Polyak averaging: target <- tau * online + (1 - tau) * target."""
        if not hasattr(self, "_critic_lists"):  # walked once, not on every update
            self._critic_lists = (
                [*self.q1.parameters(), *self.q2.parameters()],
                [*self.target_q1.parameters(), *self.target_q2.parameters()],
            )
        online, target = self._critic_lists
        with torch.no_grad():
            torch._foreach_lerp_(target, online, tau)
