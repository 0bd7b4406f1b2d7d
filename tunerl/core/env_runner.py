"""EnvRunner: steps a Gymnasium vector env with a copy of the modules and returns
MultiAgentBatches (a single-agent env's steps go to its one module, `default_policy`).

Gymnasium vector envs reset a finished sub-env on the *next* step ("next-step autoreset"):
that step ignores the action and returns the new episode's first observation. The runner
records no row for it, so every row of a batch is a real transition and `new_obs` of a
terminated or truncated row is the true final observation (what truncation bootstrapping
needs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tunerl.core import columns
from tunerl.core.distributions import sample_with_logp
from tunerl.core.rl_module import MultiRLModuleSpec, RLModule, flattened_by_env_runner
from tunerl.core.sample_batch import MultiAgentBatch, SampleBatch
from tunerl.env.registry import EnvContext, EnvCreator, EnvError, make_vector_env
from tunerl.offline.output_writer import OutputWriter

logger = logging.getLogger(__name__)

# Episode ids are unique across runners: the runner's index sits in the high bits.
_EPS_ID_STRIDE = 1 << 40
# Info key a recreated sub-env sets on the step that failed (the vector env adds "_" + key).
SUB_ENV_FAILED = "tunerl_sub_env_failed"


class RecreateOnError(gym.Wrapper):
    """A sub-env that is built again when its `step()` or `reset()` raises.

    The failed step is reported as a truncation with `info[SUB_ENV_FAILED] = True` and the
    new env's first observation; the runner records no row for it and does not count the
    episode. A new env that fails on its first reset is not retried: that error is raised.
    After `max_restarts` recreations the next error is raised as it is (an env that fails on
    every step would otherwise be recreated forever and the sample never end)."""

    def __init__(self, make_env: Callable[[], gym.Env], description: str, max_restarts: int):
        super().__init__(make_env())
        self._make_env = make_env
        self._description = description
        self._max_restarts = max_restarts
        self.num_restarts = 0

    def step(self, action: Any) -> tuple:
        try:
            return self.env.step(action)
        except Exception as error:  # noqa: BLE001 - any env error is what this wrapper is for
            obs, info = self._recreate(error)
            return obs, 0.0, False, True, {**info, SUB_ENV_FAILED: True}

    def reset(self, **kwargs: Any) -> tuple:
        try:
            return self.env.reset(**kwargs)
        except Exception as error:  # noqa: BLE001 - as in step()
            return self._recreate(error)

    def _recreate(self, error: Exception) -> tuple:
        if self.num_restarts >= self._max_restarts:
            logger.error(
                "%s raised %s after %d recreations (max_num_env_runner_restarts=%d); raising it.",
                self._description,
                type(error).__name__,
                self.num_restarts,
                self._max_restarts,
            )
            raise error
        logger.error(
            "%s raised %s: %s; recreating it (restart_failed_sub_environments=True).",
            self._description,
            type(error).__name__,
            error,
            exc_info=error,
        )
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - the broken env may not close cleanly; it is dropped
            logger.debug("Closing the failed sub-env raised too.", exc_info=True)
        self.env = self._make_env()
        self.num_restarts += 1
        return self.env.reset()


class EnvRunner:
    """One vector env and a copy of the MultiRLModule. Runs in the algorithm's process or as
    a Ray actor (`ray.remote(EnvRunner)`), with the same code. A single-agent env acts with
    the one module the spec holds; its steps are that module's batch."""

    def __init__(
        self,
        config: Any,
        module_spec: MultiRLModuleSpec,
        worker_index: int = 0,
        seed: int | None = None,
        env_creator: EnvCreator | None = None,
        num_torch_threads: int | None = None,
    ):
        if num_torch_threads is not None:
            torch.set_num_threads(num_torch_threads)
        self.config = config
        self.worker_index = worker_index
        self.num_envs = config.num_envs_per_env_runner
        self.env = self._make_env(env_creator)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.module = module_spec.build()
        self.module.eval()
        if len(self.module) != 1:
            raise ValueError(
                f"A single-agent env acts with one module; the spec holds {self.module.keys()}."
            )
        (self.module_id,) = self.module.keys()
        self.dist_cls = self.policy.get_action_dist_cls()
        self.generator = torch.Generator()
        self._check_env = not config.disable_env_checking
        self._env_actions = EnvActions(
            self.single_action_space, config.normalize_actions, config.clip_actions
        )
        obs_space = self.single_observation_space
        self._flatten_obs = flattened_by_env_runner(obs_space)
        self._obs_dtype = (
            np.float32
            if self._flatten_obs or isinstance(obs_space, gym.spaces.Box | gym.spaces.MultiBinary)
            else np.int64
        )
        self._next_eps_id = worker_index * _EPS_ID_STRIDE
        self._seed = seed
        self._obs: np.ndarray | None = None
        self._finished_returns: list[float] = []
        self._finished_lengths: list[int] = []
        self._num_env_steps = 0
        # offline_data(output=...): what this runner samples is also written as Parquet.
        self.output_writer = OutputWriter.from_config(
            config, self.single_observation_space, self.single_action_space, worker_index
        )

    def _make_env(self, env_creator: EnvCreator | None) -> gym.vector.VectorEnv:
        config = self.config
        if not config.restart_failed_sub_environments:
            return make_vector_env(
                config.env, config.env_config, self.num_envs, self.worker_index, env_creator
            )
        # Each sub-env in its own wrapper, so one can be rebuilt without the others (a
        # Gymnasium id's native vector implementation has no sub-envs to rebuild).
        creator = env_creator or (lambda env_config: gym.make(config.env, **env_config))

        def recreating(context: EnvContext) -> gym.Env:
            where = f"Sub-env {context.vector_index} of env runner {context.worker_index}"
            return RecreateOnError(
                lambda: creator(context),
                f"{where} ({config.env!r})",
                config.max_num_env_runner_restarts,
            )

        return make_vector_env(
            config.env, config.env_config, self.num_envs, self.worker_index, recreating
        )

    @property
    def num_sub_env_restarts(self) -> int:
        """Sub-envs recreated after raising (restart_failed_sub_environments)."""
        envs = getattr(self.env, "envs", [])
        return sum(env.num_restarts for env in envs if isinstance(env, RecreateOnError))

    # ------------------------------------------------------------------------ state
    def reset(self, seed: int | None) -> None:
        """Starts fresh episodes at the next `sample()`, seeding envs and action sampling."""
        self._seed = seed
        self._obs = None

    def _start(self) -> None:
        seed = self._seed
        if seed is not None:
            self.generator.manual_seed(seed)
            obs, _ = self.env.reset(seed=seed)
        else:
            # No new seed: the action stream and the envs' own generators carry on, so a
            # seeded run stays reproducible across evaluations.
            obs, _ = self.env.reset()
        self._seed = None
        self._obs = self._observations(obs)
        self._eps_ids = np.arange(self._next_eps_id, self._next_eps_id + self.num_envs)
        self._next_eps_id += self.num_envs
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def set_config(self, config: Any) -> None:
        """Takes a new config for fields that need no new env (explore, fragment length)."""
        self.config = config

    @property
    def policy(self) -> RLModule:
        """The module this runner acts with."""
        return self.module[self.module_id]

    def get_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """`{module_id: weights}`."""
        return self.module.get_state()

    def set_weights(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        """Loads `{module_id: weights}` (RLlib's layout; modules not named keep theirs)."""
        self.module.set_state(weights)

    def get_spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.single_observation_space, self.single_action_space

    def get_metrics(self) -> dict[str, Any]:
        """Episodes finished and env steps taken since the last call."""
        metrics = {
            "episode_returns": self._finished_returns,
            "episode_lengths": self._finished_lengths,
            "num_env_steps": self._num_env_steps,
        }
        self._finished_returns, self._finished_lengths = [], []
        self._num_env_steps = 0
        return metrics

    def ping(self) -> bool:
        return True

    def stop(self) -> None:
        if self.output_writer is not None:
            self.output_writer.close()
        self.env.close()

    # --------------------------------------------------------------------- sampling
    def sample(
        self,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool | None = None,
    ) -> MultiAgentBatch:
        """Steps the envs until `num_timesteps` rows are collected (episodes carry over to the
        next call), or until exactly `num_episodes` fresh episodes have finished."""
        explore = self.config.explore if explore is None else explore
        if num_episodes is not None:
            batch = self._sample_episodes(num_episodes, explore)
        else:
            if num_timesteps is None:
                num_timesteps = self.config.env_steps_per_sample()
            batch = self._sample_timesteps(num_timesteps, explore)
        samples = MultiAgentBatch({self.module_id: batch}, len(batch))
        if self.output_writer is not None:
            self.output_writer.write(samples)
        return samples

    def _act(self, explore: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # The distribution's ops too: outside inference mode each op of a one-row batch costs
        # about half as much again (SAC's act per env step: 200 against 144 us).
        with torch.inference_mode():
            obs = torch.from_numpy(self._obs)
            policy = self.policy
            if explore:
                out = policy.forward_exploration({columns.OBS: obs})
            else:
                out = policy.forward_inference({columns.OBS: obs})
            dist_inputs = out[columns.ACTION_DIST_INPUTS]
            dist = self.dist_cls(dist_inputs)
            if explore:
                actions, logp = sample_with_logp(dist, self.generator)
            else:
                actions = dist.deterministic_sample()
                logp = dist.logp(actions)
        vf = out.get(columns.VF_PREDS)
        vf = vf.numpy() if vf is not None else np.zeros(self.num_envs, np.float32)
        return actions.numpy(), logp.numpy(), dist_inputs.numpy(), vf

    def _step(self, explore: bool) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """One vector step. Returns the step's columns (one row per sub-env), the mask of
        rows that are real transitions and the mask of episodes that ended in this step."""
        actions, logp, dist_inputs, vf = self._act(explore)
        next_obs, rewards, terminateds, truncateds, infos = self.env.step(
            self._env_actions(actions)
        )
        next_obs = self._observations(next_obs)
        rewards = np.asarray(rewards, dtype=np.float32)
        valid = ~self._needs_reset
        # A recreated sub-env's failed step is no transition, and its episode is lost: the
        # episode's earlier rows end a trajectory piece (bootstrapped, like a fragment end).
        failed = np.asarray(infos.get("_" + SUB_ENV_FAILED, np.zeros(self.num_envs, bool)))
        valid &= ~failed
        if self._check_env:
            if not np.isfinite(rewards).all():
                env_index = int(np.flatnonzero(~np.isfinite(rewards))[0])
                raise EnvError(
                    f"Env {self.config.env!r} (sub-env {env_index}) returned a non-finite "
                    f"reward {rewards[env_index]}."
                )
        row = {
            columns.OBS: self._obs,
            columns.ACTIONS: actions,
            columns.REWARDS: rewards,
            columns.TERMINATEDS: np.asarray(terminateds, dtype=bool),
            columns.TRUNCATEDS: np.asarray(truncateds, dtype=bool),
            columns.NEW_OBS: next_obs,
            columns.ACTION_LOGP: logp,
            columns.ACTION_DIST_INPUTS: dist_inputs,
            columns.VF_PREDS: vf,
            columns.EPS_ID: self._eps_ids.copy(),
            columns.T: self._t.copy(),
        }
        self._returns += np.where(valid, rewards, 0.0)
        self._t += valid
        done = valid & (row[columns.TERMINATEDS] | row[columns.TRUNCATEDS])
        # Sub-envs that were reset in this step begin a new episode now.
        restarted = ~valid
        if restarted.any():
            count = int(restarted.sum())
            self._eps_ids[restarted] = np.arange(self._next_eps_id, self._next_eps_id + count)
            self._next_eps_id += count
            self._t[restarted] = 0
            self._returns[restarted] = 0.0
        self._needs_reset = done | failed
        self._obs = next_obs
        self._num_env_steps += int(valid.sum())
        return row, valid, done

    def _finish_episodes(self, done: np.ndarray) -> None:
        for i in np.flatnonzero(done):
            self._finished_returns.append(float(self._returns[i]))
            self._finished_lengths.append(int(self._t[i]))

    def _sample_timesteps(self, num_timesteps: int, explore: bool) -> SampleBatch:
        if self._obs is None:
            self._start()
        rows, masks, collected = [], [], 0
        while collected < num_timesteps:
            row, valid, done = self._step(explore)
            self._finish_episodes(done)
            rows.append(row)
            masks.append(valid)
            collected += int(valid.sum())
        return _stack_env_major(rows, masks)

    def _sample_episodes(self, num_episodes: int, explore: bool) -> SampleBatch:
        """Exactly `num_episodes` fresh episodes: each sub-env keeps starting episodes until
        enough were started, so short episodes are not favoured. An episode lost to a
        recreated sub-env is replaced by the next one that sub-env starts. Env steps are
        counted for the rows returned only (not for sub-envs already done)."""
        self._start()
        started = min(num_episodes, self.num_envs)
        active = np.arange(self.num_envs) < started
        rows, masks = [], []
        while active.any():
            row, valid, done = self._step(explore)
            keep = valid & active
            self._num_env_steps -= int(valid.sum() - keep.sum())
            rows.append(row)
            masks.append(keep)
            done &= active
            self._finish_episodes(done)
            for i in np.flatnonzero(done):
                if started < num_episodes:
                    started += 1
                else:
                    active[i] = False
        # The envs are mid-episode or reset: the next timesteps sample starts fresh.
        self._obs = None
        return _stack_env_major(rows, masks)

    def _observations(self, obs: Any) -> np.ndarray:
        """The vector env's observations as one array, a row per sub-env, checked against the
        space (unless disable_env_checking); Dict and Tuple observations flattened."""
        space = self.single_observation_space
        if not self._flatten_obs:
            obs = np.asarray(obs, dtype=self._obs_dtype)
            self._check_obs(obs)
            return obs
        rows = []
        for env_index, one in enumerate(gym.vector.utils.iterate(self.env.observation_space, obs)):
            if self._check_env and not space.contains(one):
                raise EnvError(
                    f"Env {self.config.env!r} (sub-env {env_index}) returned an observation "
                    f"outside its observation_space {space}: {one}. Fix the env or its space, "
                    "or set .environment(disable_env_checking=True)."
                )
            rows.append(gym.spaces.utils.flatten(space, one))
        return np.stack(rows).astype(np.float32)

    def _check_obs(self, obs: np.ndarray) -> None:
        if not self._check_env:
            return
        space = self.single_observation_space
        if isinstance(space, gym.spaces.Box):
            finite = np.isfinite(obs)
            if not finite.all():
                env_index, *position = np.argwhere(~finite)[0]
                where = tuple(int(p) for p in position)
                raise EnvError(
                    f"Env {self.config.env!r} (sub-env {env_index}) returned a non-finite "
                    f"observation: element {where} = {obs[env_index][where]}. Fix the env, or "
                    "set .environment(disable_env_checking=True) to skip this check."
                )
            low, high = space.low, space.high
            outside = (obs < low) | (obs > high)
            if outside.any():
                env_index, *position = np.argwhere(outside)[0]
                where = tuple(int(p) for p in position)
                raise EnvError(
                    f"Env {self.config.env!r} returned an observation outside its "
                    f"observation_space: element {where} = {obs[env_index][where]:.6g}, allowed "
                    f"[{low[where]:.6g}, {high[where]:.6g}]. Fix the env or its space, or set "
                    ".environment(disable_env_checking=True)."
                )
        elif isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
            low = space.start
            high = space.start + (space.n if isinstance(space, gym.spaces.Discrete) else space.nvec)
            outside = (obs < low) | (obs >= high)
            if outside.any():
                env_index = int(np.argwhere(outside)[0][0])
                raise EnvError(
                    f"Env {self.config.env!r} (sub-env {env_index}) returned the observation "
                    f"{obs[env_index].tolist()}, outside its observation_space {space}."
                )
        elif isinstance(space, gym.spaces.MultiBinary):
            outside = (obs != 0) & (obs != 1)
            if outside.any():
                env_index = int(np.argwhere(outside)[0][0])
                raise EnvError(
                    f"Env {self.config.env!r} (sub-env {env_index}) returned the observation "
                    f"{obs[env_index].tolist()}, outside its observation_space {space}."
                )


class EnvActions:
    """Module actions to the env's actions, for one action space. Modules act in indices
    from 0 (Discrete, MultiDiscrete), 0/1 floats (MultiBinary) and flat vectors (Box); the
    env receives its own values and shapes:

    - Discrete and MultiDiscrete: `start` is added.
    - Box, `normalize_actions`: a dimension with two finite bounds is clipped to [-1, 1] and
      scaled to them; a dimension with an infinite bound cannot be scaled and is passed on
      unscaled (scaling it gave NaN).
    - Box, `clip_actions`: every finite bound is applied (an infinite one clips nothing).
    The env gets the space's dtype and shape; the batch keeps the module's action, which
    is what the policy is trained on."""

    def __init__(self, space: gym.Space, normalize_actions: bool, clip_actions: bool):
        self.space = space
        if not isinstance(space, gym.spaces.Box):
            return
        low = space.low.reshape(-1).astype(np.float64)
        high = space.high.reshape(-1).astype(np.float64)
        self._scaled = np.isfinite(low) & np.isfinite(high) if normalize_actions else None
        if self._scaled is not None:
            if not self._scaled.all():
                logger.warning(
                    "normalize_actions: action dimensions %s of %s have an infinite bound and "
                    "are passed to the env unscaled.",
                    np.flatnonzero(~self._scaled).tolist(),
                    space,
                )
            self._offset = np.where(self._scaled, low, 0.0)
            self._half_range = np.where(self._scaled, 0.5 * (high - low), 0.0)
        # Scaled dimensions are kept inside their bounds (against float rounding) in any case.
        keep_in = np.ones_like(low, bool) if clip_actions else self._scaled
        if keep_in is None or not keep_in.any():
            self._clip_low = self._clip_high = None
        else:
            self._clip_low = np.where(keep_in, low, -np.inf)
            self._clip_high = np.where(keep_in, high, np.inf)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        space = self.space
        if isinstance(space, gym.spaces.Discrete):
            return (actions.astype(np.int64) + space.start).astype(space.dtype)
        if isinstance(space, gym.spaces.MultiDiscrete):
            shaped = actions.astype(np.int64).reshape(len(actions), *space.shape)
            return (shaped + space.start).astype(space.dtype)
        if isinstance(space, gym.spaces.MultiBinary):
            return actions.reshape(len(actions), *space.shape).astype(space.dtype)
        if not isinstance(space, gym.spaces.Box):
            return actions
        flat = actions.reshape(len(actions), -1).astype(np.float64)
        if self._scaled is not None:
            rescaled = self._offset + (np.clip(flat, -1.0, 1.0) + 1.0) * self._half_range
            flat = np.where(self._scaled, rescaled, flat)
        if self._clip_low is not None:
            flat = np.clip(flat, self._clip_low, self._clip_high)
        # Rounding to the space's dtype keeps a value within bounds of that dtype.
        return flat.astype(space.dtype).reshape(len(actions), *space.shape)


def _stack_env_major(rows: list[dict[str, np.ndarray]], masks: list[np.ndarray]) -> SampleBatch:
    """[time][env] rows -> one batch, each sub-env's steps contiguous and in time order."""
    if not rows:
        return SampleBatch()
    if len(rows) == 1:  # one vector step (SAC's): its rows are already env-major
        return SampleBatch({key: value[masks[0]] for key, value in rows[0].items()})
    mask = np.stack(masks, axis=1).reshape(-1)  # (env, time) order
    batch = {}
    for key in rows[0]:
        stacked = np.stack([row[key] for row in rows], axis=1)  # (env, time, ...)
        batch[key] = stacked.reshape(-1, *stacked.shape[2:])[mask]
    return SampleBatch(batch)
