"""A centralised critic (MAPPO, Yu et al. 2021, arXiv 2103.01955): the policy reads the agent's
own observation, the value function the global state of the env.

The multi-agent env runner records, for every module with `uses_global_state = True`, the
columns `state` and `new_state` (the global state before and after the row's step) and passes
`state` to the module when it acts; GAE bootstraps on `new_state` and PPO's loss passes `state`
to `forward_train`. The global state is `env.state()` when the env has one (PettingZoo parallel
envs do; `state_space` gives its size), else every possible agent's latest observation,
flattened and concatenated in `possible_agents` order, with zeros for an agent that has not
observed yet or left in an earlier step (`GlobalState`).

Use it with `PPOConfig().training(central_critic=True)`, or name the module:
`.rl_module(rl_module_spec=RLModuleSpec(module_class=CentralCriticRLModule))`. PPO fills in
`model_config["global_state_dim"]` from the env; the global state is not normalized by
`observation_filter`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from tunerl.core import columns
from tunerl.core.rl_module.default_rl_module import MLP, DefaultRLModule, linear_head
from tunerl.core.rl_module.rl_module import flatten_observations, mask_logits

# The model_config key holding the size of the global state vector.
GLOBAL_STATE_DIM = "global_state_dim"


def uses_global_state(module_or_class: Any) -> bool:
    """Whether a module (or module class) asks the env runner for the global state."""
    return bool(getattr(module_or_class, "uses_global_state", False))


class CentralCriticRLModule(DefaultRLModule):
    """DefaultRLModule's policy network on the agent's observation, and a value network on
    the global state (`model_config["global_state_dim"]` inputs; same `fcnet_hiddens` and
    `fcnet_activation`); action masks as DefaultRLModule's. Without a `state` in the batch
    (deployment) it returns only `action_dist_inputs`."""

    uses_global_state: ClassVar[bool] = True

    def setup(self) -> None:
        config = self.model_config
        state_dim = config.get(GLOBAL_STATE_DIM)
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(
                f"CentralCriticRLModule needs model_config[{GLOBAL_STATE_DIM!r}], the size of "
                f"the global state (a positive int); got {state_dim!r}. PPO sets it from the "
                "env; elsewhere give it in model_config."
            )
        if config["vf_share_layers"]:
            raise ValueError(
                "CentralCriticRLModule's value network reads the global state, the policy the "
                "agent's observation, so they cannot share layers: set vf_share_layers=False."
            )
        super().setup()
        self.global_state_dim = state_dim
        sizes = [state_dim, *config["fcnet_hiddens"]]
        self.vf_encoder = MLP(sizes, config["fcnet_activation"])
        self.vf_head = linear_head(sizes[-1], 1, gain=1.0)

    def _forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obs = flatten_observations(self.observation_space, batch[columns.OBS])
        legal = None
        if self.action_mask is not None:
            obs, legal = self.action_mask.split(obs)
        dist_inputs = self.pi_head(self.pi_encoder(obs))
        if legal is not None:
            dist_inputs = mask_logits(dist_inputs, legal)
        if self.free_log_std:
            dist_inputs = torch.cat([dist_inputs, self.log_std.expand_as(dist_inputs)], dim=-1)
        out = {columns.ACTION_DIST_INPUTS: dist_inputs}
        state = batch.get(columns.STATE)
        if state is not None:
            features = self.vf_encoder(state.reshape(len(state), -1).float())
            out[columns.VF_PREDS] = self.vf_head(features).squeeze(-1)
        return out


class GlobalState:
    """The global state of the episode running in one env: `reset(obs)` and `step(obs,
    terminateds, truncateds)` return it as a flat float32 vector."""

    def __init__(self, env: Any):
        self.env = env
        self.from_env = callable(getattr(env, "state", None))
        self.agents = list(getattr(env, "possible_agents", None) or [])
        self.spaces = {agent: env.get_observation_space(agent) for agent in self.agents}
        self.latest: dict[Any, np.ndarray] = {}

    def reset(self, obs: dict[Any, Any]) -> np.ndarray:
        self.latest = {}
        return self.step(obs, {}, {})

    def step(self, obs: dict[Any, Any], terminateds: dict, truncateds: dict) -> np.ndarray:
        if self.from_env:
            return np.asarray(self.env.state(), dtype=np.float32).reshape(-1)
        for agent, agent_obs in obs.items():
            if agent in self.spaces:
                self.latest[agent] = gym.spaces.utils.flatten(self.spaces[agent], agent_obs)
        parts = [
            self.latest.get(agent, np.zeros(gym.spaces.utils.flatdim(space), np.float32))
            for agent, space in self.spaces.items()
        ]
        state = np.concatenate(parts).astype(np.float32)
        # An agent done in this step still counts in this step's state (its final
        # observation, which a truncated agent bootstraps on); from the next step it is absent.
        for agent in [*terminateds, *truncateds]:
            if terminateds.get(agent) or truncateds.get(agent):
                self.latest.pop(agent, None)
        return state


def global_state_dim(env: Any) -> int:
    """The size of the global state `GlobalState` makes for `env` (resets `env` when it has
    a `state()` but no `state_space`)."""
    if callable(getattr(env, "state", None)):
        space = getattr(env, "state_space", None)
        if isinstance(space, gym.Space):
            return int(gym.spaces.utils.flatdim(space))
        env.reset()
        return int(np.asarray(env.state()).size)
    agents = list(getattr(env, "possible_agents", None) or [])
    if not agents:
        raise ValueError(
            f"{type(env).__name__} has neither state() nor possible_agents, so there is no "
            "global state for a centralised critic; give the env a state() or possible_agents."
        )
    return int(sum(gym.spaces.utils.flatdim(env.get_observation_space(a)) for a in agents))


__all__ = [
    "GLOBAL_STATE_DIM",
    "CentralCriticRLModule",
    "GlobalState",
    "global_state_dim",
    "uses_global_state",
]
