"""SAC's module (SAC's and CQL's): a squashed-Gaussian actor, twin Q critics with target
copies, and the entropy temperature log(alpha), all in one module so they travel with
checkpoints.

Discrete actions take an observation `Dict({"action_mask": ..., "observation": ...})` (see
`action_mask_layout`): actor and critics read the observation alone, and the actor's logits
of illegal actions are `MASKED_LOGIT`, so pi gives them no probability and the soft values,
which weigh every action's Q by pi, never count them."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tunerl.core import columns as c
from tunerl.core.distributions import Categorical, TanhGaussian
from tunerl.core.optim import FlatParameters, polyak_update_
from tunerl.core.rl_module import (
    ACTIVATIONS,
    MLP,
    SUPPORTED_ACTIONS,
    RLModule,
    UnsupportedSpaceError,
    flatten_observations,
    linear_head,
)
from tunerl.core.rl_module.rl_module import mask_logits, masked_input_size


class TwinQ(nn.Module):
    """SAC's two critics as one network: each layer's weights of Q1 and Q2 are stacked along a
    leading dimension of 2, so a layer of both critics is one batched matmul (`torch.baddbmm`)
    instead of two. On a CPU, an update of these small networks costs per op, not per
    multiply: with the stacked critics an SAC update took 2.1-3.0 ms against 2.9-3.4 ms
    with two (interleaved runs, README).

    Initialized as two separate MLPs would be (orthogonal, gain sqrt(2); head gain 1), from
    the same random stream in the same order, then stacked. `forward(obs_and_actions)` returns
    both critics' values, shape (2, batch); with `num_outputs` > 1 (discrete SAC: the input is
    the observation, an output per action) shape (2, batch, num_outputs)."""

    def __init__(self, in_dim: int, hiddens: list[int], activation: str, num_outputs: int = 1):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.num_outputs = num_outputs
        critics = [
            [
                *MLP([in_dim, *hiddens], activation).layers,
                linear_head(hiddens[-1], num_outputs, 1.0),
            ]
            for _ in range(2)
        ]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([q1.weight.T, q2.weight.T]).contiguous())
            for q1, q2 in zip(*critics)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([q1.bias, q2.bias]).unsqueeze(1)) for q1, q2 in zip(*critics)
        )
        self.layers = list(zip(self.weights, self.biases))  # walked once, not per call

    def forward(self, x: torch.Tensor, detach_weights: bool = False) -> torch.Tensor:
        """Both critics on `x` (batch, in_dim). `detach_weights`: gradients flow to `x` only
        (the actor's loss needs dQ/da, not the critics' weight gradients)."""
        h = x.unsqueeze(0).expand(2, *x.shape)
        *hidden, (head_weight, head_bias) = self.layers
        if detach_weights:
            hidden = [(w.detach(), b.detach()) for w, b in hidden]
            head_weight, head_bias = head_weight.detach(), head_bias.detach()
        for weight, bias in hidden:
            h = self.activation(torch.baddbmm(bias, h, weight))
        if self.num_outputs > 1:  # one value per discrete action: (2, batch, num_outputs)
            return torch.baddbmm(head_bias, h, head_weight)
        # The one-output head as multiply-and-sum: a batched matmul with one output column
        # costs three times as much here.
        return (h * head_weight.transpose(1, 2)).sum(-1) + head_bias[..., 0]


def upgrade_critic_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module state saved with separate critics (`q1.`, `q2.`, `target_q1.`, `target_q2.`
    Linear layers, tunerl 0.1.0 before the stacked critics) in the stacked layout; any other
    state is returned as it is."""
    if "q1.head.weight" not in state:
        return state
    state = dict(state)
    pairs = {"twin_q": ("q1", "q2"), "target_twin_q": ("target_q1", "target_q2")}
    for online, (first, second) in pairs.items():
        layers = [f"encoder.layers.{i}" for i in range(_count_layers(state, first))] + ["head"]
        for i, layer in enumerate(layers):
            w1, w2 = (state.pop(f"{name}.{layer}.weight") for name in (first, second))
            b1, b2 = (state.pop(f"{name}.{layer}.bias") for name in (first, second))
            state[f"{online}.weights.{i}"] = torch.stack([w1.T, w2.T]).contiguous()
            state[f"{online}.biases.{i}"] = torch.stack([b1, b2]).unsqueeze(1)
    return state


