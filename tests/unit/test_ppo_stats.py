"""PPO's approx_kl and clip_fraction (the statistics CleanRL and SB3 users read first), checked
against a hand computation on a batch whose probability ratios are chosen."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tunerl import PPOConfig
from tunerl.algorithms.ppo import PPOLearner, ppo_loss
from tunerl.core import columns as c
from tunerl.core import metrics as m
from tunerl.core.rl_module import MultiRLModule
from tunerl.core.sample_batch import SampleBatch

# new/old probability ratios of the sampled actions; with clip_param 0.2, three of the eight
# (0.5, 1.3, 2.0) are outside [0.8, 1.2], none on its edge.
RATIOS = [0.5, 0.85, 0.95, 1.0, 1.05, 1.15, 1.3, 2.0]
CLIP_PARAM = 0.2


def hand_approx_kl(ratios: list[float]) -> float:
    return sum((r - 1) - math.log(r) for r in ratios) / len(ratios)


def hand_clip_fraction(ratios: list[float]) -> float:
    return sum(abs(r - 1) > CLIP_PARAM for r in ratios) / len(ratios)


def batch_with_ratios(module, ratios: list[float]) -> dict[str, torch.Tensor]:
    """A batch whose stored log-probabilities make new/old ratio equal `ratios` under
    `module` (the old logp is the module's logp minus log ratio)."""
    generator = torch.Generator().manual_seed(0)
    num_rows = len(ratios)
    obs = torch.rand((num_rows, 3), generator=generator) * 2 - 1
    actions = torch.arange(num_rows) % 2
    with torch.no_grad():
        out = module.forward_train({c.OBS: obs})
        logp = module.get_action_dist_cls()(out[c.ACTION_DIST_INPUTS]).logp(actions)
    return {
        c.OBS: obs,
        c.ACTIONS: actions,
        c.ACTION_LOGP: logp - torch.log(torch.tensor(ratios)),
        c.ACTION_DIST_INPUTS: out[c.ACTION_DIST_INPUTS],
        c.VF_PREDS: out[c.VF_PREDS],
        c.ADVANTAGES: torch.linspace(-1.0, 1.0, num_rows),
        c.VALUE_TARGETS: torch.ones(num_rows),
    }


def test_approx_kl_and_clip_fraction_match_a_hand_computation(discrete_module):
    config = PPOConfig().training(clip_param=CLIP_PARAM)
    batch = batch_with_ratios(discrete_module, RATIOS)

    stats = ppo_loss(discrete_module, batch, config, kl_coeff=0.0).stats

    assert hand_clip_fraction(RATIOS) == 3 / 8
    assert float(stats[m.APPROX_KL]) == pytest.approx(hand_approx_kl(RATIOS), rel=1e-5)
    assert float(stats[m.CLIP_FRACTION]) == pytest.approx(3 / 8)


def test_approx_kl_is_zero_and_nothing_clipped_when_the_policy_has_not_moved(discrete_module):
    batch = batch_with_ratios(discrete_module, [1.0] * 8)
    stats = ppo_loss(discrete_module, batch, PPOConfig(), kl_coeff=0.0).stats
    assert float(stats[m.APPROX_KL]) == pytest.approx(0.0, abs=1e-6)
    assert float(stats[m.CLIP_FRACTION]) == 0.0


def test_learner_reports_them_averaged_over_the_minibatches(discrete_module):
    """Two minibatches of four rows in one epoch. The learning rate is so small that the
    policy does not move between them, so the mean over the two minibatches is the mean
    over the whole batch whichever rows each holds. The learner computes the advantages
    itself (GAE in `postprocess_batch`), so the batch is one terminated episode of eight
    steps; the ratios, and so both statistics, do not depend on the advantages."""
    config = PPOConfig().training(
        clip_param=CLIP_PARAM,
        lr=1e-30,
        num_epochs=1,
        minibatch_size=4,
        train_batch_size_per_learner=8,
        grad_clip=None,
    )
    module = MultiRLModule({c.DEFAULT_MODULE_ID: discrete_module})
    learner = PPOLearner(config, module, seed=0)
    tensors = batch_with_ratios(discrete_module, RATIOS)
    batch = SampleBatch({key: value.numpy() for key, value in tensors.items()})
    num_rows = len(RATIOS)
    batch[c.REWARDS] = np.ones(num_rows, np.float32)
    batch[c.TERMINATEDS] = np.arange(num_rows) == num_rows - 1
    batch[c.TRUNCATEDS] = np.zeros(num_rows, bool)
    batch[c.EPS_ID] = np.zeros(num_rows, np.int64)
    batch[c.T] = np.arange(num_rows)

    stats = learner.update(batch)[c.DEFAULT_MODULE_ID]

    assert stats[m.APPROX_KL] == pytest.approx(hand_approx_kl(RATIOS), rel=1e-5)
    assert stats[m.CLIP_FRACTION] == pytest.approx(3 / 8)


def test_train_reports_them_under_learners_default_policy(tiny_config, build):
    result = build(tiny_config(num_epochs=2)).train()
    stats = result[m.LEARNER_RESULTS][c.DEFAULT_MODULE_ID]
    # After the first minibatch the policy has moved: the KL is positive and finite, and
    # clip_fraction is a fraction.
    assert 0.0 < stats[m.APPROX_KL] < np.inf
    assert 0.0 <= stats[m.CLIP_FRACTION] <= 1.0
