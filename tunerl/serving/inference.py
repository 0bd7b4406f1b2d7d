"""Greedy inference with one module of a checkpoint: what `tunerl serve`, the Ray Serve
deployment and the exports compute. Loading follows the checkpoint trust rules (nothing
imported unless allowed, nothing named in a file called)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunerl.core import checkpoint_layout, columns
from tunerl.core.checkpoint_io import CheckpointError
from tunerl.core.env_runner import EnvActions
from tunerl.core.rl_module import MODULE_SPEC_FILE, RLModule
from tunerl.tuning.export import EXPORT_MODULES_DIR


def module_folder(path: str | os.PathLike, module_id: str = columns.DEFAULT_MODULE_ID) -> Path:
    """The folder of module `module_id` in `path`: a module folder itself, an export
    (`rl_module/<id>/`) or an algorithm checkpoint (`learner_group/learner/rl_module/<id>/`)."""
    path = Path(path)
    for candidate in (
        path,
        path / EXPORT_MODULES_DIR / module_id,
        path / checkpoint_layout.module_dir(module_id),
    ):
        if (candidate / MODULE_SPEC_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"{path} holds no module {module_id!r}: expected {MODULE_SPEC_FILE} in it, in "
        f"{EXPORT_MODULES_DIR}/{module_id}/ (an export) or in "
        f"{checkpoint_layout.module_dir(module_id)}/ (an algorithm checkpoint)."
    )


def load_module(
    path: str | os.PathLike,
    module_id: str = columns.DEFAULT_MODULE_ID,
    allow_import: Sequence[str] = (),
) -> RLModule:
    return RLModule.from_checkpoint(module_folder(path, module_id), allow_import)


class GreedyPolicy:
    """`forward_inference` and the distribution's most likely action, mapped to the env's
    action values (Discrete `start` added; Box scaled to its bounds as the default
    `normalize_actions=True` does). Thread-safe."""

    def __init__(self, module: RLModule):
        self.module = module.eval()
        self._dist_cls = module.get_action_dist_cls()
        self._env_actions = EnvActions(module.action_space, True, True)
        space = module.observation_space
        self._dtype = np.float32 if space.dtype is None or space.dtype.kind == "f" else np.int64
        self.obs_shape = tuple(space.shape or ())
        self._lock = threading.Lock()

    def observations(self, values: Any) -> np.ndarray:
        """A batch of observations as an array; ValueError naming the expected shape."""
        try:
            obs = np.asarray(values, dtype=self._dtype)
        except (TypeError, ValueError):
            raise ValueError("observations must be numbers (a list per observation)") from None
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(
                f"observations of shape {list(obs.shape[1:])}; the module's observation space "
                f"{self.module.observation_space} needs {list(self.obs_shape)} each"
            )
        return obs

    def actions(self, obs: np.ndarray) -> list[Any]:
        """Env actions for a batch of observations, as JSON values."""
        with self._lock, torch.inference_mode():
            out = self.module.forward_inference({columns.OBS: torch.from_numpy(obs)})
            actions = self._dist_cls(out[columns.ACTION_DIST_INPUTS]).deterministic_sample()
        return self._env_actions(actions.numpy()).tolist()
