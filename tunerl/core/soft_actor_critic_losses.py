"""Soft actor-critic's losses and settings (Haarnoja et al. 2018), shared by SAC and CQL:
the twin critics' soft TD loss, the actor's and the temperature's losses, the target entropy
and the three optimizers. Pure functions of a module and a batch of tensors."""

from __future__ import annotations

import math

import gymnasium as gym
import torch

from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.distributions import Categorical, TanhGaussian
from tunerl.core.learner import Learner, LossOutput
from tunerl.core.optim import Adam
from tunerl.core.replay_buffers import N_STEP_DISCOUNT, WEIGHTS
from tunerl.core.rl_module.soft_actor_critic import SACModule

# Discrete actions: "auto" aims for this fraction of the uniform policy's entropy log(n).
# Christodoulou (2019) used 0.98: on CartPole-v1 (seed 1) the policy's entropy stayed below
# that, alpha grew without bound (6.6e7 after 40k env steps) and the return stayed below 100;
# with 0.5, seeds 1-3 reached 450 (last 20 episodes) within 10-25k env steps.
DISCRETE_TARGET_ENTROPY_SCALE = 0.5


def target_entropy(
    setting: float | str, action_space: gym.Space, legal: torch.Tensor | None = None
) -> float | torch.Tensor:
    """The entropy the temperature aims for: `setting`, or for "auto" minus the action
    dimension (Box) or DISCRETE_TARGET_ENTROPY_SCALE * log(n) (Discrete). With `legal` (the
    legal actions of a batch of masked observations) "auto" is per state, over the n legal
    actions of each: a state with one legal move has entropy 0 whatever the policy, and a
    target above it would raise alpha without bound."""
    if setting != "auto":
        return float(setting)
    if isinstance(action_space, gym.spaces.Discrete):
        if legal is not None:
            return DISCRETE_TARGET_ENTROPY_SCALE * legal.sum(-1).clamp_min(1).float().log()
        return DISCRETE_TARGET_ENTROPY_SCALE * math.log(action_space.n)
    # Haarnoja et al. 2018: -dim(A), over every dimension of a Box of any shape.
    return -float(math.prod(action_space.shape))


def register_soft_actor_critic_optimizers(
    learner: Learner, module_id: str, actor_lr: float, critic_lr: float, alpha_lr: float
) -> None:
    """The three named optimizers of a SACModule: "actor", "critic" and "alpha"."""
    module = learner.module[module_id]
    learner.register_optimizer(module_id, "actor", Adam(module.actor_parameters(), actor_lr))
    learner.register_optimizer(module_id, "critic", Adam(module.critic_parameters(), critic_lr))
    learner.register_optimizer(module_id, "alpha", Adam([module.log_alpha], alpha_lr))


def critic_loss(
    module: SACModule, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> LossOutput:
    """Both critics regress on r + discount * (min target Q(s', a') - alpha log pi(a'|s'))
    (discrete actions: the expectation over a' ~ pi(.|s'), exactly)."""
    if module.discrete:
        return _discrete_critic_loss(module, batch)
    alpha = module.log_alpha.exp().detach()
    with torch.no_grad():
        next_dist = TanhGaussian(
            module.forward_train({c.OBS: batch[c.NEW_OBS]})[c.ACTION_DIST_INPUTS]
        )
        next_actions, next_logp = next_dist.rsample_with_logp(generator)
        next_q = module.target_min_q(batch[c.NEW_OBS], next_actions) - alpha * next_logp
        targets = soft_targets(batch, next_q)
    q = module.q_values(batch[c.OBS], batch[c.ACTIONS])  # (2, batch): Q1 and Q2
    return twin_td_loss(q, targets, batch.get(WEIGHTS))


def _discrete_critic_loss(module: SACModule, batch: dict[str, torch.Tensor]) -> LossOutput:
    alpha = module.log_alpha.exp().detach()
    with torch.no_grad():
        next_logp = Categorical(
            module.forward_train({c.OBS: batch[c.NEW_OBS]})[c.ACTION_DIST_INPUTS]
        ).logits
        next_q = module.all_q_values(batch[c.NEW_OBS], target=True).min(dim=0).values
        targets = soft_targets(batch, (next_logp.exp() * (next_q - alpha * next_logp)).sum(-1))
    actions = batch[c.ACTIONS].long().reshape(1, -1, 1).expand(2, -1, 1)
    q = module.all_q_values(batch[c.OBS]).gather(-1, actions).squeeze(-1)  # (2, batch)
    return twin_td_loss(q, targets, batch.get(WEIGHTS))


def soft_targets(batch: dict[str, torch.Tensor], soft_value: torch.Tensor) -> torch.Tensor:
    """r + discount * soft V(s'), with no bootstrap past a termination."""
    not_terminated = 1.0 - batch[c.TERMINATEDS].float()
    return batch[c.REWARDS] + batch[N_STEP_DISCOUNT] * not_terminated * soft_value


def twin_td_loss(
    q: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> LossOutput:
    """Half the (importance-weighted) mean of both critics' squared TD errors; the first
    critic's TD errors are the priorities."""
    td_errors = q - targets
    squared = td_errors.pow(2).sum(dim=0)
    loss = 0.5 * (squared if weights is None else weights * squared).mean()
    stats = {m.QF_LOSS: loss.detach(), m.QF_MEAN: q[0].detach().mean()}
    return LossOutput(loss, stats, td_errors[0].detach())


def actor_and_alpha_losses(
    module: SACModule,
    batch: dict[str, torch.Tensor],
    target_entropy: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Actor: minimize alpha log pi(a|s) - min Q(s, a) with a reparameterized a (discrete
    actions: its expectation over pi(.|s), exactly). Alpha: move log(alpha) so the policy's
    entropy approaches `target_entropy`."""
    inputs = module.forward_train({c.OBS: batch[c.OBS]})[c.ACTION_DIST_INPUTS]
    alpha = module.log_alpha.exp()
    if module.discrete:
        logp_all = Categorical(inputs).logits
        with torch.no_grad():  # no reparameterization: the critics only weigh the actions
            min_q = module.all_q_values(batch[c.OBS]).min(dim=0).values
        probs = logp_all.exp()
        actor_loss = (probs * (alpha.detach() * logp_all - min_q)).sum(-1).mean()
        logp = (probs * logp_all).sum(-1)  # minus the entropy, per state
    else:
        actions, logp = TanhGaussian(inputs).rsample_with_logp(generator)
        # The critics' weights are not the actor's to move: only dQ/da is needed.
        min_q = module.q_values(batch[c.OBS], actions, detach_weights=True).min(dim=0).values
        actor_loss = (alpha.detach() * logp - min_q).mean()
    alpha_loss = -(module.log_alpha * (logp.detach() + target_entropy)).mean()
    return (
        actor_loss,
        alpha_loss,
        {
            m.ACTOR_LOSS: actor_loss.detach(),
            m.ALPHA_LOSS: alpha_loss.detach(),
            m.ALPHA_VALUE: alpha.detach(),
            m.ENTROPY: -logp.detach().mean(),
        },
    )
