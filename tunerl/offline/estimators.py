"""Off-policy estimates of a policy's value from recorded episodes, without an env:
ordinary importance sampling (IS), weighted IS (WIS) and per-decision IS (PDIS) (Precup et
al. 2000), pure functions of per-row arrays (the episode of each row, its step, reward, and
the log-probabilities of the recorded action under the behaviour and the target policy);
and fitted Q evaluation (FQE, Le et al. 2019), a Q-network of the target policy regressed on
the recorded transitions."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tunerl.core import columns as c
from tunerl.core.rl_module import MLP, flatten_observations, observation_size

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


# FQE's Q-network and its regression (the sizes of d3rlpy's and RLlib's FQE defaults).
FQE_HIDDENS = [64, 64]
FQE_LR = 1e-3
FQE_BATCH_SIZE = 256
# Updates between copies of the Q-network into its target: each copy is one Bellman backup.
FQE_TARGET_UPDATE_INTERVAL = 50
# Continuous actions: next-state values averaged over this many actions of the policy.
FQE_NEXT_ACTIONS = 10


class FittedQEvaluation:
    """Q of a fixed target policy, fitted to r + gamma * E_{a'~pi}[Q_target(s', a')] over
    recorded transitions (no bootstrap past a termination, nor past a truncation when
    gamma is 1, where the recorded episode's end is the horizon). The estimate is the mean
    of E_{a~pi}[Q(s0, a)] over the episodes' first observations. Discrete actions: one
    output per action and exact expectations; Box actions: Q(s, a) and FQE_NEXT_ACTIONS
    sampled actions. The network is kept between `estimate` calls (a warm start)."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, gamma: float, seed: int
    ):
        self.observation_space, self.gamma = observation_space, gamma
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        obs_dim = observation_size(observation_space, "FQE")
        action_dim = 0 if self.discrete else int(np.prod(action_space.shape))
        self.num_actions = int(action_space.n) if self.discrete else 0
        outputs = self.num_actions or 1
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.q = nn.Sequential(
            MLP([obs_dim + action_dim, *FQE_HIDDENS], "relu"), nn.Linear(FQE_HIDDENS[-1], outputs)
        )
        torch.random.set_rng_state(generator_state)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=FQE_LR)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def _values(self, obs: torch.Tensor, policy: dict, target: bool) -> torch.Tensor:
        """E_{a~pi}[Q(obs, a)]; `policy` holds the action probabilities (discrete) or the
        sampled actions, shape (rows, K, action_dim), at these observations."""
        q = (self.target_q if target else self.q)(self._inputs(obs, policy))
        if self.discrete:
            return (q * policy["probs"]).sum(-1)
        return q.reshape(len(obs), -1).mean(-1)

    def _inputs(self, obs: torch.Tensor, policy: dict) -> torch.Tensor:
        features = flatten_observations(self.observation_space, obs)
        if self.discrete:
            return features
        actions = policy["actions"]  # (rows, K, action_dim)
        repeated = features.unsqueeze(1).expand(-1, actions.shape[1], -1)
        return torch.cat([repeated, actions], dim=-1).reshape(
            -1, features.shape[-1] + actions.shape[-1]
        )

    def _policy(self, module: RLModule, obs: torch.Tensor) -> dict:
        with torch.no_grad():
            inputs = module.forward_exploration({c.OBS: obs})[c.ACTION_DIST_INPUTS]
            dist = module.get_action_dist_cls()(inputs)
            if self.discrete:  # pi(a|s) of every action, from any distribution's logp
                every = [dist.logp(torch.full((len(obs),), a)) for a in range(self.num_actions)]
                return {"probs": torch.stack(every, dim=-1).exp()}
            samples = [dist.sample(self.generator) for _ in range(FQE_NEXT_ACTIONS)]
            return {"actions": torch.stack(samples, dim=1).reshape(len(obs), FQE_NEXT_ACTIONS, -1)}

    def estimate(
        self, module: RLModule, rows: dict, first_rows: np.ndarray, num_updates: int
    ) -> float:
        """Fits Q to `module`'s policy for `num_updates` updates on `rows` (a SampleBatch of
        transitions) and returns the mean value of the observations at `first_rows`."""
        obs, new_obs = torch.as_tensor(rows[c.OBS]), torch.as_tensor(rows[c.NEW_OBS])
        rewards = torch.as_tensor(rows[c.REWARDS], dtype=torch.float32)
        ends = np.asarray(rows[c.TERMINATEDS], bool)
        if self.gamma == 1.0:
            ends = ends | np.asarray(rows[c.TRUNCATEDS], bool)
        bootstrap = torch.as_tensor(~ends, dtype=torch.float32) * self.gamma
        next_policy = self._policy(module, new_obs)
        actions = torch.as_tensor(rows[c.ACTIONS])
        for update in range(num_updates):
            index = torch.as_tensor(self.rng.integers(len(obs), size=FQE_BATCH_SIZE))
            sub_policy = {key: value[index] for key, value in next_policy.items()}
            with torch.no_grad():
                targets = rewards[index] + bootstrap[index] * self._values(
                    new_obs[index], sub_policy, target=True
                )
            if self.discrete:
                q = self.q(self._inputs(obs[index], {})).gather(
                    -1, actions[index].long().reshape(-1, 1)
                )[:, 0]
            else:
                taken = {"actions": actions[index].reshape(len(index), 1, -1).float()}
                q = self.q(self._inputs(obs[index], taken))[:, 0]
            loss = (q - targets).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if (update + 1) % FQE_TARGET_UPDATE_INTERVAL == 0:
                self.target_q.load_state_dict(self.q.state_dict())
        self.target_q.load_state_dict(self.q.state_dict())
        starts = obs[torch.as_tensor(first_rows)]
        with torch.no_grad():
            return float(self._values(starts, self._policy(module, starts), target=False).mean())
