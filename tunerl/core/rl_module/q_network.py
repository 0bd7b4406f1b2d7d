"""DQN's module (DQN's and discrete CQL's): Q-values from an MLP with optional dueling
heads, a target copy, and epsilon-greedy acting expressed as a categorical distribution.

Epsilon is a buffer of the module, so the learner's schedule reaches the env runners with
every weight sync, and `action_dist_inputs` are the log-probabilities of epsilon-greedy:
log(eps / n + (1 - eps) * [a == argmax Q]).

An observation `Dict({"action_mask": ..., "observation": ...})` (see `action_mask_layout`)
masks the Q-values: the network reads the observation alone, an illegal action's Q-value is
`MASKED_LOGIT`, so neither the greedy action, the random one of epsilon-greedy (uniform over
the legal actions), nor the bootstrap's max over the next state's actions is ever illegal.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import torch
from torch import nn

from tunerl.core import columns as c
from tunerl.core.optim import FlatParameters, polyak_update_
from tunerl.core.rl_module import (
    MLP,
    SUPPORTED_ACTIONS,
    RLModule,
    UnsupportedSpaceError,
    flatten_observations,
    linear_head,
)
from tunerl.core.rl_module.rl_module import mask_action_values, masked_input_size

Q_VALUES = "q_values"


class QNetwork(nn.Module):
    def __init__(
        self, obs_dim: int, num_actions: int, hiddens: list[int], activation: str, dueling: bool
    ):
        super().__init__()
        self.encoder = MLP([obs_dim, *hiddens], activation)
        last = hiddens[-1] if hiddens else obs_dim
        self.dueling = dueling
        self.advantage = linear_head(last, num_actions, gain=1.0)
        self.value = linear_head(last, 1, gain=1.0) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.encoder(obs)
        advantages = self.advantage(features)
        if self.value is None:
            return advantages
        # Wang et al. 2016, eq. 9: subtracting the mean advantage makes V and A identifiable.
        return self.value(features) + advantages - advantages.mean(dim=-1, keepdim=True)


class DQNModule(RLModule):
    """`model_config`: fcnet_hiddens, fcnet_activation, dueling (default True)."""

    def setup(self) -> None:
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(
                f"DQN needs a Discrete action space, got {self.action_space}. PPO, IMPALA and "
                f"APPO take {SUPPORTED_ACTIONS}; SAC takes Discrete and bounded Box actions."
            )
        self.num_actions = int(self.action_space.n)
        reader = "DQN's module"
        self.action_mask, obs_dim = masked_input_size(
            self.observation_space, self.action_space, reader
        )
        config = self.model_config
        self.q_net = QNetwork(
            obs_dim,
            self.num_actions,
            list(config["fcnet_hiddens"]),
            config["fcnet_activation"],
            bool(config.get("dueling", True)),
        )
        self.target_q_net = copy.deepcopy(self.q_net).requires_grad_(False)
        # Each in one flat tensor: the target update is one op (core/optim.py).
        self._online = FlatParameters(self.q_net.parameters())
        self._target = FlatParameters(self.target_q_net.parameters())
        self.register_buffer("epsilon", torch.tensor(1.0))

    def _q_values(self, net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`net`'s Q-values of a batch of (preprocessed) observations, illegal actions masked,
        and the legal actions (all of them without a mask)."""
        flat = flatten_observations(self.observation_space, obs)
        if self.action_mask is None:
            q = net(flat)
            return q, torch.ones_like(q, dtype=torch.bool)
        features, legal = self.action_mask.split(flat)
        return mask_action_values(net(features), legal), legal

    def _forward(self, batch):
        q, _ = self._q_values(self.q_net, batch[c.OBS])
        return {Q_VALUES: q, c.ACTION_DIST_INPUTS: q}

    def _forward_exploration(self, batch):
        q, legal = self._q_values(self.q_net, batch[c.OBS])
        greedy = nn.functional.one_hot(q.argmax(dim=-1), self.num_actions).to(q.dtype)
        if self.action_mask is None:
            uniform = 1.0 / self.num_actions
        else:  # uniform over the legal actions (over all of them where none is legal)
            legal = legal | ~legal.any(dim=-1, keepdim=True)
            uniform = legal / legal.sum(dim=-1, keepdim=True)
        probs = self.epsilon * uniform + (1.0 - self.epsilon) * greedy
        return {Q_VALUES: q, c.ACTION_DIST_INPUTS: probs.clamp_min(1e-12).log()}

    def online_parameters(self) -> list[nn.Parameter]:
        return self._online.params

    def target_q_values(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._q_values(self.target_q_net, self._preprocess({c.OBS: obs})[c.OBS])[0]

    def update_target(self, tau: float) -> None:
        """target <- tau * online + (1 - tau) * target (tau = 1: a hard copy)."""
        polyak_update_(self._target, self._online, tau)