def _count_layers(state: dict[str, torch.Tensor], critic: str) -> int:
    prefix = f"{critic}.encoder.layers."
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def _check_box_actions(space: gym.Space) -> None:
    """SAC's continuous actions: a float Box (of any shape, acted in flat) whose bounds are
    all finite, since the squashed Gaussian maps into them."""
    if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
        raise UnsupportedSpaceError(
            f"SAC needs a float Box or a Discrete action space, got {space}. PPO, IMPALA and "
            f"APPO take {SUPPORTED_ACTIONS}."
        )
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise UnsupportedSpaceError(
            f"SAC squashes its actions into the bounds of the action space, and {space} has "
            "infinite bounds. Give the env finite bounds (e.g. gymnasium.wrappers."
            "TransformAction(env, f, Box(low, high))), or use PPO, which takes unbounded Box "
            "actions."
        )


class SACModule(RLModule):
    """`model_config`: fcnet_hiddens, fcnet_activation, initial_alpha (default 1.0)."""

    def setup(self) -> None:
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        if not self.discrete:
            _check_box_actions(self.action_space)
        reader = "SAC's module"
        self.action_mask, obs_dim = masked_input_size(
            self.observation_space, self.action_space, reader
        )
        hiddens = list(self.model_config["fcnet_hiddens"])
        activation = self.model_config["fcnet_activation"]
        self.actor_encoder = MLP([obs_dim, *hiddens], activation)
        if self.discrete:
            # Christodoulou 2019: logits, and critics that rate every action of a state.
            num_actions = int(self.action_space.n)
            self.actor_head = linear_head(hiddens[-1], num_actions, gain=0.01)
            self.twin_q = TwinQ(obs_dim, hiddens, activation, num_outputs=num_actions)
        else:
            action_dim = int(np.prod(self.action_space.shape))
            self.actor_head = linear_head(hiddens[-1], 2 * action_dim, gain=0.01)
            self.twin_q = TwinQ(obs_dim + action_dim, hiddens, activation)
        self.target_twin_q = copy.deepcopy(self.twin_q).requires_grad_(False)
        initial_alpha = float(self.model_config.get("initial_alpha", 1.0))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))
        # Walked once, not on every update (Module.parameters() costs ~0.1 ms per update).
        self._actor_parameters = [*self.actor_encoder.parameters(), *self.actor_head.parameters()]
        # Each in one flat tensor: the target update is one op (core/optim.py).
        self._critics = FlatParameters(self.twin_q.parameters())
        self._target_critics = FlatParameters(self.target_twin_q.parameters())

    def get_action_dist_cls(self):
        return Categorical if self.discrete else TanhGaussian

    def _split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The networks' input of a batch of (preprocessed) observations, and its legal
        actions (None without an action mask)."""
        flat = flatten_observations(self.observation_space, obs)
        if self.action_mask is None:
            return flat, None
        return self.action_mask.split(flat)

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        return self._split(obs)[0]

    def _forward(self, batch):
        obs, legal = self._split(batch[c.OBS])
        logits = self.actor_head(self.actor_encoder(obs))
        if legal is not None:
            logits = mask_logits(logits, legal)
        return {c.ACTION_DIST_INPUTS: logits}

    def legal_actions(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The legal actions of a batch of raw observations (bools, one per action), or None
        without an action mask."""
        return self._split(self._preprocess({c.OBS: obs})[c.OBS])[1]

    def actor_parameters(self) -> list[nn.Parameter]:
        return self._actor_parameters

    def critic_parameters(self) -> list[nn.Parameter]:
        return self._critics.params

    def _critic_input(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        obs = self._flat(self._preprocess({c.OBS: obs})[c.OBS])
        return torch.cat([obs, actions], dim=-1)

    def q_values(
        self, obs: torch.Tensor, actions: torch.Tensor, detach_weights: bool = False
    ) -> torch.Tensor:
        """Both critics' Q(s, a), shape (2, batch)."""
        return self.twin_q(self._critic_input(obs, actions), detach_weights)

    def all_q_values(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Discrete actions: both critics' Q(s, .) for every action, shape (2, batch,
        num_actions); the target critics' (without gradients) with `target`."""
        obs = self._flat(self._preprocess({c.OBS: obs})[c.OBS])
        if target:
            with torch.no_grad():
                return self.target_twin_q(obs)
        return self.twin_q(obs)

    def target_min_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.target_twin_q(self._critic_input(obs, actions)).min(dim=0).values

    def update_targets(self, tau: float) -> None:
        """Polyak averaging: target <- tau * online + (1 - tau) * target."""
        polyak_update_(self._target_critics, self._critics, tau)

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        super().set_state(upgrade_critic_state(state))
