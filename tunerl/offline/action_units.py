"""Actions in files are in the env's units (what RLlib, Minari and d3rlpy store); modules act
in their own (Discrete: indices from 0; Box with `normalize_actions`: [-1, 1] over finite
bounds). The writer converts module -> env units, the reader env -> module units, with the
same linear maps `EnvActions` uses (without its clipping, so a recorded action reads back
as the action the policy took)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def _box_scaling(space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low = space.low.reshape(-1).astype(np.float64)
    high = space.high.reshape(-1).astype(np.float64)
    scaled = np.isfinite(low) & np.isfinite(high)
    return scaled, np.where(scaled, low, 0.0), np.where(scaled, 0.5 * (high - low), 0.0)


def module_to_env_units(space: gym.Space, actions: np.ndarray, normalize: bool) -> np.ndarray:
    """Module actions (a row each) in the env's units, in the module's flat layout."""
    if isinstance(space, gym.spaces.Discrete):
        return actions.astype(np.int64) + int(space.start)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return actions.astype(np.int64) + space.start.reshape(-1).astype(np.int64)
    if isinstance(space, gym.spaces.Box) and normalize:
        scaled, offset, half_range = _box_scaling(space)
        flat = actions.reshape(len(actions), -1).astype(np.float64)
        flat = np.where(scaled, offset + (flat + 1.0) * half_range, flat)
        return flat.astype(np.float32)
    return actions


def env_to_module_units(space: gym.Space, actions: np.ndarray, normalize: bool) -> np.ndarray:
    """The inverse of `module_to_env_units`."""
    if isinstance(space, gym.spaces.Discrete):
        return actions.astype(np.int64) - int(space.start)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return actions.astype(np.int64) - space.start.reshape(-1).astype(np.int64)
    if isinstance(space, gym.spaces.Box):
        flat = actions.reshape(len(actions), -1).astype(np.float64)
        if normalize:
            scaled, offset, half_range = _box_scaling(space)
            safe = np.where(scaled, half_range, 1.0)
            flat = np.where(scaled, (flat - offset) / safe - 1.0, flat)
        return flat.astype(np.float32)
    return actions
