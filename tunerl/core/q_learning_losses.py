"""Q-learning's TD loss on a `DQNModule` (shared by DQN and discrete CQL): n-step targets,
double Q, Huber or squared error, importance weights."""

from __future__ import annotations

from typing import Literal

import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.learner import LossOutput
from tunerl.core.replay_buffers import N_STEP_DISCOUNT, WEIGHTS
from tunerl.core.rl_module.q_network import Q_VALUES, DQNModule


def q_td_loss(
    module: DQNModule,
    batch: dict[str, torch.Tensor],
    double_q: bool,
    td_error_loss_fn: Literal["huber", "mse"],
) -> LossOutput:
    """TD loss on n-step targets, with the per-sample TD errors (the priorities).
    `double_q`: the online net picks the next action, the target net rates it."""
    if double_q:
        # One pass of the online net over obs and next obs together: on nets this small
        # the per-call overhead, not the arithmetic, is what an update costs.
        both = module.forward_train({c.OBS: torch.cat([batch[c.OBS], batch[c.NEW_OBS]])})
        q_values, next_online = both[Q_VALUES].chunk(2)
    else:
        q_values = module.forward_train({c.OBS: batch[c.OBS]})[Q_VALUES]
    q_taken = q_values.gather(-1, batch[c.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        next_target = module.target_q_values(batch[c.NEW_OBS])
        if double_q:
            next_actions = next_online.argmax(dim=-1, keepdim=True)
        else:
            next_actions = next_target.argmax(dim=-1, keepdim=True)
        next_q = next_target.gather(-1, next_actions).squeeze(-1)
        not_terminated = 1.0 - batch[c.TERMINATEDS].float()
        targets = batch[c.REWARDS] + batch[N_STEP_DISCOUNT] * not_terminated * next_q
    td_errors = q_taken - targets
    if td_error_loss_fn == "huber":
        per_sample = torch.nn.functional.huber_loss(q_taken, targets, reduction="none")
    else:
        per_sample = td_errors.pow(2)
    weights = batch.get(WEIGHTS)
    loss = (per_sample * weights).mean() if weights is not None else per_sample.mean()
    stats = {
        m.QF_LOSS: loss.detach(),
        m.QF_MEAN: q_taken.detach().mean(),
        m.TD_ERROR_MEAN: td_errors.detach().abs().mean(),
    }
    return LossOutput(loss, stats, td_errors.detach())
