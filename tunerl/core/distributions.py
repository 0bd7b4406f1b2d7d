"""Action distributions over `action_dist_inputs`, in plain torch ops.

Sampling takes an explicit `torch.Generator`, so each env runner draws from its own stream
and a seeded run repeats exactly, whatever else in the process uses torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Categorical:
    """Discrete actions; inputs are unnormalized logits."""

    def __init__(self, logits: torch.Tensor):
        self.logits = torch.log_softmax(logits, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of the categorical; about
        # twice as fast as torch.multinomial for a batch of small distributions.
        uniform = torch.rand(self.logits.shape, generator=generator, dtype=self.logits.dtype)
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=1e-20)))
        return (self.logits + gumbel).argmax(dim=-1)

    def deterministic_sample(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.logits.exp() * self.logits).sum(-1)

    def kl(self, other: Categorical) -> torch.Tensor:
        return (self.logits.exp() * (self.logits - other.logits)).sum(-1)


class MultiCategorical:
    """Independent categoricals, one per component of a MultiDiscrete space (what RLlib and
    Stable-Baselines3 use): inputs are the components' logits side by side, `sizes` how many
    each has; an action holds one index per component and its log-prob is the sum."""

    def __init__(self, logits: torch.Tensor, sizes: Sequence[int]):
        self.sizes = tuple(int(size) for size in sizes)
        self.components = [Categorical(part) for part in logits.split(self.sizes, dim=-1)]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([part.sample(generator) for part in self.components], dim=-1)

    def deterministic_sample(self) -> torch.Tensor:
        return torch.stack([part.deterministic_sample() for part in self.components], dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return sum(part.logp(actions[..., i]) for i, part in enumerate(self.components))

    def entropy(self) -> torch.Tensor:
        return sum(part.entropy() for part in self.components)

    def kl(self, other: MultiCategorical) -> torch.Tensor:
        return sum(mine.kl(theirs) for mine, theirs in zip(self.components, other.components))


class Bernoulli:
    """Independent Bernoullis, one per input (MultiBinary actions); inputs are logits, and
    an action is a float 0/1 per input."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        uniform = torch.rand(self.logits.shape, generator=generator, dtype=self.logits.dtype)
        return (uniform < torch.sigmoid(self.logits)).to(self.logits.dtype)

    def deterministic_sample(self) -> torch.Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.to(self.logits.dtype)
        return -nn.functional.binary_cross_entropy_with_logits(
            self.logits, actions, reduction="none"
        ).sum(-1)

    def _log_p_and_log_not_p(self) -> tuple[torch.Tensor, torch.Tensor]:
        # log sigmoid(x) and log(1 - sigmoid(x)) = log sigmoid(-x), stable for large |x|.
        return nn.functional.logsigmoid(self.logits), nn.functional.logsigmoid(-self.logits)

    def entropy(self) -> torch.Tensor:
        log_p, log_not_p = self._log_p_and_log_not_p()
        p = log_p.exp()
        return -(p * log_p + (1.0 - p) * log_not_p).sum(-1)

    def kl(self, other: Bernoulli) -> torch.Tensor:
        log_p, log_not_p = self._log_p_and_log_not_p()
        other_log_p, other_log_not_p = other._log_p_and_log_not_p()
        p = log_p.exp()
        return (p * (log_p - other_log_p) + (1.0 - p) * (log_not_p - other_log_not_p)).sum(-1)


class DiagGaussian:
    """Continuous actions; inputs are the means followed by the log standard deviations
    (RLlib's layout: `[mean_0 .. mean_k, log_std_0 .. log_std_k]`)."""

    def __init__(self, inputs: torch.Tensor):
        self.mean, self.log_std = inputs.chunk(2, dim=-1)
        self.std = self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def deterministic_sample(self) -> torch.Tensor:
        return self.mean

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) / self.std
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def kl(self, other: DiagGaussian) -> torch.Tensor:
        return (
            other.log_std
            - self.log_std
            + (self.std.pow(2) + (self.mean - other.mean).pow(2)) / (2 * other.std.pow(2))
            - 0.5
        ).sum(-1)


class TanhGaussian:
    """A Gaussian squashed by tanh into (-1, 1) (SAC's policy, Haarnoja et al. 2018,
    appendix C). Inputs are means then log-stds; log-stds are clamped to [-20, 2]."""

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, inputs: torch.Tensor):
        self.mean, log_std = inputs.chunk(2, dim=-1)
        self.log_std = log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        self.std = self.log_std.exp()

    def _logp_pre_tanh(self, u: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """log p(tanh(u)); `z` = (u - mean) / std when the caller has it (the sampled noise)."""
        if z is None:
            z = (u - self.mean) / self.std
        gaussian = (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
        correction = (2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))).sum(-1)
        return gaussian - correction

    def rsample_with_logp(
        self, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized sample (gradients flow to mean and std) and its log-prob."""
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        u = self.mean + self.std * noise
        return torch.tanh(u), self._logp_pre_tanh(u, z=noise)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample_with_logp(generator)[0]

    # A sample and its log-prob in one pass (`logp` of the sample would undo the tanh).
    sample_with_logp = rsample_with_logp

    def deterministic_sample(self) -> torch.Tensor:
        return torch.tanh(self.mean)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        # Actions at exactly +-1 have no finite pre-image; clamp just inside.
        u = torch.atanh(actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return self._logp_pre_tanh(u)


def sample_with_logp(
    dist: Any, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(actions, log-probs): the distribution's own `sample_with_logp` where it has one,
    else `sample` then `logp` (any class with those two works, as in RLlib)."""
    own = getattr(dist, "sample_with_logp", None)
    if own is not None:
        return own(generator)
    actions = dist.sample(generator)
    return actions, dist.logp(actions)
