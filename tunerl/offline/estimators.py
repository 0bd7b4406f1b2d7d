"""Off-policy estimates of a policy's value from recorded episodes, without an env
(Precup et al. 2000): ordinary importance sampling (IS), weighted IS (WIS) and per-decision
IS (PDIS). Pure functions of per-row arrays: the episode of each row, its step, reward, and
the log-probabilities of the recorded action under the behaviour and the target policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from tunerl.core import columns as c

if TYPE_CHECKING:
    from tunerl.core.rl_module import RLModule
    from tunerl.offline.offline_data import OfflineData


def _episodes(episode: np.ndarray, step: np.ndarray) -> list[np.ndarray]:
    """Row indices of each episode, in step order."""
    order = np.lexsort((step, episode))
    boundaries = np.flatnonzero(np.diff(episode[order])) + 1
    return np.split(order, boundaries)


def importance_sampling_estimates(
    episode: np.ndarray,
    step: np.ndarray,
    rewards: np.ndarray,
    behaviour_logp: np.ndarray,
    target_logp: np.ndarray,
    gamma: float,
) -> dict[str, float]:
    """{"is", "wis", "pdis"}: the mean over episodes of rho_0:T * G (IS), the same
    normalized by the mean of rho_0:T (WIS), and the mean of sum_t gamma^t rho_0:t r_t
    (PDIS), where rho_0:t is the product of pi(a|s) / mu(a|s) up to step t and G the
    discounted return."""
    weights, returns, pdis = [], [], []
    for rows in _episodes(np.asarray(episode), np.asarray(step)):
        ratios = np.exp(np.cumsum(target_logp[rows] - behaviour_logp[rows]))
        discounts = gamma ** np.arange(len(rows))
        weights.append(ratios[-1])
        returns.append(float((discounts * rewards[rows]).sum()))
        pdis.append(float((discounts * ratios * rewards[rows]).sum()))
    weights_array, returns_array = np.asarray(weights), np.asarray(returns)
    return {
        "is": float((weights_array * returns_array).mean()),
        "wis": float((weights_array * returns_array).sum() / weights_array.sum()),
        "pdis": float(np.mean(pdis)),
    }


def estimate_policy_value(module: RLModule, data: OfflineData, gamma: float) -> dict[str, float]:
    """IS, WIS and PDIS of `module`'s (stochastic) policy on every episode of `data`, whose
    files must hold the behaviour's `action_logp` and each row's `eps_id` and `t`."""
    rows = data.all_rows()
    if c.ACTION_LOGP not in rows:
        raise ValueError(
            f"{data.files[0]}...: the data has no 'action_logp' column, so the behaviour "
            "policy's probabilities are unknown and importance sampling cannot weigh it."
        )
    episode, step = data.episode_columns()
    with torch.no_grad():
        inputs = module.forward_train({c.OBS: torch.as_tensor(rows[c.OBS])})
        dist = module.get_action_dist_cls()(inputs[c.ACTION_DIST_INPUTS])
        target_logp = dist.logp(torch.as_tensor(rows[c.ACTIONS])).numpy()
    return importance_sampling_estimates(
        episode, step, rows[c.REWARDS], rows[c.ACTION_LOGP], target_logp, gamma
    )
