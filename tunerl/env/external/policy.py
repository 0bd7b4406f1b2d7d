"""ServerPolicy: the env runner's module as the external env server uses it, behind a lock
(the server thread acts while the algorithm's thread replaces weights): batched actions for
clients that infer on the server, and the critic and log-probabilities of the steps that
clients acting locally send. Observations are checked against the space here."""

from __future__ import annotations

import threading
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tunerl.core import columns
from tunerl.core.distributions import sample_with_logp
from tunerl.core.env_runner import EnvActions
from tunerl.core.rl_module import RLModule
from tunerl.env.external import protocol as p


class ServerPolicy:
    """One module, its action mapping and its weights version."""

    def __init__(
        self,
        module: RLModule,
        normalize_actions: bool,
        clip_actions: bool,
        check_observations: bool,
        seed: int | None,
    ):
        self.module = module
        self.observation_space = module.observation_space
        self.action_space = module.action_space
        self.lock = threading.Lock()
        self.weights_version = 0
        self.explore = True
        self.check_observations = check_observations
        self.normalize_actions, self.clip_actions = normalize_actions, clip_actions
        self._dist_cls = module.get_action_dist_cls()
        self._env_actions = EnvActions(self.action_space, normalize_actions, clip_actions)
        self._generator = torch.Generator()
        if seed is not None:
            self.seed(seed)
        space = self.observation_space
        self._obs_dtype = np.float32 if isinstance(space, gym.spaces.Box) else np.int64
        self._obs_shape = tuple(space.shape or ())
        self._action_shape = _module_action_shape(self.action_space)

    def seed(self, seed: int) -> None:
        """Reseeds the stream actions are sampled from."""
        with self.lock:
            self._generator.manual_seed(seed)

    # ----------------------------------------------------------------- observations
    def observations(self, values: list[Any], where: str) -> np.ndarray:
        """Client observations as one array, a row each; ProtocolError naming the first bad
        one (wrong shape, not numbers, not finite)."""
        rows = []
        for index, value in enumerate(values):
            obs = p.as_array(value, f"{where}[{index}].obs", self._obs_dtype)
            if obs.shape != self._obs_shape:
                raise p.ProtocolError(
                    p.BAD_REQUEST,
                    f"{where}[{index}].obs has shape {list(obs.shape)}; the observation space "
                    f"{self.observation_space} needs {list(self._obs_shape)}",
                )
            rows.append(obs)
        batch = np.stack(rows) if rows else np.zeros((0, *self._obs_shape), self._obs_dtype)
        if self.check_observations and batch.dtype.kind == "f" and not np.isfinite(batch).all():
            index = int(np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(1))[0])
            raise p.ProtocolError(
                p.BAD_REQUEST, f"{where}[{index}].obs is not finite: {batch[index].tolist()}"
            )
        return batch

    def module_actions(self, values: Any, num_rows: int, where: str) -> np.ndarray:
        """Actions a client acting locally sent (the module's: Discrete from 0, Box before
        scaling), checked for their count and shape."""
        dtype = np.float32 if isinstance(self.action_space, gym.spaces.Box) else np.int64
        actions = p.as_array(values, where, dtype)
        if actions.shape != (num_rows, *self._action_shape):
            raise p.ProtocolError(
                p.BAD_REQUEST,
                f"{where} has shape {list(actions.shape)}; {num_rows} steps of "
                f"{self.action_space} need {[num_rows, *self._action_shape]}",
            )
        return actions

    # -------------------------------------------------------------------- inference
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(module actions, logp, dist inputs, values) for a batch of observations."""
        with self.lock, torch.inference_mode():
            batch = {columns.OBS: torch.from_numpy(obs)}
            if self.explore:
                out = self.module.forward_exploration(batch)
            else:
                out = self.module.forward_inference(batch)
            dist = self._dist_cls(out[columns.ACTION_DIST_INPUTS])
            if self.explore:
                actions, logp = sample_with_logp(dist, self._generator)
            else:
                actions = dist.deterministic_sample()
                logp = dist.logp(actions)
        return actions.numpy(), logp.numpy(), out[columns.ACTION_DIST_INPUTS].numpy(), _vf(out)

    def score(
        self, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logp, dist inputs, values) of steps a client took with its own copy."""
        with self.lock, torch.inference_mode():
            out = self.module.forward_exploration({columns.OBS: torch.from_numpy(obs)})
            dist = self._dist_cls(out[columns.ACTION_DIST_INPUTS])
            logp = dist.logp(torch.from_numpy(actions))
        return logp.numpy(), out[columns.ACTION_DIST_INPUTS].numpy(), _vf(out)

    def env_actions(self, module_actions: np.ndarray) -> list[Any]:
        """The env's actions as plain msgpack values: ints, or (nested) lists."""
        return self._env_actions(module_actions).tolist()

    # ---------------------------------------------------------------------- weights
    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        with self.lock:
            self.module.set_state(state)
            self.weights_version += 1

    def weights_message(self, have_version: int | None) -> dict[str, Any]:
        with self.lock:
            version = self.weights_version
            if have_version == version:
                return {"type": p.WEIGHTS, "version": version, "weights": None}
            weights = {k: v.numpy() for k, v in self.module.get_state().items()}
        return {"type": p.WEIGHTS, "version": version, "weights": weights}


def _vf(out: dict[str, torch.Tensor]) -> np.ndarray:
    values = out.get(columns.VF_PREDS)
    if values is None:
        return np.zeros(len(out[columns.ACTION_DIST_INPUTS]), np.float32)
    return values.numpy()


def _module_action_shape(space: gym.Space) -> tuple[int, ...]:
    if isinstance(space, gym.spaces.Discrete):
        return ()
    if isinstance(space, gym.spaces.MultiDiscrete | gym.spaces.MultiBinary | gym.spaces.Box):
        return (int(np.prod(space.shape)),)
    raise p.ProtocolError(p.UNSUPPORTED, f"external clients cannot act in {space}")
