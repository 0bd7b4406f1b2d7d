"""The default RLModule: MLP policy and value networks built from `model_config`, for
PPO, IMPALA, APPO and the custom algorithms that use no module of their own."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tunerl.core import columns
from tunerl.core.rl_module.rl_module import (
    ACTIVATIONS,
    RLModule,
    action_distribution,
    flatten_observations,
    mask_logits,
    masked_input_size,
)


class MLP(nn.Module):
    """Linear layers, each followed by the activation; called functionally, which costs less
    per call than a stack of nn.Module activations."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            linear = nn.Linear(fan_in, fan_out)
            nn.init.orthogonal_(linear.weight, gain=np.sqrt(2))
            nn.init.zeros_(linear.bias)
            self.layers.append(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.activation(nn.functional.linear(x, layer.weight, layer.bias))
        return x


def linear_head(fan_in: int, fan_out: int, gain: float) -> nn.Linear:
    # Small policy-head weights keep the first policy close to uniform (Andrychowicz et al.
    # 2021, "What Matters in On-Policy RL", decision C57).
    linear = nn.Linear(fan_in, fan_out)
    nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)
    return linear


class DefaultRLModule(RLModule):
    """MLP policy and value networks from `model_config`: `fcnet_hiddens`,
    `fcnet_activation`, `vf_share_layers`, `free_log_std` (Box actions: a log-std per action
    dimension that does not depend on the observation). Reads and acts in the spaces
    `SUPPORTED_OBSERVATIONS` and `SUPPORTED_ACTIONS` name.

    An observation `Dict({"action_mask": ..., "observation": ...})` with Discrete actions
    (see `action_mask_layout`) is read without its mask, and the mask sets the logits of
    illegal actions to `MASKED_LOGIT`, so no illegal action is sampled or chosen greedily."""

    def setup(self) -> None:
        obs_space, action_space = self.observation_space, self.action_space
        reader = "The default RLModule (PPO's, IMPALA's and APPO's)"
        self.action_mask, obs_dim = masked_input_size(obs_space, action_space, reader)
        _, self.num_outputs = action_distribution(action_space, reader)
        self.obs_dim = obs_dim
        config = self.model_config
        activation_name = config["fcnet_activation"]
        if activation_name not in ACTIVATIONS:
            raise ValueError(
                f"model_config['fcnet_activation'] = {activation_name!r} is not one of "
                f"{sorted(ACTIVATIONS)}."
            )
        hiddens = list(config["fcnet_hiddens"])
        sizes = [obs_dim, *hiddens]
        last = sizes[-1]
        self.free_log_std = bool(config["free_log_std"]) and isinstance(
            action_space, gym.spaces.Box
        )
        pi_outputs = self.num_outputs // 2 if self.free_log_std else self.num_outputs
        self.pi_encoder = MLP(sizes, activation_name)
        self.pi_head = linear_head(last, pi_outputs, gain=0.01)
        if self.free_log_std:
            self.log_std = nn.Parameter(torch.zeros(pi_outputs))
        self.vf_share_layers = bool(config["vf_share_layers"])
        self.vf_encoder = None if self.vf_share_layers else MLP(sizes, activation_name)
        self.vf_head = linear_head(last, 1, gain=1.0)

    def _forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obs = flatten_observations(self.observation_space, batch[columns.OBS])
        legal = None
        if self.action_mask is not None:
            obs, legal = self.action_mask.split(obs)
        features = self.pi_encoder(obs)
        dist_inputs = self.pi_head(features)
        if legal is not None:
            dist_inputs = mask_logits(dist_inputs, legal)
        if self.free_log_std:
            dist_inputs = torch.cat([dist_inputs, self.log_std.expand_as(dist_inputs)], dim=-1)
        vf_features = features if self.vf_encoder is None else self.vf_encoder(obs)
        return {
            columns.ACTION_DIST_INPUTS: dist_inputs,
            columns.VF_PREDS: self.vf_head(vf_features).squeeze(-1),
        }
