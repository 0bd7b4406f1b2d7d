"""PolicySpec: one entry of `.multi_agent(policies={module_id: PolicySpec(...)})`."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym


@dataclasses.dataclass
class PolicySpec:
    """One module of a multi-agent config, as RLlib's PolicySpec: its spaces (None: those of
    the first agent mapped to it) and `config`, overrides of the algorithm's config for this
    module (e.g. `{"lr": 1e-4}` or `{"model_config": {"fcnet_hiddens": [32]}}`).
    `policy_class` is RLlib's old-stack policy class; tunerl builds RLModules, so it must be
    None (give a module class with `.rl_module(rl_module_spec=MultiRLModuleSpec(...))`)."""

    policy_class: Any = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    config: dict[str, Any] | None = None
