"""V-trace (Espeholt et al. 2018, "IMPALA", section 4) as a pure function of arrays.

Rows are env steps laid out as a runner writes them (`tunerl.core.postprocessing`): each
sub-environment's steps contiguous and in time order, `ends[t]` marking the last row of a
contiguous piece of trajectory (termination, truncation, or the end of the sampled fragment).
Traces are cut at every end. A terminated row has discount 0, so nothing follows it; at a
truncation or a fragment end the critic's value of the row's `new_obs` stands in for the rest
of the return, exactly as tunerl's GAE bootstraps (Pardo et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch

from tunerl.core import columns
from tunerl.core.postprocessing import next_state_values, trajectory_ends
from tunerl.core.sample_batch import SampleBatch


def vtrace(
    behaviour_logp: np.ndarray,
    target_logp: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap_values: np.ndarray,
    discounts: np.ndarray,
    ends: np.ndarray,
    clip_rho_threshold: float = 1.0,
    clip_pg_rho_threshold: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace targets `vs` and policy-gradient advantages, one value per row.

    With rho_t = pi(a_t|x_t) / mu(a_t|x_t) (target over behaviour policy), d_t the row's
    discount (gamma, or 0 where the episode terminated) and V(x_{t+1}) the next row's value
    inside a piece or `bootstrap_values[t]` (the critic on `new_obs`) where a piece ends:

        delta_t     = min(clip_rho, rho_t) * (r_t + d_t V(x_{t+1}) - V(x_t))
        vs_t - V_t  = delta_t + d_t min(1, rho_t) (vs_{t+1} - V(x_{t+1}))   (0 past an end)
        pg_adv_t    = min(clip_pg_rho, rho_t) * (r_t + d_t vs_{t+1} - V(x_t))

    (the paper's eq. 1 written backwards, with c-bar = 1, and its policy-gradient advantage
    of section 4.2; vs_{t+1} is V(x_{t+1}) where a piece ends). A threshold of `inf` disables
    that clip. Returns float32 arrays `(vs, pg_advantages)`.
    """
    log_rhos = np.asarray(target_logp, np.float64) - np.asarray(behaviour_logp, np.float64)
    rhos = np.exp(log_rhos)
    clipped_rhos = np.minimum(clip_rho_threshold, rhos)
    cs = np.minimum(1.0, rhos)
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    discounts = np.asarray(discounts, np.float64)
    ends = np.asarray(ends, bool)
    next_values = next_state_values(values, ends, np.asarray(bootstrap_values, np.float64))
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    # The trace decays by d_t * c_t and is cut where a piece ends.
    decay = np.where(ends, 0.0, discounts * cs)
    corrections = np.empty_like(deltas)
    running = 0.0
    # Python floats: a scalar loop over numpy scalars is several times slower.
    for t, delta, factor in zip(
        range(len(deltas) - 1, -1, -1), deltas[::-1].tolist(), decay[::-1].tolist()
    ):
        running = delta + factor * running
        corrections[t] = running
    vs = values + corrections
    next_vs = np.where(ends, next_values, np.append(vs[1:], 0.0))
    pg_advantages = np.minimum(clip_pg_rho_threshold, rhos) * (
        rewards + discounts * next_vs - values
    )
    return vs.astype(np.float32), pg_advantages.astype(np.float32)


def add_vtrace(
    batch: SampleBatch,
    module,
    target_logp: np.ndarray,
    gamma: float,
    clip_rho_threshold: float,
    clip_pg_rho_threshold: float,
) -> SampleBatch:
    """Adds `value_targets` (V-trace's vs) and `advantages` (its policy-gradient advantages)
    to `batch`. `module`'s critic gives V(x_t) now, not the behaviour policy's `vf_preds`:
    IMPALA's values are the learner's. The critic sees `new_obs` only where a piece ends
    without terminating (truncation bootstrapping)."""
    ends = trajectory_ends(batch)
    terminated = batch[columns.TERMINATEDS].astype(bool)
    bootstrap = ends & ~terminated
    device = next(module.parameters()).device
    obs = torch.as_tensor(batch[columns.OBS], device=device)
    values = module.compute_values({columns.OBS: obs})
    bootstrap_values = np.zeros(len(batch), dtype=np.float32)
    if bootstrap.any():
        new_obs = torch.as_tensor(batch[columns.NEW_OBS][bootstrap], device=device)
        bootstrap_values[bootstrap] = module.compute_values({columns.OBS: new_obs}).cpu().numpy()
    vs, pg_advantages = vtrace(
        batch[columns.ACTION_LOGP],
        target_logp,
        batch[columns.REWARDS],
        values.cpu().numpy(),
        bootstrap_values,
        gamma * (1.0 - terminated),
        ends,
        clip_rho_threshold,
        clip_pg_rho_threshold,
    )
    batch[columns.VALUE_TARGETS] = vs
    batch[columns.ADVANTAGES] = pg_advantages
    return batch
