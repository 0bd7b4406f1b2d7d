"""GAE: `compute_gae` is a pure function of arrays (no module, no batch object, no state);
`add_gae` applies it to a SampleBatch with the critic of the module that sampled it, and is
what a learner's `postprocess_batch` calls (PPO's, A2C's).

Rows are steps in time order, one sub-environment's steps contiguous. `ends[t]` marks the
last row of a contiguous piece of trajectory: the episode terminated or was truncated there,
or the sampled fragment stops there. Only a termination means the next state's value is 0;
at a truncation or a fragment end the return continues beyond the data, and the next state's
value (from the critic) stands in for it ("bootstrapping", Pardo et al. 2018, "Time Limits
in Reinforcement Learning").
"""

from __future__ import annotations

import numpy as np

from tunerl.core import columns
from tunerl.core.sample_batch import SampleBatch


def trajectory_ends(batch: SampleBatch) -> np.ndarray:
    """Boolean mask of rows after which the next row is not the next step of the same
    episode: terminated, truncated, another episode follows, or time jumps."""
    n = len(batch)
    ends = batch[columns.TERMINATEDS].astype(bool) | batch[columns.TRUNCATEDS].astype(bool)
    ends = ends.copy()
    if n:
        eps_id, t = batch[columns.EPS_ID], batch[columns.T]
        ends[:-1] |= (eps_id[1:] != eps_id[:-1]) | (t[1:] != t[:-1] + 1)
        ends[-1] = True
    return ends


def next_state_values(
    values: np.ndarray, ends: np.ndarray, end_next_values: np.ndarray
) -> np.ndarray:
    """V(s_{t+1}) per row: the next row's value inside a trajectory piece, and
    `end_next_values` (the critic on `new_obs`, given for every row) where a piece ends."""
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = 0.0
    return np.where(ends, end_next_values, next_values)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminateds: np.ndarray,
    ends: np.ndarray,
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation (Schulman et al. 2016).

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - end_t) * A_{t+1}

    Returns `(advantages, value_targets)` with `value_targets = advantages + values`.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    not_terminated = 1.0 - np.asarray(terminateds, dtype=np.float64)
    continues = 1.0 - np.asarray(ends, dtype=np.float64)
    deltas = rewards + gamma * not_terminated * np.asarray(next_values, np.float64) - values
    decay = gamma * lambda_ * continues
    advantages = np.empty_like(deltas)
    running = 0.0
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    advantages = advantages.astype(np.float32)
    return advantages, advantages + values.astype(np.float32)


def add_gae(batch: SampleBatch, module, gamma: float, lambda_: float) -> SampleBatch:
    """Adds `advantages` and `value_targets` to `batch` (GAE with truncation bootstrapping);
    the critic is evaluated only on the `new_obs` of rows that end a piece without
    terminating (and on their `new_state` when the module's critic reads the global state)."""
    import torch

    from tunerl.core.rl_module.central_critic import uses_global_state

    ends = trajectory_ends(batch)
    terminated = batch[columns.TERMINATEDS].astype(bool)
    bootstrap = ends & ~terminated
    end_next_values = np.zeros(len(batch), dtype=np.float32)
    if bootstrap.any():
        device = next(module.parameters()).device
        inputs = {columns.OBS: torch.as_tensor(batch[columns.NEW_OBS][bootstrap], device=device)}
        if uses_global_state(module):
            if columns.NEW_STATE not in batch:
                raise KeyError(
                    f"{type(module).__name__} reads the global state, but the batch has no "
                    f"{columns.NEW_STATE!r} column (columns: {sorted(batch.keys())}); sample "
                    "it with the multi-agent env runner, which records it for such modules."
                )
            new_state = batch[columns.NEW_STATE][bootstrap]
            inputs[columns.STATE] = torch.as_tensor(new_state, device=device)
        end_next_values[bootstrap] = module.compute_values(inputs).cpu().numpy()
    values = batch[columns.VF_PREDS]
    next_values = next_state_values(values, ends, end_next_values)
    advantages, targets = compute_gae(
        batch[columns.REWARDS], values, next_values, terminated, ends, gamma, lambda_
    )
    batch[columns.ADVANTAGES] = advantages
    batch[columns.VALUE_TARGETS] = targets
    return batch
