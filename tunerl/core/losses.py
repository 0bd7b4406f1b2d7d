"""Loss terms and diagnostics that several algorithms share (PPO and APPO's clipped
surrogate and adaptive KL coefficient, the critics' explained variance): pure functions of
tensors, each tested on its own."""

from __future__ import annotations

import torch


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_param: float
) -> torch.Tensor:
    """PPO's clipped surrogate objective per row, min(r A, clip(r, 1 - eps, 1 + eps) A)
    (Schulman et al. 2017, eq. 7); the loss is minus its mean."""
    return torch.min(ratio * advantages, ratio.clamp(1 - clip_param, 1 + clip_param) * advantages)


def adapt_kl_coeff(kl_coeff: float, mean_kl: float, kl_target: float) -> float:
    """The adaptive KL penalty's next coefficient (Schulman et al. 2017, section 4): x1.5
    when the policy moved more than twice the target, x0.5 when less than half of it."""
    if mean_kl > 2.0 * kl_target:
        return kl_coeff * 1.5
    if mean_kl < 0.5 * kl_target:
        return kl_coeff * 0.5
    return kl_coeff


def explained_variance(targets: torch.Tensor, values: torch.Tensor) -> float:
    """1 - Var(targets - values) / Var(targets): 1 for a perfect critic, 0 for one that
    predicts the mean, negative for worse; 0 when the targets do not vary."""
    with torch.no_grad():
        target_var = targets.var()
        return float(1 - (targets - values).var() / target_var) if target_var > 0 else 0.0
