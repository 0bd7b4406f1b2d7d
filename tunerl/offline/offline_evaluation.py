"""Offline evaluation: the module's return estimated from recorded episodes without an env,
every `offline_evaluation_interval` iterations, by the estimators `offline_evaluation_type`
names (IS, WIS, PDIS, FQE; `tunerl.offline.estimators`). Reported under
`evaluation/offline_eval_runners/` (RLlib's new-stack key): `episode_return_mean` is the
first estimator's, `<estimator>/episode_return_mean` each one's, beside
`behavior_episode_return_mean` (the recorded episodes' own return) and `num_episodes`.

Only complete episodes are used (their last row terminated or truncated): a recording cut
mid-episode would bias every estimate low. The estimated policy is the module's
exploration policy (`forward_exploration`), the stochastic one the estimators weigh."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tunerl.core import columns as c
from tunerl.core.rl_module import RLModule
from tunerl.offline.estimators import FittedQEvaluation, importance_sampling_estimates
from tunerl.offline.offline_data import OfflineData, OfflineDataError, discounted_returns

EPISODE_RETURN_MEAN = "episode_return_mean"
BEHAVIOR_RETURN_MEAN = "behavior_episode_return_mean"
NUM_EPISODES = "num_episodes"
IMPORTANCE_SAMPLING = ("is", "wis", "pdis")


def _estimators(setting: str | list[str]) -> list[str]:
    return [setting] if isinstance(setting, str) else list(setting)


class OfflineEvaluator:
    """Reads the episodes of `config.offline_evaluation_input` (else `config.input_`) once,
    in memory, and estimates a module's return on them."""

    def __init__(
        self,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int,
        module_id: str | None = None,
    ):
        self.estimators = _estimators(config.offline_evaluation_type)
        self.gamma = float(config.offline_evaluation_gamma)
        self.num_fqe_updates = int(config.offline_evaluation_fqe_updates)
        source = config.offline_evaluation_input or getattr(config, "input_", None)
        data = OfflineData(
            source,
            observation_space,
            action_space,
            normalize_actions=config.normalize_actions,
            seed=seed,
            module_id=module_id,
        )
        rows = data.all_rows()
        episode, step = data.episode_columns()
        keep = _complete_episodes(episode, step, rows)
        if not keep.any():
            raise OfflineDataError(
                f"offline_evaluation_input {source!r} holds no complete episode (none ends in "
                "a row with terminateds or truncateds): record whole episodes to estimate on."
            )
        if (
            any(name in IMPORTANCE_SAMPLING for name in self.estimators)
            and not data.has_action_logp
        ):
            raise OfflineDataError(
                f"offline_evaluation_type {self.estimators} weighs the recorded actions by the "
                f"behaviour policy's probabilities, but {source!r} has no 'action_logp' "
                "column (tunerl's recordings always hold it): use 'fqe', which does not need "
                "it, or record the data again."
            )
        self.rows = {key: np.asarray(value)[keep] for key, value in rows.items()}
        self.episode, self.step = episode[keep], step[keep]
        order = np.lexsort((self.step, self.episode))
        first = np.r_[True, np.diff(self.episode[order]) != 0]
        self.first_rows = order[first]
        returns = discounted_returns(
            self.episode, self.step, self.rows[c.REWARDS].astype(np.float64), self.gamma
        )
        self.behaviour_return = float(returns[self.first_rows].mean())
        self.fqe = None
        if "fqe" in self.estimators:
            if not isinstance(action_space, gym.spaces.Discrete | gym.spaces.Box):
                raise OfflineDataError(
                    f"offline_evaluation_type 'fqe' estimates Discrete or Box actions, not "
                    f"{action_space}; use 'is', 'wis' or 'pdis'."
                )
            self.fqe = FittedQEvaluation(observation_space, action_space, self.gamma, seed)

    def evaluate(self, module: RLModule) -> dict[str, Any]:
        """`{"episode_return_mean": ..., "<estimator>": {"episode_return_mean": ...},
        "behavior_episode_return_mean": ..., "num_episodes": ...}` for `module`."""
        estimates: dict[str, float] = {}
        if any(name in IMPORTANCE_SAMPLING for name in self.estimators):
            with torch.no_grad():
                inputs = module.forward_exploration({c.OBS: torch.as_tensor(self.rows[c.OBS])})
                dist = module.get_action_dist_cls()(inputs[c.ACTION_DIST_INPUTS])
                target_logp = dist.logp(torch.as_tensor(self.rows[c.ACTIONS])).numpy()
            estimates.update(
                importance_sampling_estimates(
                    self.episode,
                    self.step,
                    self.rows[c.REWARDS],
                    self.rows[c.ACTION_LOGP],
                    target_logp.astype(np.float64),
                    self.gamma,
                )
            )
        if self.fqe is not None:
            estimates["fqe"] = self.fqe.estimate(
                module, self.rows, self.first_rows, self.num_fqe_updates
            )
        return {
            EPISODE_RETURN_MEAN: estimates[self.estimators[0]],
            **{name: {EPISODE_RETURN_MEAN: estimates[name]} for name in self.estimators},
            BEHAVIOR_RETURN_MEAN: self.behaviour_return,
            NUM_EPISODES: len(self.first_rows),
        }


def _complete_episodes(episode: np.ndarray, step: np.ndarray, rows: dict) -> np.ndarray:
    """Per row, whether its episode's last recorded row terminated or truncated."""
    ended = np.asarray(rows[c.TERMINATEDS], bool) | np.asarray(rows[c.TRUNCATEDS], bool)
    order = np.lexsort((step, episode))
    last = np.r_[np.diff(episode[order]) != 0, True]
    complete_codes = episode[order][last & ended[order]]
    return np.isin(episode, complete_codes)
